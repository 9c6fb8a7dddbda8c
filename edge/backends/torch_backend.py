"""torch backend: a training checkpoint (.pt) run directly, sigmoid applied here.

For development machines; torch and :mod:`train` are imported only when this backend is chosen, so
the edge package runs without torch (ARCHITECTURE.md).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from edge.backends.base import BackendError, MissingRuntimeError, check_batch, chunks
from edge.metadata import ModelMetadata


def metadata_from_checkpoint(info: dict[str, Any], source: str) -> ModelMetadata:
    """ModelMetadata from a train/checkpoint.py dict (``model``, ``input``, ``threshold``, ``data``, ``commit``)."""
    model = info.get("model") or {}
    inp = info.get("input") or {}
    data = info.get("data") or {}
    try:
        return ModelMetadata(
            arch=str(model.get("arch", "aelf-unet")),
            width=int(model.get("width", 64)),
            head=str(model.get("head", "deep")),
            input_size=int(inp.get("size", 512)),
            color_order=str(inp.get("color_order", "RGB")),
            scale=float(inp.get("scale", 1.0 / 255.0)),
            mean=tuple(float(v) for v in inp.get("mean", (0.0, 0.0, 0.0))),  # type: ignore[arg-type]
            std=tuple(float(v) for v in inp.get("std", (1.0, 1.0, 1.0))),  # type: ignore[arg-type]
            threshold=float(info.get("threshold", 0.5)),
            precision="fp32",
            train_data=str(data.get("name", "unknown")),
            train_commit=str(info.get("commit", "unknown")),
            model_name=Path(source).stem,
        )
    except (TypeError, ValueError) as exc:
        raise BackendError(f"checkpoint {source}: cannot read its input contract ({exc})") from exc


class TorchBackend:
    """A :class:`train.model.UNet` from a checkpoint, in eval mode, returning sigmoid probabilities."""

    name = "torch"

    def __init__(
        self, path: str | os.PathLike, *, device: str = "cpu", batch_size: int = 4, intra_op_threads: int = 0
    ) -> None:
        try:
            import torch

            from train.checkpoint import load_model
        except ImportError as exc:
            raise MissingRuntimeError(
                "the torch backend needs PyTorch and this repository's train package: "
                "`pip install torch==2.13.0` then `pip install 'aelf-crack[train]'`; "
                "on a device without torch, export the checkpoint to ONNX (`python -m export.onnx`)"
            ) from exc
        self.path = Path(path)
        if not self.path.is_file():
            raise BackendError(f"checkpoint {self.path} does not exist")
        if intra_op_threads:
            torch.set_num_threads(intra_op_threads)
        self._torch = torch
        self.device = torch.device(device)
        try:
            self.model, info = load_model(self.path, self.device)
        except Exception as exc:  # CheckpointError, a corrupt file, a CUDA device that is not there
            raise BackendError(f"cannot load checkpoint {self.path} on {device}: {exc}") from exc
        self.metadata = metadata_from_checkpoint(info, str(self.path))
        size = self.metadata.input_size
        self._input_shape = (batch_size, 3, size, size)

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return self._input_shape

    @property
    def precision(self) -> str:
        return "fp32"

    def infer(self, batch: np.ndarray) -> np.ndarray:
        batch = check_batch(batch, self._input_shape, str(self.path))
        torch = self._torch
        outputs = []
        with torch.inference_mode():
            for part in chunks(batch.shape[0], self._input_shape[0]):
                x = torch.from_numpy(batch[part]).to(self.device)
                outputs.append(torch.sigmoid(self.model(x)).float().cpu().numpy())
        return np.concatenate(outputs).astype(np.float32, copy=False)

    def close(self) -> None:
        self.model = None
