"""Inference backends: TensorRT, onnxruntime, torch; each imports its runtime lazily.

``load_backend(path, backend="auto", flips=1, **options)`` picks the backend by name or, for ``auto``,
by the model file's extension: ``.engine``/``.plan`` -> tensorrt, ``.onnx`` -> onnxruntime,
``.pt``/``.pth`` -> torch; ``flips`` 2 or 4 averages each input's prediction over its mirrorings
(:mod:`contract.backends.flips`), whichever backend runs it.

The onnxruntime and TensorRT backends live here; the torch backend lives beside the network it
runs, in ``train.torch_backend``. :data:`IMPLEMENTATIONS` names each backend's module and class and
:func:`load_backend` imports only the chosen one, when it is chosen: the contract never imports
``train`` (or torch) itself, and a device without them gets a sentence naming what to install.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from contract.backends.base import Backend, BackendError, MissingRuntimeError
from contract.backends.flips import check_flips, with_flips

__all__ = ["Backend", "BackendError", "MissingRuntimeError", "BACKENDS", "backend_for_path", "load_backend"]

BACKENDS = ("tensorrt", "onnxruntime", "torch")
# backend -> (module, class), imported by load_backend only when that backend is chosen
IMPLEMENTATIONS = {
    "onnxruntime": ("contract.backends.ort", "OnnxRuntimeBackend"),
    "tensorrt": ("contract.backends.tensorrt", "TensorRTBackend"),
    "torch": ("train.torch_backend", "TorchBackend"),
}
TORCH_HINT = (
    "the torch backend needs PyTorch and this repository's train package: "
    "`pip install torch==2.13.0` then `pip install 'aelf-crack[train]'`; "
    "on a device without torch, export the checkpoint to ONNX (`python -m export.onnx`)"
)
_BY_SUFFIX = {".engine": "tensorrt", ".plan": "tensorrt", ".trt": "tensorrt", ".onnx": "onnxruntime",
              ".pt": "torch", ".pth": "torch"}

# Options each backend understands (load_backend drops the others, so one config serves all).
_OPTIONS = {
    "onnxruntime": ("providers", "batch_size", "intra_op_threads", "allow_spinning", "log_severity", "whole_images"),
    "tensorrt": ("batch_size", "device_index"),
    "torch": ("device", "batch_size", "intra_op_threads", "whole_images"),
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


def load_backend(model_path: str | os.PathLike, backend: str = "auto", *, flips: int = 1, **options: Any) -> Backend:
    """Load ``model_path`` with ``backend`` (auto|tensorrt|onnxruntime|torch), its predictions averaged
    over ``flips`` mirrorings of each input (1: none; :func:`contract.backends.flips.with_flips`).

    ``options`` (None values ignored): providers, batch_size, intra_op_threads, allow_spinning,
    log_severity, whole_images (onnxruntime); batch_size, device_index (tensorrt); device, batch_size,
    intra_op_threads, whole_images (torch).
    """
    if not str(model_path):
        raise BackendError("no model given: set model.path (or --model) to a .onnx, .engine or .pt file")
    check_flips(flips)  # before loading: a bad value is named without the cost of opening the model
    name = backend_for_path(model_path) if backend == "auto" else backend
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}: expected auto, {', '.join(BACKENDS)}")
    kwargs = {k: v for k, v in options.items() if v is not None and k in _OPTIONS[name]}
    module_name, class_name = IMPLEMENTATIONS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if name != "torch":
            raise
        raise MissingRuntimeError(TORCH_HINT) from exc
    return with_flips(getattr(module, class_name)(model_path, **kwargs), flips)
