"""TensorRT INT8 entropy calibrator fed with the runtime's tiles through pycuda device buffers.

TensorRT imports lazily: :func:`make_entropy_calibrator` defines the ``trt.IInt8EntropyCalibrator2``
subclass when called, so this module imports on machines without TensorRT (the cache helpers are
plain file I/O and are tested everywhere). When the cache file exists TensorRT reads it through
:meth:`read_calibration_cache` and never asks for a batch: a second build does not recalibrate and
does not even read the calibration images (the tiles come from a callable invoked on the first batch).

Unverified here: no GPU, TensorRT or pycuda on the development machine (docs/EXPORT.md).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np


def read_cache(path: str | os.PathLike) -> bytes | None:
    """The calibration cache's bytes, or None when there is none (TensorRT then calibrates)."""
    path = Path(path)
    return path.read_bytes() if path.is_file() and path.stat().st_size > 0 else None


def write_cache(path: str | os.PathLike, data: bytes) -> Path:
    """Write the calibration cache atomically (a crash mid-write must not leave a cache TensorRT trusts)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(bytes(data))
    os.replace(tmp, path)
    return path


def make_entropy_calibrator(tiles: Callable[[], np.ndarray] | np.ndarray, batch_size: int, cache_path: str | os.PathLike):
    """An ``IInt8EntropyCalibrator2`` over model-ready tiles (N x 3 x S x S float32), ``batch_size`` at a time."""
    try:
        import pycuda.autoinit  # noqa: F401  (a CUDA context for the device buffer)
        import pycuda.driver as cuda
        import tensorrt as trt
    except ImportError as exc:
        raise ImportError(
            f"TensorRT INT8 calibration needs tensorrt and pycuda ({exc.name} is missing): JetPack on Jetson; "
            "`pip install tensorrt pycuda` on x86 with CUDA (extra 'trt')"
        ) from exc

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)  # pybind11 trampolines need the explicit base call
            self.cache_path = Path(cache_path)
            self._tiles: np.ndarray | None = tiles if isinstance(tiles, np.ndarray) else None
            self._next = 0
            self._device = None

        def get_batch_size(self) -> int:
            return batch_size

        def get_batch(self, names: list[str]) -> list[int] | None:
            if self._tiles is None:
                self._tiles = np.ascontiguousarray(tiles(), dtype=np.float32)
            if self._next + batch_size > len(self._tiles):
                return None  # TensorRT stops calibrating; a partial batch would have the wrong shape
            batch = np.ascontiguousarray(self._tiles[self._next : self._next + batch_size], dtype=np.float32)
            if self._device is None:
                self._device = cuda.mem_alloc(batch.nbytes)
            cuda.memcpy_htod(self._device, batch)
            self._next += batch_size
            return [int(self._device)] * len(names)

        def read_calibration_cache(self) -> bytes | None:
            return read_cache(self.cache_path)

        def write_calibration_cache(self, cache) -> None:
            write_cache(self.cache_path, bytes(cache))

    return EntropyCalibrator()
