"""Hard-negative mining: the model's own false positives on the training images, fed back as crops.

A model that paints joints, edges and stains red on the training images' crack-free areas is shown
exactly those places again. :func:`false_positive_sites` finds them in one probability map (pure:
pieces of the prediction at ``threshold`` that lie farther than ``margin_px`` from every labelled
crack pixel); :func:`mine` runs a predictor over training images and lists the sites;
:class:`HardNegativeSource` serves crops around them as one more source of
``train.data.TrainCrops`` (``--hard-negative-fraction``). A crop keeps its real mask, so a crack
that happens to lie in it is still a crack: only the labels decide what is negative.

Sites are named by data set and stem (:func:`write_sites` / :func:`read_sites`), so a resumed run
reads the same list and never mines a validation or test image: :func:`mine` sees only the
training sets it is given.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from train.data import CrackImages, DatasetError, fit_small_image


@dataclass(frozen=True)
class Site:
    """One false-positive piece: where (data set, image, centre row/column) and how big (pixels)."""

    source: str
    stem: str
    y: int
    x: int
    area: int


def bend_px(ys: np.ndarray, xs: np.ndarray) -> tuple[float, float]:
    """``(length, bend)`` of a set of pixels: its extent along its principal axis, and the RMS distance
    of its pixels from that axis (a straight band of width w: about w / 3.5; a crooked crack: more)."""
    points = np.stack([ys, xs], axis=1).astype(np.float64)
    points -= points.mean(axis=0)
    if len(points) < 2:
        return 0.0, 0.0
    _, _, axes = np.linalg.svd(points, full_matrices=False)
    along, across = points @ axes[0], points @ axes[1]
    return float(along.max() - along.min()), float(np.sqrt(np.mean(across**2)))


def false_positive_sites(prob: np.ndarray, mask: np.ndarray, threshold: float, *, margin_px: int = 8,
                         min_area_px: int = 20, straight_only: bool = False, min_length_px: float = 24.0,
                         max_bend_px: float = 2.0) -> list[tuple[int, int, int]]:
    """``(y, x, area)`` of each false-positive piece of ``prob >= threshold``, largest first.

    A piece is the 8-connected part of the prediction that lies more than ``margin_px`` from every
    labelled pixel of ``mask`` (so a crack drawn a little too wide is not a false positive); pieces
    under ``min_area_px`` pixels are noise. With ``straight_only`` only straight pieces count (at
    least ``min_length_px`` long, at most ``max_bend_px`` RMS off their axis, :func:`bend_px`): edges,
    joints and lines, not the faint tortuous cracks that a data set left unlabelled (DeepCrack's
    labels miss many faint branches; mining those would teach the model to miss hairlines). The
    centre is the piece's pixel nearest its centroid (a curved piece's centroid may lie off it).
    """
    if prob.shape != mask.shape:
        raise ValueError(f"probability map {prob.shape} and mask {mask.shape} differ in shape")
    predicted = prob >= threshold
    if margin_px > 0 and mask.any():
        size = 2 * margin_px + 1
        near = cv2.dilate(mask.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))) > 0
    else:
        near = mask.astype(bool)
    false = (predicted & ~near).astype(np.uint8)
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(false, connectivity=8)
    sites = []
    for k in range(1, count):
        area = int(stats[k, cv2.CC_STAT_AREA])
        if area < min_area_px:
            continue
        left, top = int(stats[k, cv2.CC_STAT_LEFT]), int(stats[k, cv2.CC_STAT_TOP])
        box = labels[top : top + int(stats[k, cv2.CC_STAT_HEIGHT]), left : left + int(stats[k, cv2.CC_STAT_WIDTH])]
        ys, xs = np.nonzero(box == k)  # within the piece's box, not the whole frame once per piece
        ys, xs = ys + top, xs + left
        if straight_only:
            length, bend = bend_px(ys, xs)
            if length < min_length_px or bend > max_bend_px:
                continue
        nearest = int(np.argmin((ys - centroids[k][1]) ** 2 + (xs - centroids[k][0]) ** 2))
        sites.append((int(ys[nearest]), int(xs[nearest]), area))
    return sorted(sites, key=lambda s: -s[2])


def mine(predict: Callable[[np.ndarray], np.ndarray], sets: Sequence[tuple[str, CrackImages]], threshold: float, *,
         margin_px: int = 8, min_area_px: int = 20, per_image: int = 4, straight_only: bool = False,
         progress: Callable[[str], None] | None = None) -> list[Site]:
    """The false-positive sites of ``predict`` on every image of ``sets`` ((name, images) pairs).

    At most ``per_image`` sites per image (the largest), so one stained photograph cannot fill the
    list; ``straight_only`` as :func:`false_positive_sites`.
    """
    sites: list[Site] = []
    for name, data in sets:
        found = 0
        for i in range(len(data)):
            prob = predict(data.images[i])
            for y, x, area in false_positive_sites(prob, data.masks[i], threshold, margin_px=margin_px,
                                                   min_area_px=min_area_px, straight_only=straight_only)[:per_image]:
                sites.append(Site(name, data.stems[i], y, x, area))
                found += 1
        if progress is not None:
            progress(f"hard negatives: {name}: {found} false-positive sites on {len(data)} training images")
    return sites


def write_sites(path: str | os.PathLike, sites: Sequence[Site], about: dict) -> None:
    """Write ``sites`` and what made them (``about``: model, threshold, margin) as JSON, atomically."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    rows = [[s.source, s.stem, s.y, s.x, s.area] for s in sites]
    tmp.write_text(json.dumps({"about": about, "columns": ["source", "stem", "y", "x", "area"], "sites": rows}) + "\n")
    os.replace(tmp, path)


