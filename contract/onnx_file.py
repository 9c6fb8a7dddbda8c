"""ONNX files and their model metadata: read, write, save atomically (no torch here).

``export`` writes the metadata, ``calibration`` rewrites it (INT8 precision, chosen threshold);
neither needs torch for it. The ``onnx`` package is imported only when a function here runs: the
edge daemon reads metadata through its runtime's session instead and need not install ``onnx``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from contract.metadata import ModelMetadata

if TYPE_CHECKING:
    import onnx

# onnxruntime 1.17, the oldest the package's extras allow, reads IR versions up to 9 (ONNX 1.15); newer
# onnx packages stamp their own, newer IR on every model they build (onnx 1.23: IR 14, which
# onnxruntime 1.30 refuses). Every file written here carries the IR of its opset instead.
OLDEST_RUNTIME_MAX_IR = 9

ONNX_HINT = "reading or writing ONNX files needs the onnx package: pip install 'aelf-crack[export]'"


def _onnx():
    try:
        import onnx
    except ImportError as exc:
        raise ImportError(ONNX_HINT) from exc
    return onnx


def load_onnx(path: str | os.PathLike) -> onnx.ModelProto:
    """Load an ONNX file, with an error that names the file when it is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model {path} does not exist (export one with `python -m export.onnx`)")
    onnx_lib = _onnx()
    try:
        return onnx_lib.load(str(path))
    except Exception as exc:  # protobuf raises DecodeError and others for a corrupt file
        raise ValueError(f"{path} is not a readable ONNX model: {exc}") from exc


def read_metadata(model: onnx.ModelProto | str | os.PathLike, source: str | None = None) -> ModelMetadata:
    """The :class:`ModelMetadata` stored in an ONNX model's ``metadata_props``."""
    if isinstance(model, (str, os.PathLike)):
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


def ir_version_of_opset(opset: int) -> int:
    """The IR version of the ONNX release that introduced default-domain ``opset`` (17 -> 8)."""
    table = _onnx().helper.VERSION_TABLE  # (release, IR version, ai.onnx opset, ai.onnx.ml opset, ...)
    known = [row[1] for row in table if row[2] == opset]
    if not known:
        raise ValueError(f"ONNX opset {opset} is not in this onnx package's version table "
                         f"(it knows {table[0][2]} to {table[-1][2]})")
    return min(known)


def pin_ir_version(model: onnx.ModelProto) -> onnx.ModelProto:
    """Lower ``model.ir_version`` to the IR of its default-domain opset, so that every onnxruntime
    and TensorRT parser that reads the opset reads the file (the graph uses nothing newer)."""
    opsets = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    if opsets:
        model.ir_version = min(model.ir_version, ir_version_of_opset(max(opsets)))
    return model


def save_onnx_atomic(model: onnx.ModelProto, path: str | os.PathLike) -> Path:
    """Write ``model`` to ``path`` through a temporary file and a rename: never half a file.

    Its IR version is pinned to its opset's first (:func:`pin_ir_version`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    onnx_lib = _onnx()
    pin_ir_version(model)
    try:
        onnx_lib.save(model, str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
