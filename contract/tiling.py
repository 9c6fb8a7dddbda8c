"""Tiling and stitching: any frame size to the model's square tiles and back (pure numpy).

A frame of H x W pixels is covered by square tiles of side ``tile`` that overlap their neighbours by
at least ``overlap`` pixels. Tiles start every ``tile - overlap`` pixels; the last tile of a row or
column is moved back so that it ends flush with the frame border (it then overlaps its neighbour by
more than ``overlap``). A frame side shorter than ``tile`` gets a single tile, zero padded.

Stitching blends the probabilities of overlapping tiles with a separable linear ramp window (see
:func:`blend_window`) and divides by the summed weights, so that

* a map cut into tiles and stitched back is reproduced exactly (every tile covering a pixel carries
  the same value, and the normalised weights sum to one);
* no seam appears: a tile's weight falls to almost zero at its edges, where the network sees the
  least context, and rises linearly to one over ``overlap`` pixels;
* padding never counts: only the part of a tile that lies inside the frame is accumulated.

Coordinates are (y, x) = (row, column) in frame pixels throughout, as numpy indexes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from contract.metadata import DEFAULT_TILE_PX


class TilingError(ValueError):
    """Bad tiling arguments or an array whose shape does not match the grid; the message says which."""


@dataclass(frozen=True)
class TileGrid:
    """Where the tiles of one frame size lie.

    ``origins[i] = (y, x)``: the top-left frame pixel of tile ``i``, row-major (all tiles of the
    first tile row, left to right, then the next row). Tiles are ``tile`` x ``tile`` pixels; the part
    of a tile beyond the frame (only when the frame is smaller than a tile) is zero padding.
    """

    height: int
    width: int
    tile: int
    overlap: int
    origins: list[tuple[int, int]]

    def __len__(self) -> int:
        return len(self.origins)

    @property
    def n_tiles(self) -> int:
        """Number of tiles (the batch size the backend sees for one frame)."""
        return len(self.origins)

    def valid_size(self, index: int) -> tuple[int, int]:
        """(rows, cols) of tile ``index`` that lie inside the frame; the rest is padding."""
        y, x = self.origins[index]
        return min(self.tile, self.height - y), min(self.tile, self.width - x)


def _axis_starts(length: int, tile: int, stride: int) -> list[int]:
    """Tile starts along one axis: every ``stride`` pixels, the last one flush with the border."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TilingError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise TilingError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def tile_grid(height: int, width: int, tile: int = DEFAULT_TILE_PX, overlap: int | None = None) -> TileGrid:
    """The tiles covering every pixel of a ``height`` x ``width`` frame (pixels).

    ``overlap`` (pixels, ``0 <= overlap < tile``; default :func:`default_overlap` of the tile) is the
    minimum overlap between neighbouring tiles; the last tile in each direction is flush with the
    border and may overlap more. A frame side shorter than ``tile`` gets one tile on that axis,
    padded by :func:`extract_tiles`.
    """
    height = _check_int("height", height, 1)
    width = _check_int("width", width, 1)
    tile = _check_int("tile", tile, 1)
    overlap = _check_int("overlap", default_overlap(tile) if overlap is None else overlap, 0)
    if overlap >= tile:
        raise TilingError(
            f"overlap ({overlap} px) must be smaller than the tile ({tile} px); a typical overlap is tile/8"
        )
    stride = tile - overlap
    ys = _axis_starts(height, tile, stride)
    xs = _axis_starts(width, tile, stride)
    return TileGrid(height, width, tile, overlap, [(y, x) for y in ys for x in xs])


def _check_frame(frame: np.ndarray, grid: TileGrid) -> None:
    if not isinstance(frame, np.ndarray) or frame.ndim not in (2, 3):
        shape = getattr(frame, "shape", None)
        raise TilingError(f"frame must be an H x W or H x W x C numpy array, got shape {shape}")
    if frame.shape[:2] != (grid.height, grid.width):
        raise TilingError(
            f"frame is {frame.shape[0]} x {frame.shape[1]} (H x W) but the grid was made for "
            f"{grid.height} x {grid.width}: call tile_grid() with the frame's size"
        )


def extract_tiles(frame: np.ndarray, grid: TileGrid) -> np.ndarray:
    """Cut ``frame`` (H x W x C, or H x W) into tiles N x tile x tile x C (or N x tile x tile).

    Same dtype as the frame. N = ``len(grid)``. Only a frame smaller than a tile leaves part of a
    tile uncovered; that part is filled with the frame mirrored at its bottom/right edge, not with
    black: networks trained on whole photographs read the step from image to black as a crack
    (measured with the demo model: a 318-px "crack" along the right edge of a 480x320 frame).
    ``stitch`` ignores the filled part either way.
    """
    _check_frame(frame, grid)
    t = grid.tile
    out = np.empty((len(grid), t, t, *frame.shape[2:]), dtype=frame.dtype)
    for i, (y, x) in enumerate(grid.origins):
        h, w = grid.valid_size(i)
        part = frame[y : y + h, x : x + w]
        if (h, w) == (t, t):
            out[i] = part
        else:
            widths = [(0, t - h), (0, t - w)] + [(0, 0)] * (frame.ndim - 2)
            out[i] = np.pad(part, widths, mode="symmetric")
    return out


