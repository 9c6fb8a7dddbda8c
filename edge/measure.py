"""Crack measurement: probability map -> binary mask -> one record per connected crack (pure).

Definitions (all in frame pixels; millimetres = pixels x ``gsd_mm_per_px`` when a ground sampling
distance is configured):

* **mask**: ``prob >= threshold`` (the model's decision threshold, as in ``contract/metrics.py``), then
  optional morphological closing/opening, then removal of components smaller than ``min_area_px``.
* **crack**: one 8-connected component of the mask (``cv2.connectedComponentsWithStats``): a crack
  is a thin line, and a 1-pixel diagonal line is only 8-connected. Three optional steps make a count
  of cracks mean what an inspector means (on by default, :class:`MaskCleanup`): components made of
  long straight lines are dropped (joints, saw cuts, grout and formwork lines: :func:`drop_straight`;
  with them joint grids whose short sides are square to their long lines, e.g. brick bonds, and smooth,
  constant-width curves: cables, pipes, kerbs),
  components whose skeleton is shorter than ``min_length_px`` are dropped (texture specks: a speck
  has a blob's area but hardly any length), then the remaining components less than
  ``link_gap_px`` apart are one crack (a crack that the model sees as a broken line): its box,
  area and length are those of all its fragments (the gaps are not counted), its width their
  maximum. On the bundled demo image ``deepcrack_test_IMG_6516-2.jpg`` the shipped model's 45
  components become 10 cracks with the daemon's defaults (40 px, 30 px; the whole frame predicted
  at once through the daemon's tiler, threshold 0.44).
* **bbox**: ``(x, y, w, h)`` of the component, pixels; **area_px**: its pixel count.
* **length**: length of the component's skeleton (scikit-image ``skeletonize``, Zhang's thinning),
  walked as a pixel chain: a horizontal or vertical step counts 1, a diagonal step sqrt(2) (the
  distance between the two pixel centres), and each change of direction subtracts
  :data:`CORNER_CORRECTION_PX`. Plain 1/sqrt(2) counting is exact at 0, 45 and 90 degrees but
  overestimates lines in between by up to 8.2 % (at ~22.5 degrees a chain zig-zags); the corner term
  (Vossepoel & Smeulders, CGIP 1982, refitted so axis and diagonal lines stay exact) brings the error
  on straight lines to between -0.8 % and +2.3 % at every angle. A diagonal step is not counted
  where the two pixels are also joined through a common 4-neighbour (the L-shaped corners thinning
  leaves), so no step is counted twice. It is the centre-line length: a crack drawn with round
  ends measures its centre line, tip-to-tip minus about its width.
* **width**: from the Euclidean distance transform ``d`` of the mask (distance from a crack pixel's
  centre to the nearest background pixel's centre), sampled on the skeleton (the crack's centre
  line): ``width = 2 d - 1``. On a band of odd width w the centre pixel has d = (w + 1) / 2, so the
  width is exact; an even width w reads w - 1; a 45-degree line may read up to ~0.5 px wider (pixel
  centres are sqrt(2)/2 apart across it). ``d`` is taken as the maximum within the skeleton pixel's
  3 x 3 neighbourhood: on oblique cracks thinning leaves the centre line up to a pixel off the
  distance ridge, which would read a 3-px crack as ~2 px. Calibrated on drawn lines 1, 3, 5, 9 px
  wide at 0, 45, ~18 and ~80 degrees: within +-1 px (tests/test_measure.py).
  **max_width** is the maximum over the skeleton, **mean_width** the mean.
* **mean_probability**: mean model probability over the component's pixels.
* **coverage**: crack pixels / frame pixels (after clean-up), in [0, 1].
* **severity**: per crack from :class:`SeverityRules`; the frame's severity is the highest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from edge.severity import MaskCleanup, SeverityRules, severity_rank

SQRT2 = math.sqrt(2.0)
# Subtracted per change of direction of the skeleton chain. Fitted over all digital straight lines
# with slopes p/q, q < 40: max relative length error +2.3 % / -0.8 % (0 %, not 0.8 %, at 0/45/90 deg).
CORNER_CORRECTION_PX = 0.1
# Straight-structure check (drop_straight): a skeleton pixel is "on a line" within this many pixels of
# a Hough segment; a segment may bridge gaps up to STRAIGHT_MAX_GAP_PX and needs votes from at least
# STRAIGHT_VOTES x its minimum length in pixels (a 45-degree line of length L has L / sqrt(2) pixels).
STRAIGHT_TOLERANCE_PX = 1
STRAIGHT_MAX_GAP_PX = 3
STRAIGHT_VOTES = 0.35
# Joint grids and bonds: on a component with straight segments of the check's length, shorter segments (at least
# MaskCleanup.straight_grid_segment_px) count as line too when parallel or perpendicular to one of them within
# GRID_ANGLE_DEG (a brick bond's head joints between its bed joints, a tile grid's short sides).
GRID_ANGLE_DEG = 4.0
# Smooth-line part of the check (smooth_share): a skeleton pixel is "on a smooth line" when the skeleton
# pixels in the (2 r + 1)^2 window around it lie along one line, their spread across its direction (a
# standard deviation) at most the tolerance: true along straight lines and gentle curves (a cable's sag,
# a kerb's arc; within a window a curve of radius R bends about r^2 / (2 R) px off its chord, 0.75 px at
# R = 150 px), false at a crack's kinks and forks. Only pieces of constant width count (width standard deviation at most
# SMOOTH_MAX_WIDTH_STD_PX along the centre line: cables and pipes, not the widening cracks that some
# data sets label with smooth outlines).
SMOOTH_RADIUS_PX = 15
SMOOTH_MAX_WIDTH_STD_PX = 1.0


_CLEANUP = MaskCleanup()


class MeasureError(ValueError):
    """Bad input to the measurement (shape, threshold, GSD, rules); the message names the argument."""


@dataclass(frozen=True)
class Crack:
    """One connected crack. Pixel sizes always; ``*_mm`` only when the GSD is known (else None)."""

    label: int  # its value in FrameMeasurement.labels
    bbox: tuple[int, int, int, int]  # x, y, w, h in frame pixels
    area_px: int
    length_px: float
    max_width_px: float
    mean_width_px: float
    mean_probability: float
    severity: str
    centroid_xy: tuple[float, float]  # x, y in frame pixels
    length_mm: float | None = None
    max_width_mm: float | None = None
    mean_width_mm: float | None = None

    def to_dict(self) -> dict:
        """The crack as in the alert schema (``cracks[]`` item): JSON-ready, rounded to 0.01."""
        out: dict = {
            "bbox": [int(v) for v in self.bbox],
            "area_px": int(self.area_px),
            "length_px": round(float(self.length_px), 2),
            "max_width_px": round(float(self.max_width_px), 2),
            "mean_width_px": round(float(self.mean_width_px), 2),
            "mean_probability": round(min(1.0, max(0.0, float(self.mean_probability))), 4),
            "severity": self.severity,
        }
        if self.length_mm is not None:
            out["length_mm"] = round(float(self.length_mm), 2)
            out["max_width_mm"] = round(float(self.max_width_mm), 2)
            out["mean_width_mm"] = round(float(self.mean_width_mm), 2)
        return out


@dataclass(frozen=True)
class FrameMeasurement:
    """All cracks of one frame, most severe first (then longest)."""

    height: int
    width: int
    threshold: float
    gsd_mm_per_px: float | None
    cracks: tuple[Crack, ...]
    coverage: float  # crack pixels / frame pixels, after clean-up
    mask: np.ndarray = field(repr=False)  # H x W bool, cleaned
    labels: np.ndarray = field(repr=False)  # H x W int32, 0 = background, Crack.label otherwise
    skeleton: np.ndarray = field(repr=False)  # H x W bool

    @property
    def severity(self) -> str | None:
        """The highest severity among the cracks; None when there is no crack."""
        if not self.cracks:
            return None
        return max((c.severity for c in self.cracks), key=severity_rank)


def _skeletonize(mask: np.ndarray) -> np.ndarray:
    try:
        from skimage.morphology import skeletonize
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "crack length needs scikit-image (skeletonize): pip install 'aelf-crack[edge]' or scikit-image"
        ) from exc
    return skeletonize(mask)


# 8-neighbour offsets (dy, dx) and their bit in the neighbourhood code.
_OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1))
# For each diagonal neighbour bit: the two 4-neighbour bits it shares with the centre pixel.
_DIAGONAL_SHARED = {0: (1, 7), 2: (1, 3), 4: (3, 5), 6: (5, 7)}


def _chain_tables() -> tuple[np.ndarray, np.ndarray]:
    """Per 8-neighbour code (256): half the chain length at that pixel, and 1 if it is a corner."""
    half_length = np.zeros(256, dtype=np.float64)
    corner = np.zeros(256, dtype=np.float64)
    for code in range(256):
        linked = []
        for bit, (dy, dx) in enumerate(_OFFSETS):
            if not code >> bit & 1:
                continue
            if bit in _DIAGONAL_SHARED and any(code >> s & 1 for s in _DIAGONAL_SHARED[bit]):
                continue  # joined through a 4-neighbour already: the diagonal would double count
            linked.append((dy, dx))
        half_length[code] = 0.5 * sum(SQRT2 if dy and dx else 1.0 for dy, dx in linked)
        if len(linked) == 2:
            (ay, ax), (by, bx) = linked
            corner[code] = float((ay + by, ax + bx) != (0, 0))  # in and out steps differ
    return half_length, corner


_HALF_LENGTH, _CORNER = _chain_tables()


def _check_inputs(prob: np.ndarray, threshold: float, min_area_px: int, gsd_mm_per_px: float | None) -> None:
    if not isinstance(prob, np.ndarray) or prob.ndim != 2 or 0 in prob.shape:
        raise MeasureError(
            f"prob must be an H x W probability map (as from contract.tiling.stitch), got shape {getattr(prob, 'shape', None)}"
        )
    if not (isinstance(threshold, (int, float)) and 0.0 < threshold < 1.0):
        raise MeasureError(f"threshold must be in (0, 1) (the model's metadata threshold), got {threshold!r}")
    if isinstance(min_area_px, bool) or not isinstance(min_area_px, (int, np.integer)) or min_area_px < 1:
        raise MeasureError(f"min_area_px must be a whole number of pixels >= 1, got {min_area_px!r}")
    if gsd_mm_per_px is not None and not (
        isinstance(gsd_mm_per_px, (int, float)) and math.isfinite(gsd_mm_per_px) and gsd_mm_per_px > 0
    ):
        raise MeasureError(f"gsd_mm_per_px must be a positive number of millimetres per pixel or None, got {gsd_mm_per_px!r}")


def binary_mask(prob: np.ndarray, threshold: float, *, open_px: int = 0, close_px: int = 0) -> np.ndarray:
    """``prob >= threshold`` as uint8 0/1, closed then opened with an elliptical kernel of that size.

    ``close_px`` (pixels, 0 = off) joins fragments separated by gaps narrower than it; ``open_px``
    (0 = off) removes specks and spurs narrower than it, and also erases cracks thinner than it, so
    keep it below the thinnest crack you need. Both are off by default: on a 1-px diagonal crack a
    closing fills the staircase and doubles the measured width.
    """
    mask = (prob >= threshold).astype(np.uint8)
    for size, op in ((close_px, cv2.MORPH_CLOSE), (open_px, cv2.MORPH_OPEN)):
        if size:
            kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (int(size), int(size)))
            mask = cv2.morphologyEx(mask, op, kernel)
    return mask


@dataclass(frozen=True)
class _Components:
    """The mask's pieces: ``labels`` (H x W int32, 0 = background) numbered 1..n-1, and ``n``.

    ``stats`` / ``centroids``: OpenCV's per-label box, area and centroid (row = label) while the
    labels are still OpenCV's components; None once pieces are dropped or linked (then recomputed).
    """

    labels: np.ndarray
    n: int
    stats: np.ndarray | None = None
    centroids: np.ndarray | None = None


def label_components(mask: np.ndarray, min_area_px: int) -> _Components:
    """8-connected components of ``mask`` with at least ``min_area_px`` pixels, renumbered 1..n-1."""
    n, labels, stats, centroids = cv2.connectedComponentsWithStats(mask, connectivity=8, ltype=cv2.CV_32S)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_area_px
    keep[0] = False
    if keep[1:].all():
        return _Components(labels, n, stats, centroids)
    kept = _renumber(labels, keep)
    rows = np.concatenate([[0], np.flatnonzero(keep)])
    return _Components(kept.labels, kept.n, stats[rows], centroids[rows])


def _renumber(labels: np.ndarray, keep: np.ndarray) -> _Components:
    """Labels with ``keep[label]`` renumbered 1.., the others set to background."""
    lut = np.zeros(keep.size, dtype=np.int32)
    lut[np.flatnonzero(keep)] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return _Components(lut[labels], int(keep.sum()) + 1)


@dataclass(frozen=True)
class _SkeletonSamples:
    """Per skeleton pixel: its row/column, its share of the chain length and its width (pixels)."""

    skeleton: np.ndarray  # H x W bool
    ys: np.ndarray
    xs: np.ndarray
    step_length: np.ndarray
    width: np.ndarray


def sample_skeleton(mask: np.ndarray) -> _SkeletonSamples:
    """Skeleton of ``mask`` with each pixel's length share and width (definitions in the module docstring)."""
    skeleton = _skeletonize(mask.astype(bool))
    distance = cv2.distanceTransform(mask, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    sy, sx = np.nonzero(skeleton)
    padded = np.pad(skeleton, 1).astype(np.uint8)
    padded_distance = np.pad(distance, 1)
    code = np.zeros(sy.size, dtype=np.intp)
    ridge = distance[sy, sx].copy()
    for bit, (dy, dx) in enumerate(_OFFSETS):
        code |= padded[sy + 1 + dy, sx + 1 + dx].astype(np.intp) << bit
        np.maximum(ridge, padded_distance[sy + 1 + dy, sx + 1 + dx], out=ridge)
    step = _HALF_LENGTH[code] - CORNER_CORRECTION_PX * _CORNER[code]
    return _SkeletonSamples(skeleton, sy, sx, step, 2.0 * ridge.astype(np.float64) - 1.0)


def _lengths(components: _Components, samples: _SkeletonSamples) -> np.ndarray:
    label = components.labels[samples.ys, samples.xs]
    return np.maximum(np.bincount(label, weights=samples.step_length, minlength=components.n), 0.0)


def drop_short(components: _Components, samples: _SkeletonSamples, min_length_px: float) -> _Components:
    """Components whose skeleton is shorter than ``min_length_px`` removed (texture specks, not cracks)."""
    if min_length_px <= 0 or components.n <= 1:
        return components
    keep = _lengths(components, samples) >= min_length_px
    keep[0] = False
    return components if keep[1:].all() else _renumber(components.labels, keep)


def _hough_segments(thick: np.ndarray, min_length_px: float) -> np.ndarray:
    """Straight segments (N x 4: x1, y1, x2, y2) at least ``min_length_px`` long in a thickened skeleton."""
    segments = cv2.HoughLinesP(thick, rho=1.0, theta=math.pi / 360,
                               threshold=max(2, int(STRAIGHT_VOTES * min_length_px)),
                               minLineLength=float(min_length_px), maxLineGap=float(STRAIGHT_MAX_GAP_PX))
    # (N, 1, 4) in OpenCV 4, (N, 4) in 5
    return np.zeros((0, 4), np.int64) if segments is None else np.asarray(segments).reshape(-1, 4).astype(np.int64)


def _segment_owners(segments: np.ndarray, near: np.ndarray) -> np.ndarray:
    """The component each segment runs along (0: none): the largest label met at 7 points along it in
    ``near``, the labels grown by 1 px (a segment of the thickened skeleton may run a pixel beside a
    1-px-wide mask)."""
    t = np.linspace(0.0, 1.0, 7)
    xs = np.rint(segments[:, [0]] + t * (segments[:, [2]] - segments[:, [0]])).astype(np.intp)
    ys = np.rint(segments[:, [1]] + t * (segments[:, [3]] - segments[:, [1]])).astype(np.intp)
    return near[np.clip(ys, 0, near.shape[0] - 1), np.clip(xs, 0, near.shape[1] - 1)].max(axis=1).astype(np.int64)


def _directions_deg(segments: np.ndarray) -> np.ndarray:
    return np.degrees(np.arctan2(segments[:, 3] - segments[:, 1], segments[:, 2] - segments[:, 0])) % 180.0


def _grid_segments(thick: np.ndarray, components: _Components, long_segments: np.ndarray,
                   segment_px: float) -> np.ndarray:
    """Segments of at least ``segment_px`` along a component that has long straight segments, parallel or
    perpendicular (within :data:`GRID_ANGLE_DEG`) to one of them: the short head joints of a brick bond
    between its long bed joints, a tile grid's short sides."""
    near = cv2.dilate(components.labels.astype(np.float32), np.ones((3, 3), np.uint8))  # exact below 2^24 labels
    owners = _segment_owners(long_segments, near)
    gridded = np.unique(owners[owners > 0])
    if gridded.size == 0:
        return np.zeros((0, 4), np.int64)
    short = _hough_segments(thick, segment_px)  # the whole skeleton: a joint's votes may span a gap
    if short.size == 0:
        return short
    short_owners = _segment_owners(short, near)
    angle, long_angle = _directions_deg(short), _directions_deg(long_segments)
    keep = np.zeros(len(short), dtype=bool)
    for k in gridded:
        mine = short_owners == k
        # angular distance (mod 90: parallel and perpendicular alike) to each of the component's long segments
        diff = np.abs((angle[mine, None] - long_angle[None, owners == k]) % 90.0)
        keep[mine] = (np.minimum(diff, 90.0 - diff) <= GRID_ANGLE_DEG).any(axis=1)
    return short[keep]


def straight_share(components: _Components, samples: _SkeletonSamples, min_length_px: float,
                   grid_segment_px: float = 0.0) -> np.ndarray:
    """Per component: the share of its skeleton length that lies on straight segments at least
    ``min_length_px`` long (probabilistic Hough transform of the skeleton, cv2.HoughLinesP: segments
    within :data:`STRAIGHT_TOLERANCE_PX` of a line, gaps up to :data:`STRAIGHT_MAX_GAP_PX`), or, when
    ``grid_segment_px`` > 0, on a component that has such segments, on segments at least that long
    parallel or perpendicular to them (:func:`_grid_segments`: joint grids and bonds)."""
    total = _lengths(components, samples)
    # the skeleton thickened to 3 px: OpenCV's segment walk checks single pixels and breaks a 1-px line
    # that is not exactly axis-aligned (a grid of 3 px joints 0.9 degrees off: 6 % found, 100 % thickened)
    thick = cv2.dilate(samples.skeleton.astype(np.uint8), np.ones((3, 3), np.uint8))
    segments = _hough_segments(thick, min_length_px)
    if segments.size == 0:
        return np.zeros(components.n)
    near = np.zeros(samples.skeleton.shape, np.uint8)
    if grid_segment_px > 0:
        segments = np.concatenate([segments, _grid_segments(thick, components, segments, grid_segment_px)])
    for x1, y1, x2, y2 in segments:
        cv2.line(near, (int(x1), int(y1)), (int(x2), int(y2)), 1, 2 * STRAIGHT_TOLERANCE_PX + 1)
    on_line = near[samples.ys, samples.xs].astype(np.float64)
    label = components.labels[samples.ys, samples.xs]
    straight = np.bincount(label, weights=samples.step_length * on_line, minlength=components.n)
    return straight / np.maximum(total, 1e-9)


def _local_line_spread(skeleton: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel: the spread (standard deviation, px) of the skeleton pixels in the (2 r + 1)^2 window
    around it across their principal direction, and how many there are (box sums of the coordinates'
    moments; the smaller eigenvalue of their covariance)."""
    s = skeleton.astype(np.float64)
    yy, xx = np.mgrid[0 : s.shape[0], 0 : s.shape[1]].astype(np.float64)
    size = (2 * radius + 1, 2 * radius + 1)

    def box(a: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(a, cv2.CV_64F, size, normalize=False, borderType=cv2.BORDER_CONSTANT)

    sx, sy = s * xx, s * yy
    n = box(s)
    m = np.maximum(n, 1.0)
    mx, my = box(sx) / m, box(sy) / m
    cxx = box(sx * xx) / m - mx * mx
    cyy = box(sy * yy) / m - my * my
    cxy = box(sx * yy) / m - mx * my
    smaller = (cxx + cyy) / 2.0 - np.sqrt(((cxx - cyy) / 2.0) ** 2 + cxy * cxy)
    return np.sqrt(np.maximum(smaller, 0.0)), n


def smooth_share(components: _Components, samples: _SkeletonSamples, min_length_px: float,
                 tolerance_px: float) -> np.ndarray:
    """Per component: the share of its skeleton length on smooth lines (straight or gently curved, within
    ``tolerance_px`` over every window of :data:`SMOOTH_RADIUS_PX`), for components at least
    ``min_length_px`` long whose width is constant (:data:`SMOOTH_MAX_WIDTH_STD_PX`); 0 for the others and
    when ``tolerance_px`` is 0. Deterministic: each pixel's answer depends only on its window."""
    share = np.zeros(components.n)
    if tolerance_px <= 0 or components.n <= 1 or samples.ys.size == 0:
        return share
    total = _lengths(components, samples)
    label = components.labels[samples.ys, samples.xs]
    count = np.maximum(np.bincount(label, minlength=components.n), 1)
    mean_width = np.bincount(label, weights=samples.width, minlength=components.n) / count
    width_var = np.bincount(label, weights=samples.width**2, minlength=components.n) / count - mean_width**2
    candidate = (total >= min_length_px) & (width_var <= SMOOTH_MAX_WIDTH_STD_PX**2)
    candidate[0] = False
    if not candidate.any():
        return share
    r = SMOOTH_RADIUS_PX
    for k in np.nonzero(candidate)[0]:  # each piece in its own box: memory of one piece's box, not the frame's
        mine = label == k
        ys, xs = samples.ys[mine], samples.xs[mine]
        y0, x0 = max(int(ys.min()) - r, 0), max(int(xs.min()) - r, 0)
        spread, n = _local_line_spread(samples.skeleton[y0 : int(ys.max()) + r + 1, x0 : int(xs.max()) + r + 1], r)
        smooth = (spread[ys - y0, xs - x0] <= tolerance_px) & (n[ys - y0, xs - x0] >= r)
        share[k] = float(np.sum(samples.step_length[mine] * smooth)) / max(float(total[k]), 1e-9)
    return share


def line_share(components: _Components, samples: _SkeletonSamples, min_length_px: float,
               smooth_tolerance_px: float, grid_segment_px: float = 0.0) -> np.ndarray:
    """Per component: the larger of :func:`straight_share` (with its grid part) and :func:`smooth_share`."""
    share = straight_share(components, samples, min_length_px, grid_segment_px)
    return np.maximum(share, smooth_share(components, samples, min_length_px, smooth_tolerance_px))


def drop_straight(components: _Components, samples: _SkeletonSamples, min_length_px: float,
                  min_share: float, support: tuple[_Components, _SkeletonSamples] | None = None,
                  smooth_tolerance_px: float = 0.0, grid_segment_px: float = 0.0) -> _Components:
    """Components made of long straight lines removed: joints, saw cuts, grout and formwork lines.

    A component goes when at least ``min_share`` of its skeleton lies on straight segments of at least
    ``min_length_px`` (:func:`straight_share`); a crack that runs beside or across a joint joined to it
    keeps its own, crooked share and stays. ``support`` (the components of a fainter mask holding this
    one, with their skeleton: :func:`straight_support`): a component also goes when the faint piece it
    lies in is such a line, so a joint the model sees only faintly, with a few confident stretches
    shorter than ``min_length_px``, goes with them. ``grid_segment_px`` > 0: on a piece with such long
    segments, segments at least that long square to them count too (joint grids). ``smooth_tolerance_px`` > 0: smooth lines of constant
    width count as lines too (:func:`smooth_share`: cables, pipes, kerbs, painted arcs).
    ``min_length_px`` <= 0: off.
    """
    if min_length_px <= 0 or components.n <= 1:
        return components
    keep = line_share(components, samples, min_length_px, smooth_tolerance_px, grid_segment_px) < min_share
    if support is not None:
        faint, faint_samples = support
        faint_straight = line_share(faint, faint_samples, min_length_px, smooth_tolerance_px, grid_segment_px) >= min_share
        faint_straight[0] = False
        inside = np.zeros(components.n, np.int64)  # the faint piece each component lies in (0: none)
        on = components.labels > 0
        inside[components.labels[on]] = faint.labels[on]
        keep &= ~faint_straight[inside]
    keep[0] = False
    return components if keep[1:].all() else _renumber(components.labels, keep)


def straight_support(prob: np.ndarray, threshold: float, ratio: float, min_area_px: int
                     ) -> tuple[_Components, _SkeletonSamples] | None:
    """The pieces of ``prob >= threshold * ratio`` with their skeleton, for :func:`drop_straight`'s
    ``support``; None when ``ratio`` is 1 or more (off) or nothing is that bright."""
    if ratio >= 1.0:
        return None
    faint = label_components((prob >= threshold * ratio).astype(np.uint8), min_area_px)
    if faint.n <= 1:
        return None
    return faint, sample_skeleton((faint.labels > 0).astype(np.uint8))


def link_fragments(components: _Components, link_gap_px: int) -> _Components:
    """Components closer than ``link_gap_px`` (pixels, through the background) become one crack.

    Each component is grown by ``link_gap_px / 2`` (an elliptical dilation); components whose grown
    areas touch share a crack label. Mask pixels are not changed: the gap is not counted as crack.
    """
    if link_gap_px <= 0 or components.n <= 2:
        return components
    radius = (int(link_gap_px) + 1) // 2
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    grown = cv2.dilate((components.labels > 0).astype(np.uint8), kernel)
    n, grown_labels = cv2.connectedComponents(grown, connectivity=8, ltype=cv2.CV_32S)
    linked = np.where(components.labels > 0, grown_labels, 0).astype(np.int32)
    keep = np.zeros(n, dtype=bool)
    keep[np.unique(linked[linked > 0])] = True
    return _renumber(linked, keep)


def crack_records(
    prob: np.ndarray, components: _Components, samples: _SkeletonSamples, rules: SeverityRules,
    gsd_mm_per_px: float | None,
) -> list[Crack]:
    """One :class:`Crack` per component: box, area, length, widths, mean probability, severity, centroid."""
    from scipy import ndimage  # scikit-image's own dependency

    n, labels = components.n, components.labels
    skel_label = labels[samples.ys, samples.xs]
    length = _lengths(components, samples)
    skel_count = np.bincount(skel_label, minlength=n)
    mean_w = np.bincount(skel_label, weights=samples.width, minlength=n) / np.maximum(skel_count, 1)
    max_w = np.zeros(n, dtype=np.float64)
    np.maximum.at(max_w, skel_label, samples.width)
    crack_pixels = labels > 0
    prob_sum = np.bincount(labels[crack_pixels], weights=prob[crack_pixels], minlength=n)
    if components.stats is not None:  # OpenCV's components, unchanged: their stats hold
        boxes = [tuple(int(v) for v in row[:4]) for row in components.stats]
        area = components.stats[:, cv2.CC_STAT_AREA]
        cx, cy = components.centroids[:, 0], components.centroids[:, 1]
    else:
        ys, xs = np.nonzero(crack_pixels)
        pixel_label = labels[ys, xs]
        area = np.bincount(pixel_label, minlength=n)
        cx = np.bincount(pixel_label, weights=xs, minlength=n) / np.maximum(area, 1)
        cy = np.bincount(pixel_label, weights=ys, minlength=n) / np.maximum(area, 1)
        boxes = [None] + [None if b is None else (b[1].start, b[0].start, b[1].stop - b[1].start, b[0].stop - b[0].start)
                          for b in ndimage.find_objects(labels, max_label=n - 1)]
    cracks = []
    for k in range(1, n):
        if boxes[k] is None or area[k] == 0:
            continue
        length_px = float(length[k])
        cracks.append(Crack(
            label=k,
            bbox=boxes[k],
            area_px=int(area[k]),
            length_px=length_px,
            max_width_px=float(max_w[k]),
            mean_width_px=float(mean_w[k]),
            mean_probability=float(prob_sum[k] / area[k]),
            severity=rules.classify(float(max_w[k]), length_px, gsd_mm_per_px),
            centroid_xy=(float(cx[k]), float(cy[k])),
            length_mm=None if gsd_mm_per_px is None else length_px * gsd_mm_per_px,
            max_width_mm=None if gsd_mm_per_px is None else float(max_w[k]) * gsd_mm_per_px,
            mean_width_mm=None if gsd_mm_per_px is None else float(mean_w[k]) * gsd_mm_per_px,
        ))
    cracks.sort(key=lambda c: (-severity_rank(c.severity), -c.length_px, c.label))
    return cracks


def measure_cracks(
    prob: np.ndarray,
    threshold: float,
    *,
    min_area_px: int = _CLEANUP.min_area_px,
    min_length_px: float = _CLEANUP.min_length_px,
    link_gap_px: int = _CLEANUP.link_gap_px,
    gsd_mm_per_px: float | None = None,
    rules: SeverityRules = SeverityRules(),  # noqa: B008 - frozen, immutable default
    open_px: int = _CLEANUP.open_px,
    close_px: int = _CLEANUP.close_px,
    straight_min_length_px: float = _CLEANUP.straight_min_length_px,
    straight_min_share: float = _CLEANUP.straight_min_share,
    straight_support_ratio: float = _CLEANUP.straight_support_ratio,
    smooth_line_tolerance_px: float = _CLEANUP.smooth_line_tolerance_px,
    straight_grid_segment_px: float = _CLEANUP.straight_grid_segment_px,
) -> FrameMeasurement:
    """Every crack of a probability map ``prob`` (H x W, values in [0, 1]) with its measurements.

    Steps: threshold and clean the mask (:func:`binary_mask`), keep components of at least
    ``min_area_px`` pixels (:func:`label_components`), drop those whose skeleton is shorter than
    ``min_length_px`` (:func:`drop_short`), join fragments less than ``link_gap_px`` apart into one
    crack (:func:`link_fragments`), measure each crack (:func:`crack_records`). Before the length
    check, pieces made of straight lines of at least ``straight_min_length_px`` (joints, saw cuts)
    are dropped (:func:`drop_straight`, 0 = off), judged also on the fainter line each lies in
    (``prob >= threshold * straight_support_ratio``, 1 = off); pieces that are smooth lines of constant
    width as long (cables, kerbs) go too (:func:`smooth_share`, ``smooth_line_tolerance_px``, 0 = off), and
    pieces whose shorter straight stretches (at least ``straight_grid_segment_px``, 0 = off) run parallel or
    perpendicular to their long lines are joint grids (:func:`straight_share`: brick bonds, tile grids).
    ``gsd_mm_per_px``:
    ground sampling distance (mm of surface per pixel) for millimetre sizes and the mm severity limits.
    Defaults: :class:`MaskCleanup` (the daemon's).
    The definitions are in this module's docstring.
    """
    _check_inputs(prob, threshold, min_area_px, gsd_mm_per_px)
    height, width = prob.shape
    mask = binary_mask(prob, threshold, open_px=open_px, close_px=close_px)
    components = label_components(mask, min_area_px)
    if components.n <= 1:
        empty = np.zeros((height, width), dtype=bool)
        return FrameMeasurement(
            height, width, float(threshold), gsd_mm_per_px, (), 0.0, empty, np.zeros((height, width), np.int32), empty
        )
    samples = sample_skeleton((components.labels > 0).astype(np.uint8))
    support = straight_support(prob, threshold, straight_support_ratio, min_area_px) if straight_min_length_px > 0 else None
    components = drop_straight(components, samples, straight_min_length_px, straight_min_share, support,
                               smooth_line_tolerance_px, straight_grid_segment_px)
    components = link_fragments(drop_short(components, samples, min_length_px), link_gap_px)
    crack_pixels = components.labels > 0
    cracks = crack_records(prob, components, samples, rules, gsd_mm_per_px)
    coverage = float(crack_pixels.sum()) / (height * width)
    skeleton = samples.skeleton & crack_pixels
    return FrameMeasurement(
        height, width, float(threshold), gsd_mm_per_px, tuple(cracks), coverage, crack_pixels, components.labels,
        skeleton,
    )
