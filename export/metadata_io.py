"""ONNX files and their model metadata: read, write, save atomically (no torch here).

Kept apart from :mod:`export.onnx` so that :mod:`calibration` (INT8, threshold) can rewrite the
metadata of an ONNX file without importing torch (``../shared/design/ARCHITECTURE.md``).
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx

from edge.metadata import ModelMetadata


def load_onnx(path: str | os.PathLike) -> onnx.ModelProto:
    """Load an ONNX file, with an error that names the file when it is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model {path} does not exist (export one with `python -m export.onnx`)")
    try:
        return onnx.load(str(path))
    except Exception as exc:  # protobuf raises DecodeError and others for a corrupt file
        raise ValueError(f"{path} is not a readable ONNX model: {exc}") from exc


def read_metadata(model: onnx.ModelProto | str | os.PathLike, source: str | None = None) -> ModelMetadata:
    """The :class:`ModelMetadata` stored in an ONNX model's ``metadata_props``."""
    if not isinstance(model, onnx.ModelProto):
        source = source or str(model)
        model = load_onnx(model)
    props = {p.key: p.value for p in model.metadata_props}
    return ModelMetadata.from_props(props, source=source or "ONNX model")


def write_metadata(model: onnx.ModelProto, meta: ModelMetadata) -> onnx.ModelProto:
    """Replace the model's ``metadata_props`` with ``meta`` (keys of other tools are kept)."""
    props = meta.to_props()
    keep = [(p.key, p.value) for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    for key, value in [*keep, *sorted(props.items())]:
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return model


def save_onnx_atomic(model: onnx.ModelProto, path: str | os.PathLike) -> Path:
    """Write ``model`` to ``path`` through a temporary file and a rename: never half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        onnx.save(model, str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


