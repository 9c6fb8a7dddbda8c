"""Cracks drawn for tests the way real cracks run: crooked, not straight.

The daemon drops pieces made of long straight lines as joints (``measure.straight_min_length_px``,
120 px by default), so a test crack drawn with ``cv2.line`` longer than that is, rightly, no crack.
:func:`crack_path` is a seeded zig-zag from one end to the other, :func:`draw_crack` draws it with an
exact width, and :func:`path_length` gives the centre-line length a measurement should find. No onnx
or torch here: the measurement tests import this without the export extra.
"""

from __future__ import annotations

import math

import cv2
import numpy as np


def crack_path(p0: tuple[float, float], p1: tuple[float, float], *, seed: int = 0, step_px: float = 16.0,
               wander_px: float = 4.0) -> np.ndarray:
    """Vertices (N x 2 int32, x y) of a crooked crack from ``p0`` to ``p1`` (x, y pixels), ends exact.

    A zig-zag about the chord, crooked at every scale as real cracks are: a vertex about every
    ``step_px`` (+-25 %, seeded) alternately left and right by 60-100 % of ``wander_px``, plus the same
    zig-zag 4x longer and 2x wider, and so on while it fits twice into the chord. Its straight share at
    120 px (edge.measure.straight_share) is 0, drawn 1-9 px wide, at full size and downscaled 2x and 3x
    (checked for chords of 130-500 px at 0-80 degrees). Its centre line is 2-7 % longer than the chord.
    """
    rng = np.random.default_rng(seed)
    (x0, y0), (x1, y1) = p0, p1
    chord = math.hypot(x1 - x0, y1 - y0)
    n = max(1, round(chord / step_px))
    along = (np.arange(n + 1) + np.r_[0.0, rng.uniform(-0.25, 0.25, n - 1), 0.0]) / n  # 0..1 along the chord
    side = np.zeros(n + 1)  # pixels left (-) or right (+) of the chord
    octave = 0
    while (corners := round(chord / (step_px * 4**octave))) >= 2:
        offset = np.where(np.arange(corners + 1) % 2 == 0, 1.0, -1.0) * rng.uniform(0.6, 1.0, corners + 1)
        offset[0] = offset[-1] = 0.0
        side += np.interp(along, np.arange(corners + 1) / corners, offset * wander_px * 2**octave)
        octave += 1
    ux, uy = (x1 - x0) / max(chord, 1e-9), (y1 - y0) / max(chord, 1e-9)
    xs = x0 + along * (x1 - x0) - side * uy
    ys = y0 + along * (y1 - y0) + side * ux
    return np.round(np.stack([xs, ys], axis=1)).astype(np.int32)


def path_length(path: np.ndarray) -> float:
    """Length of the polyline ``path`` (N x 2, x y), pixels: the drawn crack's centre-line length."""
    return float(np.hypot(*np.diff(path.astype(np.float64), axis=0).T).sum())


def draw_crack(canvas: np.ndarray, p0: tuple[float, float], p1: tuple[float, float], *, width_px: float = 3,
               value: float | tuple = 0.9, seed: int = 0, step_px: float = 16.0, wander_px: float = 4.0) -> np.ndarray:
    """Draw a :func:`crack_path` crack into ``canvas`` (H x W probability map or H x W x 3 image) in place;
    returns its path.

    Every pixel whose centre lies within ``width_px / 2`` of the path (rasterised 8-connected) gets
    ``value``, so the crack is exactly ``width_px`` wide (1 = a 1-px 8-connected line); ``cv2.line``
    with thickness t >= 2 draws t + 2 px.
    """
    path = crack_path(p0, p1, seed=seed, step_px=step_px, wander_px=wander_px)
    off_line = np.full(canvas.shape[:2], 255, np.uint8)
    cv2.polylines(off_line, [path.reshape(-1, 1, 2)], False, 0, 1)
    distance = cv2.distanceTransform(off_line, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    canvas[distance <= width_px / 2] = value
    return path
