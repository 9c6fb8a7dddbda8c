"""The backend protocol: a model file in, ``infer(N×3×H×W float32) -> N×1×H×W`` probabilities out.

Every backend reports the model's :class:`contract.metadata.ModelMetadata` (read from the model file,
never guessed), ``input_shape`` = (max_batch, 3, H, W), ``precision`` and ``any_size``: whether
``infer`` also takes whole images of any H x W that divide by 16, not only H x W tiles (where the
network allows it and the caller asked for it when loading; the daemon never does). ``infer``
accepts any batch size from 1 up; larger batches than ``max_batch`` are split into runtime calls.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from contract.metadata import SIDE_MULTIPLE, ModelMetadata

EDGE_EXTRA = "pip install 'aelf-crack[edge]'"


class BackendError(RuntimeError):
    """A model cannot be loaded or run; the message names the file or the shape and what would fix it."""


class MissingRuntimeError(BackendError, ImportError):
    """The runtime a backend needs is not installed; the message names the package to install."""


@runtime_checkable
class Backend(Protocol):
    """What the pipeline needs from an inference runtime."""

    name: str
    metadata: ModelMetadata
    any_size: bool  # True: infer() also takes N x 3 x H' x W' with H', W' multiples of SIDE_MULTIPLE

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """(max_batch, 3, H, W): tiles per call and the tile size the model takes."""
        ...

    @property
    def precision(self) -> str:
        """fp32 | fp16 | int8."""
        ...

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities N×1×H×W float32 in (0, 1) for a float32 batch N×3×H×W."""
        ...

    def close(self) -> None:
        """Release the runtime's resources (GPU memory, sessions)."""
        ...


class BackendWrapper:
    """Base of a backend that wraps another (``inner``) and changes only ``infer``: it reports the inner
    backend's model, input shape and precision and closes it (flip averaging, recording passes)."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.name, self.metadata, self.any_size = inner.name, inner.metadata, inner.any_size

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return self.inner.input_shape

    @property
    def precision(self) -> str:
        return self.inner.precision

    def close(self) -> None:
        self.inner.close()


def check_batch(
    batch: np.ndarray, input_shape: tuple[int, int, int, int], model: str, any_size: bool = False
) -> np.ndarray:
    """The batch as a C-contiguous float32 N×3×H×W array, or a BackendError naming both shapes.

    With ``any_size`` every H×W that divides by :data:`SIDE_MULTIPLE` is accepted, not only the tile.
    """
    _, channels, height, width = input_shape
    if (
        any_size
        and isinstance(batch, np.ndarray)
        and batch.ndim == 4
        and batch.shape[1] == channels
        and batch.shape[2] % SIDE_MULTIPLE == 0
        and batch.shape[3] % SIDE_MULTIPLE == 0
        and min(batch.shape[2:]) > 0
    ):
        height, width = batch.shape[2:]
    if not isinstance(batch, np.ndarray) or batch.ndim != 4 or batch.shape[1:] != (channels, height, width):
        raise BackendError(
            f"{model} takes float32 N×{channels}×{height}×{width} (tiles of {height}×{width}), "
            f"got shape {getattr(batch, 'shape', type(batch).__name__)}: set tiling.tile to the model's input size"
        )
    if batch.shape[0] == 0:
        raise BackendError(f"{model}: empty batch (N = 0)")
    return np.ascontiguousarray(batch, dtype=np.float32)


def chunks(n: int, size: int) -> list[slice]:
    """Slices of at most ``size`` covering range(n)."""
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]
