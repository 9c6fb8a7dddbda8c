"""Inference backends: TensorRT, onnxruntime, torch; each imports its runtime lazily.

``load_backend(path, backend="auto", **options)`` picks the backend by name or, for ``auto``, by the
model file's extension: ``.engine``/``.plan`` -> tensorrt, ``.onnx`` -> onnxruntime, ``.pt``/``.pth``
-> torch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from edge.backends.base import Backend, BackendError, MissingRuntimeError

__all__ = ["Backend", "BackendError", "MissingRuntimeError", "BACKENDS", "backend_for_path", "load_backend"]

BACKENDS = ("tensorrt", "onnxruntime", "torch")
_BY_SUFFIX = {".engine": "tensorrt", ".plan": "tensorrt", ".trt": "tensorrt", ".onnx": "onnxruntime",
              ".pt": "torch", ".pth": "torch"}

# Options each backend understands (load_backend drops the others, so one config serves all).
_OPTIONS = {
    "onnxruntime": ("providers", "batch_size", "intra_op_threads", "allow_spinning"),
    "tensorrt": ("batch_size", "device_index"),
    "torch": ("device", "batch_size", "intra_op_threads"),
}


def backend_for_path(path: str | os.PathLike) -> str:
    """The backend name ``auto`` picks for a model file, or BackendError naming the known extensions."""
    suffix = Path(path).suffix.lower()
    if suffix not in _BY_SUFFIX:
        raise BackendError(
            f"cannot pick a backend for {path}: expected one of {', '.join(sorted(_BY_SUFFIX))} "
            "(or set model.backend explicitly)"
        )
    return _BY_SUFFIX[suffix]


def load_backend(model_path: str | os.PathLike, backend: str = "auto", **options: Any) -> Backend:
    """Load ``model_path`` with ``backend`` (auto|tensorrt|onnxruntime|torch).

    ``options`` (None values ignored): providers, batch_size, intra_op_threads, allow_spinning (onnxruntime);
    batch_size, device_index (tensorrt); device, batch_size, intra_op_threads (torch).
    """
    if not str(model_path):
        raise BackendError("no model given: set model.path (or --model) to a .onnx, .engine or .pt file")
    name = backend_for_path(model_path) if backend == "auto" else backend
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}: expected auto, {', '.join(BACKENDS)}")
    kwargs = {k: v for k, v in options.items() if v is not None and k in _OPTIONS[name]}
    if name == "onnxruntime":
        from edge.backends.ort import OnnxRuntimeBackend

        return OnnxRuntimeBackend(model_path, **kwargs)
    if name == "tensorrt":
        from edge.backends.tensorrt import TensorRTBackend

        return TensorRTBackend(model_path, **kwargs)
    from edge.backends.torch_backend import TorchBackend

    return TorchBackend(model_path, **kwargs)
