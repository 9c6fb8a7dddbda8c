"""``python -m train.weight_average``: a model whose weights lie between a base model and its fine-tune.

``w = (1 - alpha) * w_base + alpha * w_tuned``, every tensor of the state dict (the network has no batch
statistics, so nothing needs re-estimating). This is weight-space ensembling of a fine-tuned model with the
model it started from (WiSE-FT: Wortsman et al., "Robust fine-tuning of zero-shot models", CVPR 2022): for a
fine-tune that learned something new (joints, mined false positives) but forgot part of what the base did well
(the inside of wide cracks), a point between the two often keeps most of both, and costs nothing at inference.
It only makes sense when the tuned model was trained *from* the base (``train.run --init``): two unrelated
networks of the same shape average into noise.

The output is an ordinary checkpoint (the tuned model's metadata and training record, with the new weights
and ``weight_average: {base, tuned, alpha}``): export, calibrate and evaluate it as any ``best.pt``. Pick
``alpha`` on validation (``train.evaluate --split val``), never on the test split.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from train.checkpoint import CheckpointError, git_commit, initial_weights, read_checkpoint, write_payload
from train.model import ModelConfig, UNet


def interpolate_state(base: Mapping[str, torch.Tensor], tuned: Mapping[str, torch.Tensor],
                      alpha: float) -> dict[str, torch.Tensor]:
    """``(1 - alpha) * base + alpha * tuned`` for every tensor; the two must hold the same names and shapes.

    ``alpha`` 0 is the base, 1 the tuned model; values outside [0, 1] (extrapolation) are refused.
    Integer tensors (none in this network) must be equal in both and are copied.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1] (0 = base, 1 = tuned), got {alpha}")
    only_base, only_tuned = sorted(set(base) - set(tuned)), sorted(set(tuned) - set(base))
    if only_base or only_tuned:
        name, side = (only_base[0], "base") if only_base else (only_tuned[0], "tuned")
        raise ValueError(f"the two models hold different tensors: {name!r} is only in the {side} model "
                         "(average two models of the same width and head)")
    out: dict[str, torch.Tensor] = {}
    for name, t in tuned.items():
        b = base[name]
        if tuple(b.shape) != tuple(t.shape):
            raise ValueError(f"tensor {name!r} has shape {tuple(b.shape)} in the base model and {tuple(t.shape)} "
                             "in the tuned one (average two models of the same width and head)")
        if t.is_floating_point():
            out[name] = torch.lerp(b.to(t.dtype), t, alpha)
        elif torch.equal(b, t):
            out[name] = t.clone()
        else:
            raise ValueError(f"integer tensor {name!r} differs between the two models; it cannot be averaged")
    return out


def base_state(path: str | os.PathLike, config: Mapping[str, Any], seed: int = 0) -> dict[str, torch.Tensor]:
    """The weights of ``path`` (a ``.pt`` checkpoint or an exported ``.onnx``) as a model of ``config``.

    A base narrower than ``config`` is widened as ``train.run --init`` widened it (:mod:`train.widen`) with
    ``seed``, the tuned run's ``--seed``: the same random shares, so the two average channel by channel."""
    model = UNet(ModelConfig.from_dict(dict(config)))
    try:
        initial_weights(path, model, seed=seed)
    except CheckpointError as exc:  # its message speaks of train.run's --init/--width; say what fits here
        message = str(exc).replace("--init", "--base").replace("this model", "the tuned model").replace(
            "pass the --width and --head it was trained with", "average a fine-tune with the model it started from")
        raise CheckpointError(message) from exc
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def average_checkpoints(base: str | os.PathLike, tuned: str | os.PathLike, alpha: float) -> dict[str, Any]:
    """The checkpoint payload of the averaged model (the tuned checkpoint's record with new weights)."""
    payload = read_checkpoint(tuned)
    seed = int((payload.get("train_config") or {}).get("seed", 0))
    payload["state_dict"] = interpolate_state(base_state(base, payload["model"], seed), payload["state_dict"], alpha)
    for key in ("optimizer", "scaler", "rng"):  # a resumable last.pt's state belongs to the tuned run alone
        payload.pop(key, None)
    payload["weight_average"] = {"base": str(base), "tuned": str(tuned), "alpha": float(alpha)}
    payload["commit"] = git_commit()
    return payload


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m train.weight_average",
        description="Write a checkpoint whose weights are (1 - alpha) x base + alpha x tuned: a fine-tuned model "
        "pulled back toward the model it started from (weight-space ensembling, WiSE-FT).",
        epilog="Example: python -m train.weight_average --base edge/assets/demo_model.onnx --tuned runs/ft/best.pt "
        "--alpha 0.7 --out runs/ft/avg0.7.pt; then export.onnx, calibration.threshold and train.evaluate --split val "
        "as for any best.pt. Choose alpha on validation.",
    )
    parser.add_argument("--base", required=True, type=Path,
                        help="the model the fine-tune started from (.pt checkpoint or exported .onnx)")
    parser.add_argument("--tuned", required=True, type=Path,
                        help="the fine-tuned checkpoint (.pt from train.run --init <base>); its metadata is kept")
    parser.add_argument("--alpha", required=True, type=float, help="weight of the tuned model, 0..1 (0 = base, 1 = tuned)")
    parser.add_argument("--out", required=True, type=Path, help="checkpoint to write (.pt, atomically)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0.0 <= args.alpha <= 1.0:
        parser.error(f"--alpha must be in [0, 1] (0 = base, 1 = tuned), got {args.alpha}")
    if args.out.suffix != ".pt":
        parser.error(f"--out {args.out}: expected a .pt file (a checkpoint; export it with python -m export.onnx)")
    try:
        payload = average_checkpoints(args.base, args.tuned, args.alpha)
    except (CheckpointError, ValueError) as exc:
        print(f"train.weight_average: error: {exc}", file=sys.stderr)
        return 1
    path = write_payload(payload, args.out)
    print(f"wrote {path}: {1 - args.alpha:g} x {args.base} + {args.alpha:g} x {args.tuned} "
          f"({len(payload['state_dict'])} tensors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