def default_overlap(tile: int) -> int:
    """The overlap used wherever none is configured (daemon, evaluation, calibration): an eighth of
    the tile, at most 64 px (64 px at the usual 512 px tile)."""
    return min(64, tile // 8)


def blend_window(tile: int, overlap: int) -> np.ndarray:
    """1-D blending weights (float64, length ``tile``) of a tile: a linear ramp over ``overlap`` px.

    ``w[i] = (i + 0.5) / overlap`` for the first ``overlap`` pixels, mirrored at the other end, 1 in
    between; all ones when ``overlap`` is 0. Two tiles overlapping by exactly ``overlap`` pixels have
    weights summing to 1 across the overlap (a partition of unity); weights never reach 0, so a
    pixel covered by a single tile keeps its value after normalisation.
    """
    w = np.ones(tile, dtype=np.float64)
    ramp = min(overlap, tile // 2)
    if ramp > 0:
        up = (np.arange(ramp, dtype=np.float64) + 0.5) / ramp
        w[:ramp] = up
        w[tile - ramp :] = up[::-1]
    return w


@lru_cache(maxsize=4)  # 2 x 16 MB per 1080p size: bounded, and a daemon sees one size per source
def _stitch_weights(height: int, width: int, tile: int, overlap: int, origins: tuple[tuple[int, int], ...]):
    """(2-D tile window, 1 / summed window over the frame) for one grid; cached because frames repeat."""
    w1 = blend_window(tile, overlap)
    window = np.outer(w1, w1)
    total = np.zeros((height, width), dtype=np.float64)
    for y, x in origins:
        h, w = min(tile, height - y), min(tile, width - x)
        total[y : y + h, x : x + w] += window[:h, :w]
    inverse = 1.0 / total  # every pixel is covered by at least one tile with a positive weight
    window.flags.writeable = False
    inverse.flags.writeable = False
    return window, inverse


def stitch(probs: np.ndarray, grid: TileGrid) -> np.ndarray:
    """Blend tile probabilities (N x tile x tile or N x 1 x tile x tile) into one H x W float32 map.

    Overlaps are averaged with the :func:`blend_window` weights, normalised per pixel; the padded
    part of a tile is ignored. A map cut with :func:`extract_tiles` stitches back exactly.
    """
    probs = np.asarray(probs)
    if probs.ndim == 4 and probs.shape[1] == 1:
        probs = probs[:, 0]
    t = grid.tile
    if probs.ndim != 3 or probs.shape != (len(grid), t, t):
        raise TilingError(
            f"stitch expects {len(grid)} x {t} x {t} (or {len(grid)} x 1 x {t} x {t}) probabilities "
            f"for this grid, got shape {probs.shape}"
        )
    window, inverse = _stitch_weights(grid.height, grid.width, t, grid.overlap, tuple(grid.origins))
    acc = np.zeros((grid.height, grid.width), dtype=np.float64)
    for i, (y, x) in enumerate(grid.origins):
        h, w = grid.valid_size(i)
        acc[y : y + h, x : x + w] += probs[i, :h, :w] * window[:h, :w]
    acc *= inverse
    return acc.astype(np.float32)


def resize_to_gsd(
    frame: np.ndarray, gsd_mm_per_px: float, target_gsd_mm_per_px: float
) -> tuple[np.ndarray, float]:
    """Resize ``frame`` so one pixel covers about ``target_gsd_mm_per_px`` millimetres of surface.

    Returns ``(resized frame, effective GSD in mm/px)``; the effective GSD differs slightly from the
    target because the new size is rounded to whole pixels (it is computed from the width ratio).
    Shrinking uses area averaging (no aliasing of thin cracks), enlarging bilinear interpolation.
    Use it when the model was trained at a ground sampling distance different from the camera's.
    """
    for name, value in (("gsd_mm_per_px", gsd_mm_per_px), ("target_gsd_mm_per_px", target_gsd_mm_per_px)):
        if not (isinstance(value, (int, float)) and np.isfinite(value) and value > 0):
            raise TilingError(f"{name} must be a positive number of millimetres per pixel, got {value!r}")
    if not isinstance(frame, np.ndarray) or frame.ndim not in (2, 3) or 0 in frame.shape[:2]:
        raise TilingError(f"frame must be a non-empty H x W or H x W x C array, got shape {getattr(frame, 'shape', None)}")
    height, width = frame.shape[:2]
    factor = gsd_mm_per_px / target_gsd_mm_per_px
    new_w = max(1, round(width * factor))
    new_h = max(1, round(height * factor))
    if (new_h, new_w) == (height, width):
        return frame, float(gsd_mm_per_px)
    interpolation = cv2.INTER_AREA if factor < 1.0 else cv2.INTER_LINEAR
    resized = cv2.resize(frame, (new_w, new_h), interpolation=interpolation)
    return resized, float(gsd_mm_per_px * width / new_w)
