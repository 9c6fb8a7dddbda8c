"""Recall by crack width (pure numpy/OpenCV): local crack width of a mask, width bins, and how much of
each bin a prediction finds — one image at a time (:func:`recall_by_width`) or over every threshold
at once (:class:`WidthSweep`, for training's validation).

**Local crack width** (:func:`width_map`): the Euclidean distance transform ``d`` of the crack mask
gives, at each crack pixel ``q``, the radius of the largest open disc centred on ``q`` that holds only
crack pixels (``d`` = distance from ``q``'s centre to the nearest background pixel's centre). A disc of
radius ``d`` has width ``2 d - 1`` in pixels (on a band of odd width w the centre pixel has
``d = (w + 1) / 2``; the same convention as the edge daemon's measured width, ``edge/measure.py``).
The width of a crack pixel ``p`` is that of the *widest* such disc that covers it: the "local
thickness" of Hildebrand & Rueegsegger (J. Microscopy 1997). Compared with copying the width of the
nearest skeleton pixel, every pixel of a wide crack's ragged border reads the crack's width, not the
width of a one-pixel bump of the border that happens to lie nearer; and a thin crack that meets a wide
one keeps its own width up to where the wide crack's discs start. Only the centres of maximal discs
are painted (a disc lying inside a neighbour's disc is skipped), which gives the same map as painting
every crack pixel. A band of even width w reads w - 1 (its two centre rows have ``d = w / 2``).

**Tolerance**: a crack pixel counts as found at tolerance ``t`` when a predicted pixel lies within
Euclidean distance ``t`` of it (the same rule as ``contract.metrics``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from contract.metrics import (  # the metrics' tolerance kernel and threshold grid: "within 2 px", "at 0.42" mean the same
    disc,
    nearest_threshold_index,
    threshold_grid,
    threshold_levels,
)

DEFAULT_WIDTH_EDGES_PX: tuple[float, ...] = (2.0, 5.0)  # bins: <= 2 px, 2-5 px, > 5 px
# 8-neighbour offsets and their distances, for the maximal-disc test
_NEIGHBOURS = tuple((dy, dx, float(np.hypot(dy, dx))) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx)


def _as_bool_mask(mask: np.ndarray, name: str = "mask") -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2 or 0 in mask.shape:
        raise ValueError(f"{name} must be a non-empty H x W array, got shape {mask.shape}")
    return mask if mask.dtype == bool else mask != 0


def width_map(mask: np.ndarray) -> np.ndarray:
    """Local crack width in pixels at every crack pixel (float32 H x W, 0 on background).

    Definition and conventions in the module docstring: ``2 d - 1`` of the widest inscribed disc that
    covers the pixel. The mask is mirrored across the frame's edge, so a crack running off the frame
    is not narrowed by it (a crack along the edge reads as if mirrored). A mask that is crack
    everywhere reads ``min(H, W)``.
    """
    crack = _as_bool_mask(mask)
    height, width = crack.shape
    # reflect-pad so the frame edge is not read as background, then crop the distance back
    pad = 1
    padded = np.pad(crack, pad, mode="reflect") if min(height, width) > 1 else np.pad(crack, pad, mode="edge")
    dist_full = cv2.distanceTransform(padded.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    dist = dist_full[pad:-pad, pad:-pad]
    out = np.zeros((height, width), np.float32)
    if not crack.any():
        return out
    if crack.all():  # no background to measure from: the crack is at least as wide as the frame
        out[:] = float(min(height, width))
        return out
    # centres of maximal discs: no 8-neighbour's disc contains this pixel's disc (|q - q'| + d <= d')
    dpad = np.pad(dist, 1)
    maximal = crack.copy()
    for dy, dx, step in _NEIGHBOURS:
        neighbour = dpad[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]
        maximal &= ~(neighbour >= dist + step - 1e-4)
    # Paint each centre's width over its disc as a max over shifted copies: one shift per disc offset,
    # offsets taken by squared length, each shift carrying only the centres whose disc reaches it.
    centre_width = np.where(maximal, 2.0 * dist - 1.0, 0.0).astype(np.float32)
    reach_sq = np.where(maximal, dist * dist - 1e-3, -1.0)
    reach = int(np.ceil(float(dist[maximal].max())))
    canvas = np.zeros((height + 2 * reach, width + 2 * reach), np.float32)
    offsets: dict[int, list[tuple[int, int]]] = {}
    for oy in range(-reach, reach + 1):
        for ox in range(-reach, reach + 1):
            offsets.setdefault(oy * oy + ox * ox, []).append((oy, ox))
    for length_sq in sorted(offsets):
        carried = np.where(reach_sq > length_sq, centre_width, np.float32(0))
        if not carried.any():
            break  # no disc reaches this far, nor any farther offset
        for oy, ox in offsets[length_sq]:
            window = canvas[reach + oy : reach + oy + height, reach + ox : reach + ox + width]
            np.maximum(window, carried, out=window)
    out = canvas[reach : reach + height, reach : reach + width].copy()
    out[~crack] = 0.0
    return out


def width_bins_of_mask(mask: np.ndarray, edges: Sequence[float] = DEFAULT_WIDTH_EDGES_PX) -> np.ndarray:
    """Width bin (0..len(edges)) of every crack pixel, -1 on background (int8 H x W).

    Bin ``i`` holds widths in ``(edges[i-1], edges[i]]``: with the default ``(2, 5)``, 0 = ``<= 2 px``,
    1 = ``2-5 px``, 2 = ``> 5 px``. Widths from :func:`width_map`.
    """
    edges = _check_edges(edges)
    crack = _as_bool_mask(mask)
    widths = width_map(crack)
    bins = np.full(crack.shape, -1, np.int8)
    bins[crack] = np.digitize(widths[crack], edges, right=True).astype(np.int8)
    return bins


def _check_edges(edges: Sequence[float]) -> tuple[float, ...]:
    edges = tuple(float(e) for e in edges)
    if not edges or any(b <= a for a, b in zip(edges, edges[1:], strict=False)) or edges[0] <= 0:
        raise ValueError(f"width bin edges must be positive and increasing (pixels), got {edges}")
    return edges


def width_bin_labels(edges: Sequence[float] = DEFAULT_WIDTH_EDGES_PX) -> list[str]:
    """Human labels of the bins: ``['<= 2 px', '2-5 px', '> 5 px']`` for the default edges."""
    edges = _check_edges(edges)
    labels = [f"<= {edges[0]:g} px"]
    labels += [f"{a:g}-{b:g} px" for a, b in zip(edges, edges[1:], strict=False)]
    return labels + [f"> {edges[-1]:g} px"]


@dataclass
class WidthRecall:
    """Crack pixels per width bin (``total``) and how many of them were found (``found``).

    Add two with ``+`` (or ``+=``) to accumulate over images; ``recall`` is ``found / total`` per bin
    (NaN for an empty bin).
    """

    edges: tuple[float, ...]
    found: np.ndarray = field(default=None)  # type: ignore[assignment]
    total: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.edges = _check_edges(self.edges)
        n = len(self.edges) + 1
        self.found = np.zeros(n, np.int64) if self.found is None else np.asarray(self.found, np.int64)
        self.total = np.zeros(n, np.int64) if self.total is None else np.asarray(self.total, np.int64)

    def __add__(self, other: WidthRecall) -> WidthRecall:
        if self.edges != other.edges:
            raise ValueError(f"cannot add width recalls with different bin edges {self.edges} and {other.edges}")
        return WidthRecall(self.edges, self.found + other.found, self.total + other.total)

    @property
    def recall(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.total > 0, self.found / np.maximum(self.total, 1), np.nan)

    @property
    def labels(self) -> list[str]:
        return width_bin_labels(self.edges)


def recall_by_width(
    pred: np.ndarray,
    mask: np.ndarray,
    edges: Sequence[float] = DEFAULT_WIDTH_EDGES_PX,
    tolerance_px: int = 0,
    bins: np.ndarray | None = None,
) -> WidthRecall:
    """Crack pixels per width bin and how many a boolean prediction finds (one image).

    ``pred``, ``mask``: H x W (bool, or crack where != 0). With ``tolerance_px`` t > 0 a crack pixel is
    found when a predicted pixel lies within Euclidean distance t. ``bins``: the result of
    :func:`width_bins_of_mask` for this mask and ``edges``, when the caller scores several predictions
    (or tolerances) on the same mask and wants the width map computed once.
    """
    pred = _as_bool_mask(pred, "prediction")
    crack = _as_bool_mask(mask)
    if pred.shape != crack.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from mask shape {crack.shape}")
    if int(tolerance_px) != tolerance_px or tolerance_px < 0:
        raise ValueError(f"tolerance_px must be a whole number of pixels >= 0, got {tolerance_px!r}")
    edges = _check_edges(edges)
    if bins is None:
        bins = width_bins_of_mask(crack, edges)
    elif bins.shape != crack.shape:
        raise ValueError(f"bins shape {bins.shape} differs from mask shape {crack.shape}")
    if tolerance_px:
        pred = cv2.dilate(pred.astype(np.uint8), disc(int(tolerance_px))) > 0
    n = len(edges) + 1
    crack_bins = bins[crack].astype(np.intp)
    total = np.bincount(crack_bins, minlength=n)
    found = np.bincount(crack_bins[pred[crack]], minlength=n)
    return WidthRecall(edges, found, total)


class WidthSweep:
    """Recall by crack width at every threshold of ``contract.metrics.ThresholdSweep``'s grid, from one
    pass over the images (0 px tolerance: a crack pixel is found when its own probability reaches the
    threshold). ``counts[b, k]``: crack pixels of width bin ``b`` whose probability reaches exactly ``k``
    of the thresholds; :meth:`recall_at` reads any threshold off them, so a training run's validation can
    report recall by width at the threshold it chose after seeing every image.
    """

    def __init__(self, edges: Sequence[float] = DEFAULT_WIDTH_EDGES_PX, n_thresholds: int = 99) -> None:
        self.edges = _check_edges(edges)
        self.thresholds = threshold_grid(n_thresholds)
        self.counts = np.zeros((len(self.edges) + 1, len(self.thresholds) + 1), np.int64)

    def update(self, prob: np.ndarray, mask: np.ndarray, bins: np.ndarray | None = None) -> None:
        """Add one image: its probability map and mask (H x W), ``bins`` as for :func:`recall_by_width`."""
        crack = _as_bool_mask(mask)
        prob = np.asarray(prob)
        if prob.shape != crack.shape:
            raise ValueError(f"probability shape {prob.shape} differs from mask shape {crack.shape}")
        if bins is None:
            bins = width_bins_of_mask(crack, self.edges)
        values = prob[crack]
        if values.dtype not in (np.float32, np.float64):
            values = values.astype(np.float32)
        levels = threshold_levels(values, self.thresholds)
        width = self.counts.shape[1]
        flat = bins[crack].astype(np.intp) * width + levels
        self.counts += np.bincount(flat, minlength=self.counts.size).reshape(self.counts.shape)

    def recall_at(self, threshold: float) -> WidthRecall:
        """Found / total per width bin at the grid threshold nearest ``threshold``."""
        k = nearest_threshold_index(self.thresholds, threshold)
        return WidthRecall(self.edges, self.counts[:, k + 1 :].sum(axis=1), self.counts.sum(axis=1))
