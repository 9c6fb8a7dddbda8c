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

from contract.metadata import DEFAULT_THRESHOLD, DEFAULT_TILE_PX, MetadataError, ModelMetadata, threshold_key
from train.model import ModelConfig, UNet
from train.widen import state_width, widen_state_dict

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
    threshold: float = DEFAULT_THRESHOLD,
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
    return write_payload(payload, path)


def write_payload(payload: dict[str, Any], path: str | os.PathLike) -> Path:
    """``torch.save`` a checkpoint dict atomically (temp file + rename: a crash never leaves half a file)."""
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


def initial_weights(path: str | os.PathLike, model: torch.nn.Module, *, seed: int = 0) -> str | None:
    """Load the weights of a ``.pt`` checkpoint or an exported ``.onnx`` model into ``model`` (same shape,
    or a whole multiple of the model's width: then widened by :func:`train.widen.widen_state_dict` with
    ``seed``, and the returned line says so; otherwise None).

    ONNX initializers carry the module names of the exported wrapper (``unet.`` + the UNet's own);
    a name or shape that does not fit is an error naming the first mismatch, never a silent partial load.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"--init {path} does not exist (expected a .pt checkpoint or an .onnx model)")
    if path.suffix == ".onnx":
        import onnx
        from onnx import numpy_helper

        graph = onnx.load(str(path)).graph
        weights = {}
        for init in graph.initializer:
            name = init.name[len("unet."):] if init.name.startswith("unet.") else init.name
            weights[name] = torch.from_numpy(numpy_helper.to_array(init).copy())
    else:
        weights = read_checkpoint(path)["state_dict"]
    own = unwrap(model).state_dict()
    note = None
    if "encoder.0.0.weight" in weights and "encoder.0.0.weight" in own:
        have, want = state_width(weights), state_width(own)
        if want != have and want % have == 0:
            weights = widen_state_dict({k: v for k, v in weights.items() if k in own}, want, seed=seed)
            note = (f"--init {path}: width {have} widened to {want} (Net2WiderNet: each channel repeated "
                    f"{want // have} times, same output to float rounding)")
    missing = [k for k in own if k not in weights]
    wrong = [k for k in own if k in weights and tuple(weights[k].shape) != tuple(own[k].shape)]
    if missing or wrong:
        what = (f"has no {missing[0]!r}" if missing else
                f"has {wrong[0]!r} of shape {tuple(weights[wrong[0]].shape)}, the model needs {tuple(own[wrong[0]].shape)}")
        raise CheckpointError(f"--init {path} does not fit this model (width/head): it {what}; "
                              "pass the --width and --head it was trained with")
    unwrap(model).load_state_dict({k: weights[k] for k in own})
    return note


def metadata_from_checkpoint(
    checkpoint: dict[str, Any],
    *,
    threshold: float | None = None,
    size: int | None = None,
    extra: dict[str, str] | None = None,
    model_name: str | None = None,
) -> ModelMetadata:
    """The model contract (:class:`ModelMetadata`) of a checkpoint dict: what export writes into the
    ONNX file and what the torch backend reports. ``threshold``/``size`` override the stored ones;
    a value of the wrong type raises :class:`CheckpointError` naming it."""
    model, inp, data = checkpoint.get("model") or {}, checkpoint.get("input") or {}, checkpoint.get("data") or {}
    train_data = str(data.get("name") or "unknown")
    if data.get("split"):
        train_data += f" ({data['split']})"
    try:
        # thresholds validated at several mirrored passes (train.run --eval-flips): the keys calibration writes
        flips = checkpoint.get("flip_thresholds") or {}
        flip_extra = {threshold_key(int(n)): f"{float(t):g}" for n, t in flips.items()}
        return ModelMetadata(
            arch=str(model.get("arch", "aelf-unet")),
            width=int(model.get("width", 64)),
            head=str(model.get("head", "deep")),
            input_size=int(size or inp.get("size", DEFAULT_TILE_PX)),
            color_order=str(inp.get("color_order", "RGB")),
            scale=float(inp.get("scale", 1.0 / 255.0)),
            mean=tuple(float(v) for v in inp.get("mean", (0.0, 0.0, 0.0))),  # type: ignore[arg-type]
            std=tuple(float(v) for v in inp.get("std", (1.0, 1.0, 1.0))),  # type: ignore[arg-type]
            threshold=float(threshold if threshold is not None else checkpoint.get("threshold", DEFAULT_THRESHOLD)),
            precision="fp32",
            train_data=train_data,
            train_commit=str(checkpoint.get("commit", "unknown")),
            model_name=model_name or ModelMetadata.model_name,
            extra={**flip_extra, **(extra or {})},
        )
    except (TypeError, ValueError) as exc:  # MetadataError is a ValueError
        kind = "metadata" if isinstance(exc, MetadataError) else "input contract"
        raise CheckpointError(f"checkpoint: cannot read its {kind} ({exc})") from exc
