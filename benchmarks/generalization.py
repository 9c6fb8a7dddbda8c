"""Generalization measures on masks (pure numpy/OpenCV): recall by crack width, crack-free and crack tiles.

Used by ``benchmarks/bench_generalization.py``; nothing here reads files or imports the edge package.

Local crack width, width bins and recall by width live in ``contract/widths.py`` (re-exported here).

**Tiles**: :func:`crack_free_tiles` cuts squares whose pixels all lie at least ``margin_px`` away from
every labelled crack pixel (labels are a few pixels imprecise at a crack's edge and tips), for the rate
at which a crack-free surface raises an alert. The public crack sets hold small crops (133-240 px) in
which nearly every crop holds a crack, so a 512 x 512 crack-free tile rarely exists: the side used for
an image is the largest square that fits in its crack-free region, capped at ``tile``; images whose
largest crack-free square is under ``min_side_px`` give no tile. Callers must report the side the
rates were measured at (:func:`side_summary`). :func:`crack_tiles` cuts non-overlapping squares of side
``min(tile, H, W)`` that hold at least ``min_crack_px`` crack pixels.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import cv2
import numpy as np

from contract.metadata import DEFAULT_TILE_PX
from contract.metrics import disc  # the tolerance kernel of the metrics
from contract.widths import (  # noqa: F401 - re-exported: the benchmarks' and tests' names
    DEFAULT_WIDTH_EDGES_PX,
    WidthRecall,
    _as_bool_mask,
    recall_by_width,
    width_bin_labels,
    width_bins_of_mask,
    width_map,
)

# ----------------------------------------------------------------------------- tiles


@dataclass(frozen=True)
class Tile:
    """A square cut of an image: top-left ``(y, x)``, ``side`` in pixels, and the pixels (a view)."""

    y: int
    x: int
    side: int
    image: np.ndarray = field(repr=False)

    def cut(self, array: np.ndarray) -> np.ndarray:
        """The same square of another array of the image's size (e.g. its mask)."""
        return array[self.y : self.y + self.side, self.x : self.x + self.side]


def _check_image_mask(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    crack = _as_bool_mask(mask)
    if np.asarray(image).shape[:2] != crack.shape:
        raise ValueError(f"image shape {np.asarray(image).shape} does not match mask shape {crack.shape}")
    return crack


def _window_sums(blocked: np.ndarray, side: int) -> np.ndarray:
    """Blocked pixels in every ``side`` x ``side`` window; entry [y, x] is the window at top-left (y, x)."""
    integral = cv2.integral(blocked.astype(np.uint8), sdepth=cv2.CV_32S)
    return (integral[side:, side:] - integral[:-side, side:] - integral[side:, :-side] + integral[:-side, :-side])


def largest_free_square(blocked: np.ndarray) -> int:
    """Side in pixels of the largest axis-aligned square holding no ``True`` pixel of ``blocked``."""
    blocked = _as_bool_mask(blocked, "blocked")
    low, high = 0, min(blocked.shape)
    while low < high:  # free squares of side s exist => they exist for every smaller side
        mid = (low + high + 1) // 2
        if (_window_sums(blocked, mid) == 0).any():
            low = mid
        else:
            high = mid - 1
    return low


def _greedy_squares(free: np.ndarray, side: int) -> list[tuple[int, int]]:
    """Top-left corners of non-overlapping squares, first free corner in raster order first.

    ``free[y, x]``: a square with top-left corner (y, x) is allowed. Each pick rules out the corners
    whose square would overlap it.
    """
    free = free.copy()
    chosen: list[tuple[int, int]] = []
    while free.any():
        y, x = divmod(int(np.argmax(free)), free.shape[1])
        chosen.append((y, x))
        free[max(0, y - side + 1) : y + side, max(0, x - side + 1) : x + side] = False
    return chosen


def crack_free_tiles(
    image: np.ndarray, mask: np.ndarray, tile: int = DEFAULT_TILE_PX, margin_px: int = 8, min_side_px: int = 64,
) -> list[Tile]:
    """Non-overlapping squares of ``image`` that hold no crack pixel within ``margin_px`` of them.

    The side is the largest crack-free square of this image, capped at ``tile`` (see the module
    docstring); no tile when that is under ``min_side_px``. Squares are taken greedily, the first
    free position in raster order first, so a crack-free image of 2 x 2 tiles gives four tiles.
    """
    crack = _check_image_mask(image, mask)
    if tile < 1 or min_side_px < 1 or margin_px < 0:
        raise ValueError(f"tile ({tile}) and min_side_px ({min_side_px}) must be >= 1, margin_px ({margin_px}) >= 0")
    blocked = crack
    if margin_px:
        blocked = cv2.dilate(crack.astype(np.uint8), disc(int(margin_px))) > 0
    side = min(int(tile), largest_free_square(blocked))
    if side < min_side_px:
        return []
    free = _window_sums(blocked, side) == 0
    corners = _greedy_squares(free, side)
    return [Tile(y, x, side, image[y : y + side, x : x + side]) for y, x in corners]


def _axis_starts(length: int, side: int) -> list[int]:
    starts = list(range(0, length - side + 1, side))
    if starts[-1] + side < length:
        starts.append(length - side)  # the last square flush with the far edge (it overlaps its neighbour)
    return starts


def crack_tiles(image: np.ndarray, mask: np.ndarray, tile: int = DEFAULT_TILE_PX, min_crack_px: int = 64) -> list[Tile]:
    """Squares of side ``min(tile, H, W)`` on a grid covering the image that hold >= ``min_crack_px`` crack pixels.

    The grid steps by the side; a last row/column sits flush with the far edge, so it may overlap
    its neighbour when the image is not a multiple of the side.
    """
    crack = _check_image_mask(image, mask)
    if tile < 1 or min_crack_px < 1:
        raise ValueError(f"tile ({tile}) and min_crack_px ({min_crack_px}) must be >= 1")
    height, width = crack.shape
    side = min(int(tile), height, width)
    tiles = []
    for y in _axis_starts(height, side):
        for x in _axis_starts(width, side):
            if int(np.count_nonzero(crack[y : y + side, x : x + side])) >= min_crack_px:
                tiles.append(Tile(y, x, side, image[y : y + side, x : x + side]))
    return tiles


def side_summary(sides: Iterable[int]) -> str:
    """``"N tiles, side median M px (min A, max B)"``, or ``"no tiles"``: how a rate's tiles were sized."""
    sides = sorted(int(s) for s in sides)
    if not sides:
        return "no tiles"
    median = sides[len(sides) // 2] if len(sides) % 2 else (sides[len(sides) // 2 - 1] + sides[len(sides) // 2]) / 2
    return f"{len(sides)} tiles, side median {median:g} px (min {sides[0]}, max {sides[-1]})"
