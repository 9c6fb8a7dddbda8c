"""The paper's U-Net (Liu et al. 2022, eqs. 1-4) with the shallow or the deep prediction head.

Encoder: 5 stages of two 3x3 conv + ReLU ("same" padding), 2x2 max-pool between stages.
Decoder: nearest-neighbour x2 upsampling, concatenation with the encoder stage of the same
resolution, two 3x3 conv + ReLU. Channels ``width * (1, 2, 4, 8, 16)``; ``width=64`` is the paper.
The network returns logits; :func:`probabilities` applies the sigmoid the paper puts at the end.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from contract.metadata import SIDE_MULTIPLE

HeadKind = Literal["deep", "shallow"]
STAGES = 5  # four max-pools between them: the contract's SIDE_MULTIPLE, 2**4


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the network; stored in every checkpoint."""

    width: int = 64
    head: HeadKind = "deep"
    in_channels: int = 3
    arch: str = "aelf-unet"

    def __post_init__(self) -> None:
        if self.head not in ("deep", "shallow"):
            raise ValueError(f"model head must be 'deep' or 'shallow', got {self.head!r}")
        if self.width < 1:
            raise ValueError(f"model width must be a positive number of channels, got {self.width}")
        if self.in_channels < 1:
            raise ValueError(f"model in_channels must be positive, got {self.in_channels}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        known = {k: data[k] for k in ("width", "head", "in_channels", "arch") if k in data}
        return cls(**known)


def double_conv(in_ch: int, out_ch: int) -> nn.Sequential:
    """conv(.) of eq. (1): two 3x3 convolutions with ReLU, 'same' padding."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_ch, out_ch, 3, padding=1),
        nn.ReLU(inplace=True),
    )


def deep_head(in_ch: int, width: int) -> nn.Sequential:
    """The paper's deep prediction head: 3x3 convs (64, 64, 64, 2) with ReLU, then a 1x1 conv to 1.

    The three 64-channel convolutions scale with ``width`` (64 at the paper's width)."""
    return nn.Sequential(
        nn.Conv2d(in_ch, width, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(width, width, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(width, width, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(width, 2, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(2, 1, 1),
    )


class UNet(nn.Module):
    """5-stage U-Net, nearest upsampling, shallow or deep head. Input N x C x H x W with H, W % 16 == 0."""

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config or ModelConfig()
        w = self.config.width
        channels = [w * 2**i for i in range(STAGES)]  # 64, 128, 256, 512, 1024 at the paper's width
        self.channels = channels
        self.encoder = nn.ModuleList()
        prev = self.config.in_channels
        for ch in channels:
            self.encoder.append(double_conv(prev, ch))
            prev = ch
        # decoder stage l (l = 4..1) fuses encoder stage l with the upsampled decoder stage l+1
        self.decoder = nn.ModuleList(
            double_conv(channels[i] + channels[i + 1], channels[i]) for i in reversed(range(STAGES - 1))
        )
        self.head = deep_head(channels[0], w) if self.config.head == "deep" else nn.Conv2d(channels[0], 1, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He-normal initialisation, as the paper (Keras ``he_normal``: fan-in, ReLU gain)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return crack logits, N x 1 x H x W."""
        check_input_shape(tuple(x.shape), self.config.in_channels)
        skips = []
        for i, stage in enumerate(self.encoder):
            x = stage(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for stage in self.decoder:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = stage(torch.cat([skips.pop(), x], dim=1))
        return self.head(x)


def check_input_shape(shape: tuple, in_channels: int = 3) -> None:
    """Raise a ValueError that says what is wrong with an input batch shape."""
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return
    if len(shape) != 4:
        raise ValueError(f"model input must be N x {in_channels} x H x W, got shape {shape}")
    _, c, h, w = shape
    if c != in_channels:
        raise ValueError(f"model input must have {in_channels} channels, got {c} (shape {shape})")
    if h % SIDE_MULTIPLE or w % SIDE_MULTIPLE or h == 0 or w == 0:
        raise ValueError(
            f"model input sides must be positive multiples of {SIDE_MULTIPLE}, got {h}x{w}; "
            "pad the image (train.data.pad_to_multiple) or tile it"
        )


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Crack probability in (0, 1) from the network's logits (the paper's final sigmoid)."""
    return torch.sigmoid(logits)


def build_model(width: int = 64, head: HeadKind = "deep", in_channels: int = 3) -> UNet:
    """Build the U-Net; ``width=64, head='deep'`` is the paper's network."""
    return UNet(ModelConfig(width=width, head=head, in_channels=in_channels))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