def read_sites(path: str | os.PathLike) -> tuple[list[Site], dict]:
    """The sites and ``about`` record of a file :func:`write_sites` wrote."""
    try:
        record = json.loads(Path(path).read_text())
        return [Site(str(a), str(b), int(c), int(d), int(e)) for a, b, c, d, e in record["sites"]], record["about"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"hard-negative sites {path}: cannot read ({exc}); delete it to mine again") from None


class HardNegativeSource:
    """Crops around false-positive sites, as an extra source of ``train.data.TrainCrops``.

    Sample ``item`` is a ``size`` crop around one site, its training image and mask (mirrored up to
    ``size`` when the image is smaller), placed so that the site lies in the crop's central half at
    a random offset, then flipped and turned by a random multiple of 90 degrees. Items take the data
    sets in turn (``item % n``, then that set's site ``item // n``), so every data set with sites gets
    an equal share however many sites it has (Crack500 alone yields most of them). Sites whose data
    set or image is not among ``sets`` are an error (the list belongs to other training data).
    """

    def __init__(self, sets: Sequence[tuple[str, CrackImages]], sites: Sequence[Site]) -> None:
        if not sites:
            raise DatasetError("no hard-negative sites: the model raised no false positive on the training images "
                               "at this threshold; train without --hard-negative-fraction or lower the threshold")
        index = {(name, stem): (s, i) for s, (name, data) in enumerate(sets) for i, stem in enumerate(data.stems)}
        missing = [f"{site.source}/{site.stem}" for site in sites if (site.source, site.stem) not in index]
        if missing:
            raise DatasetError(f"{len(missing)} hard-negative sites name images outside the training split "
                               f"(first: {missing[0]}); delete the sites file to mine again")
        self.sets = [data for _, data in sets]
        self.sites = list(sites)
        self._where = [index[(site.source, site.stem)] for site in self.sites]
        by_source: dict[int, list[int]] = {}
        for k, (s, _) in enumerate(self._where):
            by_source.setdefault(s, []).append(k)
        self._turns = [by_source[s] for s in sorted(by_source)]

    def __len__(self) -> int:
        return len(self.sites)

    def site_of(self, item: int) -> Site:
        """The site sample ``item`` is cut around (data sets in turn)."""
        return self.sites[self._site_index(item)]

    def _site_index(self, item: int) -> int:
        turn = self._turns[item % len(self._turns)]
        return turn[(item // len(self._turns)) % len(turn)]

    def sample(self, item: int, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
        """A ``size`` x ``size`` uint8 ``(image, mask)`` around the site of ``item`` (:meth:`site_of`)."""
        k = self._site_index(item)
        s, i = self._where[k]
        site = self.sites[k]
        image, mask, _ = fit_small_image(self.sets[s].images[i], self.sets[s].masks[i], size, "mirror")
        h, w = mask.shape
        quarter = size // 4
        top = int(np.clip(site.y - size // 2 + rng.integers(-quarter, quarter + 1), 0, h - size))
        left = int(np.clip(site.x - size // 2 + rng.integers(-quarter, quarter + 1), 0, w - size))
        image, mask = image[top : top + size, left : left + size], mask[top : top + size, left : left + size]
        turns, flip = int(rng.integers(0, 4)), bool(rng.integers(0, 2))
        image, mask = np.rot90(image, turns), np.rot90(mask, turns)
        if flip:
            image, mask = image[:, ::-1], mask[:, ::-1]
        return np.ascontiguousarray(image), np.ascontiguousarray(mask)
