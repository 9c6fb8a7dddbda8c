"""Checkpoint file format: the model contract's first artefact (read by export and evaluate).

A checkpoint is a ``torch.save`` dict::

    format: "aelf-unet-checkpoint", format_version: 1
    model: ModelConfig dict (arch, width, head, in_channels)
    state_dict: model weights (always the bare model's, never DDP/compiled prefixes)
    input: {"color_order": "RGB", "scale": 1/255, "mean": [0,0,0], "std": [1,1,1], "size": 512}
    threshold: decision threshold on the probability (0.5 until calibrated on validation data)
    train_config: the full training configuration (flags) as a plain dict
    data: {"name": ..., "path": ..., "split": ...}
    commit: git commit of the code that trained it (or "unknown")
    epoch, metrics: epoch reached and validation metrics at save time
    optimizer, scaler, rng: only in resumable checkpoints (``last.pt``)
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import torch

from train.model import ModelConfig, UNet

FORMAT = "aelf-unet-checkpoint"
FORMAT_VERSION = 1
DEFAULT_INPUT = {"color_order": "RGB", "scale": 1.0 / 255.0, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable or not of this project's format."""


def git_commit(repo: str | os.PathLike | None = None) -> str:
    """The current git commit (with '-dirty' when the tree has changes), or 'unknown'."""
    cwd = Path(repo) if repo else Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The bare model behind DDP / torch.compile wrappers."""
    while True:
        if hasattr(model, "module"):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def save_checkpoint(
    path: str | os.PathLike,
    model: torch.nn.Module,
    *,
    size: int,
    threshold: float = 0.5,
    train_config: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
    epoch: int = 0,
    metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically (temp file + rename: a crash never leaves half a file)."""
    bare = unwrap(model)
    payload: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": bare.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in bare.state_dict().items()},
        "input": {**DEFAULT_INPUT, "size": int(size)},
        "threshold": float(threshold),
        "train_config": dict(train_config or {}),
        "data": dict(data or {}),
        "commit": git_commit(),
        "epoch": int(epoch),
        "metrics": dict(metrics or {}),
    }
    payload.update(extra or {})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load and validate a checkpoint dict (on the CPU)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.suffix.lower() in (".onnx", ".engine", ".plan"):
        raise CheckpointError(f"{path} is an exported model ({path.suffix}), not a checkpoint: pass the .pt file "
                              "written by `python -m train.run` (e.g. runs/<name>/best.pt)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for a corrupt file
        raise CheckpointError(f"checkpoint {path} could not be read: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an {FORMAT} file (written by `python -m train.run`)")
    if payload.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has format_version {payload['format_version']}; this code reads up to {FORMAT_VERSION}"
        )
    return payload


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[UNet, dict[str, Any]]:
    """Rebuild the network from a checkpoint; returns (model in eval mode, checkpoint dict)."""
    payload = read_checkpoint(path)
    model = UNet(ModelConfig.from_dict(payload["model"]))
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"weights in {path} do not fit the model {payload['model']}: {exc}") from exc
    return model.to(device).eval(), payload
