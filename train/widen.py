"""Widen a trained U-Net by a whole factor without changing what it computes (Net2WiderNet).

Chen, Goodfellow & Shlens 2016, "Net2Net: accelerating learning via knowledge transfer", §2.1: every
channel of a layer is repeated ``factor`` times, and the next layer reads each copy with a share of
the original weight so that the copies' shares add up to it. The wider network starts from the
narrow one's function (same output, to float rounding) and fine-tunes from there, instead of
learning from He-normal noise what the narrow one already knows.

The shares are random (each in about 0.2-0.8 of the weight at factor 2), not equal: copies read
with equal shares get equal gradients and would stay copies for good, and the wider network would
be the narrow one. With random shares the copies compute the same at the start and drift apart
with the first step.

Pure: a state dict in, a state dict out (the :class:`train.model.UNet` layout). No BatchNorm to
carry: the network has none.
"""

from __future__ import annotations

import torch

from train.model import STAGES

__all__ = ["WidenError", "state_width", "widen_state_dict"]


class WidenError(ValueError):
    """The weights cannot be widened to the width asked for."""


def state_width(state: dict[str, torch.Tensor]) -> int:
    """The ``width`` (channels of the first stage) of a U-Net state dict."""
    try:
        return int(state["encoder.0.0.weight"].shape[0])
    except KeyError as exc:
        raise WidenError("weights have no 'encoder.0.0.weight': not the weights of this project's U-Net") from exc


def _repeat_out(weight: torch.Tensor, bias: torch.Tensor, factor: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Repeat every output channel ``factor`` times: new channel ``j`` is old channel ``j % out``."""
    return weight.repeat(factor, *([1] * (weight.dim() - 1))), bias.repeat(factor)


def _split_in(weight: torch.Tensor, groups: list[int], factor: int, generator: torch.Generator) -> torch.Tensor:
    """Widen the input channels: each group of ``groups`` (a concatenation's parts, in order) is
    repeated ``factor`` times, and the copies of one input channel share its weight at random
    (per output channel and tap; the shares of one weight add up to 1)."""
    if sum(groups) != weight.shape[1]:
        raise WidenError(f"input channels {weight.shape[1]} are not the parts {groups} this layer should read")
    parts, start = [], 0
    for size in groups:
        old = weight[:, start:start + size]
        start += size
        raw = torch.rand((factor, *old.shape), generator=generator, dtype=old.dtype) + 0.5  # 0.5-1.5
        shares = raw / raw.sum(dim=0, keepdim=True)
        parts.append(torch.cat([old * shares[k] for k in range(factor)], dim=1))
    return torch.cat(parts, dim=1)


def widen_state_dict(state: dict[str, torch.Tensor], width: int, *, seed: int = 0) -> dict[str, torch.Tensor]:
    """The state dict of a U-Net ``width`` wide that computes what ``state`` computes.

    ``width`` must be a whole multiple of the weights' own width. The deep head's 2-channel layer
    and the 1x1 output keep their channels (the paper's head); only their inputs widen.
    """
    own = state_width(state)
    if width % own or width < own:
        raise WidenError(f"can widen width {own} only to a whole multiple of it (32, 48, ... for 16), not to {width}")
    factor = width // own
    if factor == 1:
        return {k: v.detach().clone() for k, v in state.items()}
    generator = torch.Generator().manual_seed(seed)
    channels = [own * 2**i for i in range(STAGES)]
    out: dict[str, torch.Tensor] = {}

    def conv(name: str, in_groups: list[int] | None, widen_out: bool = True) -> None:
        weight, bias = state[f"{name}.weight"], state[f"{name}.bias"]
        if in_groups is not None:
            weight = _split_in(weight, in_groups, factor, generator)
        weight, bias = _repeat_out(weight, bias, factor) if widen_out else (weight, bias.clone())
        out[f"{name}.weight"], out[f"{name}.bias"] = weight, bias

    for i, ch in enumerate(channels):
        conv(f"encoder.{i}.0", None if i == 0 else [channels[i - 1]])
        conv(f"encoder.{i}.2", [ch])
    for j, i in enumerate(reversed(range(STAGES - 1))):  # decoder j fuses encoder stage i with stage i + 1
        conv(f"decoder.{j}.0", [channels[i], channels[i + 1]])
        conv(f"decoder.{j}.2", [channels[i]])
    if "head.0.weight" in state:  # deep head: width, width, width, 2, then 1x1 to 1
        conv("head.0", [channels[0]])
        conv("head.2", [own])
        conv("head.4", [own])
        conv("head.6", [own], widen_out=False)
        out["head.8.weight"], out["head.8.bias"] = state["head.8.weight"].clone(), state["head.8.bias"].clone()
    elif "head.weight" in state:  # shallow head: one 1x1 conv to 1
        conv("head", [channels[0]], widen_out=False)
    else:
        raise WidenError("weights have neither a deep head ('head.0.weight') nor a shallow one ('head.weight')")
    extra = sorted(set(state) - set(out))
    if extra:
        raise WidenError(f"weights hold {extra[0]!r}, which this U-Net has no place for")
    return out
