"""Tiles from OpenCV (BGR uint8, N x H x W x 3) to the model's input (float32 N x 3 x H x W).

The model's metadata says how it was trained: colour order, ``scale`` and per-channel ``mean``/``std``
with ``x = (pixel * scale - mean) / std`` (RGB in [0, 1] by default). The runtime reads these from
:class:`contract.metadata.ModelMetadata`; it never guesses.
"""

from __future__ import annotations

import numpy as np

from contract.metadata import ModelMetadata


class PreprocessError(ValueError):
    """Tiles of the wrong shape or type for the model; the message names the shape expected."""


def channel_affine(meta: ModelMetadata) -> tuple[np.ndarray, np.ndarray]:
    """Per model channel ``(a, b)`` (float32, length 3) with ``x = pixel * a + b``.

    Folds scale, mean and std into one multiply-add: ``a = scale / std``, ``b = -mean / std``.
    """
    std = np.asarray(meta.std, dtype=np.float64)
    if np.any(std == 0):
        raise PreprocessError(f"model metadata 'std' must not contain 0, got {meta.std}")
    a = meta.scale / std
    b = -np.asarray(meta.mean, dtype=np.float64) / std
    return a.astype(np.float32), b.astype(np.float32)


def to_model_input(tiles_bgr_uint8: np.ndarray, meta: ModelMetadata) -> np.ndarray:
    """Model input float32 N x 3 x H x W (C-contiguous) from BGR tiles N x H x W x 3.

    Channel ``c`` of the output takes BGR channel ``2 - c`` when ``meta.color_order == "RGB"``
    (OpenCV frames are BGR) and channel ``c`` when it is ``"BGR"``; values become
    ``(pixel * meta.scale - meta.mean[c]) / meta.std[c]``. One pass per channel, written straight
    into the output (no intermediate float copy of the whole batch). A single tile H x W x 3 is
    accepted and returned as 1 x 3 x H x W.
    """
    tiles = np.asarray(tiles_bgr_uint8)
    if tiles.ndim == 3:
        tiles = tiles[None]
    if tiles.ndim != 4 or tiles.shape[-1] != 3:
        raise PreprocessError(
            f"tiles must be N x H x W x 3 (BGR, as from contract.tiling.extract_tiles), got shape {tiles.shape}"
        )
    if tiles.dtype != np.uint8 and not np.issubdtype(tiles.dtype, np.floating):
        raise PreprocessError(f"tiles must be uint8 (or float) pixels, got dtype {tiles.dtype}")
    a, b = channel_affine(meta)
    n, h, w, _ = tiles.shape
    out = np.empty((n, 3, h, w), dtype=np.float32)
    for c in range(3):
        src = 2 - c if meta.color_order == "RGB" else c
        dst = out[:, c]
        np.multiply(tiles[..., src], a[c], out=dst, dtype=np.float32, casting="unsafe")
        if b[c] != 0.0:
            dst += b[c]
    return out
