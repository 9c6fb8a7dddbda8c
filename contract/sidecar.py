"""The JSON sidecar beside a TensorRT engine, and the check that an engine fits this device (stdlib only).

A serialized TensorRT engine only runs on the TensorRT version and the GPU model it was built with.
The sidecar ``<engine>.json`` records both (plus the model metadata and how it was built); the edge
runtime's TensorRT backend calls :func:`check_engine_compat` before deserializing, so a mismatch is
a sentence saying what to rebuild, not a crash inside ``deserialize_cuda_engine``. No torch and no
tensorrt import here: the edge runtime imports this module on devices that have neither torch nor
(when the check fails) a matching TensorRT. ``export.trt`` writes it and the TensorRT backend
checks it: one copy in the contract that both import.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from contract.backends.base import BackendError

SIDECAR_VERSION = 1
REQUIRED_KEYS = ("tensorrt_version", "gpu_name", "precision", "metadata")


class EngineCompatError(BackendError):
    """An engine was built for another TensorRT version or GPU, or its sidecar is missing/malformed."""


def sidecar_path(engine: str | os.PathLike) -> Path:
    """``model.engine`` -> ``model.engine.json``."""
    engine = Path(engine)
    return engine.with_name(engine.name + ".json")


def write_sidecar(engine: str | os.PathLike, sidecar: dict[str, Any]) -> Path:
    """Write the sidecar beside ``engine`` atomically."""
    path = sidecar_path(engine)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"sidecar_version": SIDECAR_VERSION, **sidecar}, indent=2, sort_keys=True))
    os.replace(tmp, path)
    return path


def read_sidecar(engine: str | os.PathLike) -> dict[str, Any]:
    """The sidecar of ``engine``; raises :class:`EngineCompatError` naming the file when absent or broken."""
    path = sidecar_path(engine)
    if not path.is_file():
        raise EngineCompatError(
            f"engine sidecar {path} is missing: the runtime cannot tell which TensorRT/GPU {Path(engine).name} "
            "was built for; rebuild it with `python -m export.trt`"
        )
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise EngineCompatError(f"engine sidecar {path} is not valid JSON: {exc}") from exc
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise EngineCompatError(f"engine sidecar {path} lacks {', '.join(missing)}; rebuild it with `python -m export.trt`")
    return data


def _norm(name: str) -> str:
    return " ".join(str(name).split()).casefold()


def check_engine_compat(sidecar: dict[str, Any], trt_version: str, gpu_name: str) -> None:
    """Raise :class:`EngineCompatError` unless the engine was built with ``trt_version`` for ``gpu_name``.

    TensorRT engines are tied to the exact TensorRT release and to the GPU model (its compute
    capability and SM count decide the tactics), so both must match exactly; GPU names are compared
    ignoring case and repeated spaces.
    """
    missing = [k for k in ("tensorrt_version", "gpu_name") if k not in sidecar]
    if missing:
        raise EngineCompatError(f"engine sidecar lacks {', '.join(missing)}; rebuild the engine with `python -m export.trt`")
    built_trt, built_gpu = str(sidecar["tensorrt_version"]), str(sidecar["gpu_name"])
    problems = []
    if built_trt != str(trt_version):
        problems.append(f"TensorRT {built_trt} (this device has {trt_version})")
    if _norm(built_gpu) != _norm(gpu_name):
        problems.append(f"GPU {built_gpu!r} (this device has {gpu_name!r})")
    if problems:
        onnx = sidecar.get("onnx_path", "model.onnx")
        precision = sidecar.get("precision", "fp16")
        raise EngineCompatError(
            "this TensorRT engine was built for " + " and ".join(problems) + "; engines do not move between "
            f"TensorRT versions or GPU models: rebuild it on this device with "
            f"`python -m export.trt --onnx {onnx} --out <engine> --precision {precision}`"
        )
