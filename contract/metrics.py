"""Segmentation metrics: P, R, F-beta (Liu et al. 2022, eqs. 8-10, beta^2 = 0.3), F1, IoU, ODS/OIS/AP.

Pure numpy on HxW arrays (OpenCV only for the optional pixel tolerance). Conventions, used everywhere:

* a pixel is predicted crack at threshold ``th`` iff ``prob >= th`` (compared in float64);
* 0/0 cases: precision is 1 when nothing is predicted, recall is 1 when there is no crack,
  F is 0 when P = R = 0, IoU is 1 when there is neither prediction nor crack. So an image without
  cracks and without predictions scores P = R = F = 1, and a predictor that stays silent on an
  image with cracks scores P = 1, R = 0, F = 0;
* with a tolerance of t pixels (crack papers use 2), a predicted pixel is matched when a crack pixel
  lies within Euclidean distance t of it, and a crack pixel is matched when a prediction lies within t.
  The counts are then ``tp = min(matched predictions, matched crack pixels)``,
  ``fp = predictions - tp``, ``fn = crack pixels - tp``: still a confusion matrix (tp + fp =
  predictions, tp + fn = crack pixels), an upper bound of the one-to-one matching of the BSDS
  benchmark, so a prediction 3 px wide on a 1 px crack is not rewarded for its extra width.
  At t = 0 these are the exact pixel counts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

BETA2 = 0.3  # the paper's beta^2 in eq. (10): precision weighs more than recall

# ----------------------------------------------------------------------------- counts and P/R/F


def prf(tp: float, fp: float, fn: float, beta2: float = BETA2) -> tuple[float, float, float]:
    """Precision, recall and F-beta (eq. 10: (1 + b2) P R / (b2 P + R)) from pixel counts.

    P = 1 when nothing is predicted (tp + fp = 0), R = 1 when there is no crack (tp + fn = 0),
    F = 0 when P = R = 0. Works elementwise on arrays of counts as well.
    """
    p, r, f = _prf_arrays(np.asarray(tp, float), np.asarray(fp, float), np.asarray(fn, float), beta2)
    if p.ndim == 0:
        return float(p), float(r), float(f)
    return p, r, f  # type: ignore[return-value]


def _prf_arrays(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, beta2: float):
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 1.0)
        recall = np.where(tp + fn > 0, tp / (tp + fn), 1.0)
    return precision, recall, f_beta_from_pr(precision, recall, beta2)


def f_beta_from_pr(precision: np.ndarray, recall: np.ndarray, beta2: float) -> np.ndarray:
    """F-beta (eq. 10) elementwise from precision and recall arrays; 0 where both are 0."""
    denom = beta2 * precision + recall
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denom > 0, (1.0 + beta2) * precision * recall / denom, 0.0)


def iou(tp: float, fp: float, fn: float) -> float:
    """Intersection over union tp / (tp + fp + fn); 1 when there is neither prediction nor crack."""
    total = tp + fp + fn
    return float(tp / total) if total > 0 else 1.0


def disc(radius_px: int) -> np.ndarray:
    """uint8 disc kernel of all offsets within Euclidean distance ``radius_px`` (side 2 r + 1)."""
    y, x = np.ogrid[-radius_px : radius_px + 1, -radius_px : radius_px + 1]
    return (x * x + y * y <= radius_px * radius_px).astype(np.uint8)


def _dilate(image: np.ndarray, radius_px: int) -> np.ndarray:
    """Max filter over a disc of radius ``radius_px`` (grey dilation; binary dilation on uint8)."""
    import cv2  # only the tolerance needs OpenCV; the plain metrics are numpy only

    return cv2.dilate(image, disc(radius_px), borderType=cv2.BORDER_CONSTANT, borderValue=0)


def _check_tolerance(tolerance_px: int) -> int:
    if int(tolerance_px) != tolerance_px or tolerance_px < 0:
        raise ValueError(f"tolerance_px must be a whole number of pixels >= 0, got {tolerance_px!r}")
    return int(tolerance_px)


def _as_mask(array: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise ValueError(f"{name} must be an H x W array, got shape {array.shape}")
    return array if array.dtype == bool else array != 0


def confusion(pred: np.ndarray, target: np.ndarray, tolerance_px: int = 0) -> tuple[int, int, int]:
    """(tp, fp, fn) pixel counts of a boolean prediction against a boolean crack mask (H x W).

    With ``tolerance_px`` t > 0, matches within t pixels count (see the module docstring:
    tp = min(matched predictions, matched crack pixels)). Non-bool inputs count as crack where != 0.
    """
    pred = _as_mask(pred, "prediction")
    target = _as_mask(target, "target")
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from target shape {target.shape}")
    t = _check_tolerance(tolerance_px)
    n_pred, n_crack = int(pred.sum()), int(target.sum())
    if t == 0:
        tp = int(np.count_nonzero(pred & target))
    else:
        near_crack = _dilate(target.astype(np.uint8), t) > 0
        near_pred = _dilate(pred.astype(np.uint8), t) > 0
        tp = min(int(np.count_nonzero(pred & near_crack)), int(np.count_nonzero(target & near_pred)))
    return tp, n_pred - tp, n_crack - tp


# ----------------------------------------------------------------------------- threshold sweep


def threshold_grid(n_thresholds: int = 99) -> np.ndarray:
    """The sweep thresholds ``k / (n + 1)`` for k = 1..n (0.01 .. 0.99 for n = 99), ascending float64."""
    if int(n_thresholds) != n_thresholds or n_thresholds < 1:
        raise ValueError(f"n_thresholds must be a positive whole number, got {n_thresholds!r}")
    n = int(n_thresholds)
    return np.arange(1, n + 1, dtype=np.float64) / (n + 1)


def threshold_levels(prob: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Per probability, how many of ``thresholds`` (a :func:`threshold_grid`) it reaches (``prob >= th``):
    ``searchsorted(thresholds, prob, 'right')``.

    Computed as floor(prob * (n + 1)) in float32 (6x faster than a binary search on unsorted
    data); only the values within rounding distance of a threshold are settled exactly by the search.
    """
    n = len(thresholds)
    scaled = prob * np.float32(n + 1)
    level = scaled.astype(np.int32)
    np.minimum(level, n, out=level)
    frac = scaled - level
    band = max(1e-4, 16 * float(np.spacing(np.float32(n + 1))))
    # level 0 cannot fall and level n cannot rise: exact zeros and ones (most pixels) need no check
    near = np.flatnonzero(((frac < band) & (level > 0)) | ((frac > 1.0 - band) & (level < n)))
    if near.size:
        level[near] = np.searchsorted(thresholds, prob[near], side="right")
    return level


def nearest_threshold_index(thresholds: np.ndarray, threshold: float) -> int:
    """Index of the grid threshold nearest ``threshold``."""
    return int(np.argmin(np.abs(thresholds - float(threshold))))


class ThresholdSweep:
    """Accumulates, image by image, the counts for P/R/F at 0.5 and at every sweep threshold.

    Thresholds are ``k / (n_thresholds + 1)`` for k = 1..n (0.01 .. 0.99 by default). ``update`` is
    O(pixels): each probability is binned once by the thresholds it reaches (``np.searchsorted``),
    ``np.bincount`` counts crack / background pixels per bin, and a reverse cumulative sum gives the
    counts at every threshold. With a tolerance t, a crack pixel is matched at ``th`` iff the maximum
    probability within t of it is >= th, so one grey dilation of the probability map keeps it one pass.

    ``summary`` gives ODS (F of the data-set counts at the best single threshold), OIS (mean over
    images of each image's best F) and AP (step-interpolated area under the data-set PR curve).
    """

    def __init__(self, n_thresholds: int = 99, tolerance_px: int = 0) -> None:
        self.thresholds = threshold_grid(n_thresholds)
        self.n_thresholds = len(self.thresholds)
        self.tolerance_px = _check_tolerance(tolerance_px)
        self._per_image: list[np.ndarray] = []  # (3, n_thresholds) int64: tp, fp, fn per threshold
        self._at_half = np.zeros(3, dtype=np.int64)  # tp, fp, fn at threshold 0.5

    @property
    def n_images(self) -> int:
        return len(self._per_image)

    def update(self, prob: np.ndarray, target: np.ndarray) -> None:
        """Add one image: ``prob`` H x W crack probabilities in [0, 1], ``target`` H x W bool crack mask."""
        prob = np.asarray(prob)
        if prob.ndim == 3 and prob.shape[0] == 1:
            prob = prob[0]
        if prob.ndim != 2:
            raise ValueError(f"probability map must be H x W (or 1 x H x W), got shape {prob.shape}")
        target = _as_mask(target, "target")
        if prob.shape != target.shape:
            raise ValueError(f"probability map shape {prob.shape} differs from target shape {target.shape}")
        if prob.dtype not in (np.float32, np.float64):
            prob = prob.astype(np.float32)
        if prob.size:
            lo, hi = float(prob.min()), float(prob.max())
            if not (lo >= 0.0 and hi <= 1.0):  # also catches NaN
                raise ValueError(
                    f"probability map must lie in [0, 1] without NaN, got min {lo} max {hi}; "
                    "apply the sigmoid to logits, and scale 8-bit maps by 1/255"
                )
        n = self.n_thresholds
        n_crack = int(np.count_nonzero(target))
        # level[i] = number of thresholds that pixel i reaches (prob >= th); n + 1 bins 0..n
        level = self._levels(prob.ravel())
        flat_target = target.ravel()
        t = self.tolerance_px
        if t == 0:
            per_class = np.bincount(level + (n + 1) * flat_target, minlength=2 * (n + 1))
            matched_pred = _at_or_above(per_class[n + 1 :])
            n_pred = matched_pred + _at_or_above(per_class[: n + 1])
            matched_crack = matched_pred
            half = prob >= 0.5
            tp_half = int(np.count_nonzero(half & target))
            half_counts = (tp_half, int(np.count_nonzero(half)) - tp_half, n_crack - tp_half)
        else:
            near_crack = (_dilate(target.astype(np.uint8), t) > 0).ravel()
            per_class = np.bincount(level + (n + 1) * near_crack, minlength=2 * (n + 1))
            matched_pred = _at_or_above(per_class[n + 1 :])
            n_pred = matched_pred + _at_or_above(per_class[: n + 1])
            # a crack pixel is reached at th iff max(prob within t) >= th
            local_max = _dilate(np.ascontiguousarray(prob, dtype=np.float32), t).ravel()[flat_target]
            crack_level = self._levels(local_max)
            matched_crack = _at_or_above(np.bincount(crack_level, minlength=n + 1))
            half_counts = confusion(prob >= 0.5, target, t)
        tp = np.minimum(matched_pred, matched_crack)
        self._per_image.append(np.stack([tp, n_pred - tp, n_crack - tp]))
        self._at_half += np.asarray(half_counts, dtype=np.int64)

    def _levels(self, prob: np.ndarray) -> np.ndarray:
        """Per pixel, how many thresholds it reaches (:func:`threshold_levels`)."""
        return threshold_levels(prob, self.thresholds)

    def per_image_counts(self) -> np.ndarray:
        """Every image's (tp, fp, fn) at every threshold: int64, images x 3 x thresholds (in ``update`` order)."""
        if not self._per_image:
            return np.zeros((0, 3, self.n_thresholds), np.int64)
        return np.stack(self._per_image).astype(np.int64)

    def totals(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Data-set (tp, fp, fn) arrays, one entry per threshold."""
        if not self._per_image:
            raise ValueError("ThresholdSweep has no images: call update(prob, target) first")
        total = np.sum(self._per_image, axis=0)
        return total[0], total[1], total[2]

    def pr_curve(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(precision, recall, thresholds) of the data-set counts, thresholds ascending."""
        p, r, _ = _prf_arrays(*(c.astype(float) for c in self.totals()), BETA2)
        return p, r, self.thresholds.copy()

    def summary(self, beta2: float = BETA2) -> dict:
        """Metrics of the images so far (keys in the module docs; ``*_f`` use ``beta2``)."""
        tp, fp, fn = (c.astype(float) for c in self.totals())
        precision, recall, f = _prf_arrays(tp, fp, fn, beta2)
        best = int(np.argmax(f))  # the lowest threshold among ties
        per_image = np.asarray(self._per_image, dtype=float)  # images x 3 x thresholds
        _, _, f_images = _prf_arrays(per_image[:, 0], per_image[:, 1], per_image[:, 2], beta2)
        p_half, r_half, f_half = prf(*self._at_half, beta2=beta2)
        return {
            "precision": p_half,
            "recall": r_half,
            "f_beta": f_half,
            "f1": prf(*self._at_half, beta2=1.0)[2],
            "iou": iou(*(int(c) for c in self._at_half)),
            "ods_f": float(f[best]),
            "ods_threshold": float(self.thresholds[best]),
            "ois_f": float(f_images.max(axis=1).mean()),
            "ap": average_precision(precision, recall),
            "beta2": float(beta2),
            "tolerance_px": self.tolerance_px,
            "n_images": self.n_images,
        }


def metrics_at_threshold(sweep: ThresholdSweep, threshold: float, beta2: float = BETA2) -> dict[str, float]:
    """Data-set P, R, F-beta, F1, IoU at the sweep threshold nearest ``threshold``."""
    k = nearest_threshold_index(sweep.thresholds, threshold)
    tp, fp, fn = (float(c[k]) for c in sweep.totals())
    p, r, f = prf(tp, fp, fn, beta2)
    return {"threshold": float(sweep.thresholds[k]), "precision": p, "recall": r, "f_beta": f,
            "f1": prf(tp, fp, fn, 1.0)[2], "iou": iou(tp, fp, fn)}


def mean_metrics_at_threshold(sweeps: Mapping[str, ThresholdSweep], threshold: float,
                              beta2: float = BETA2) -> dict[str, float]:
    """Each data set's P, R, F-beta, F1, IoU at ``threshold`` (:func:`metrics_at_threshold`), averaged
    over the data sets: every set counts equally, as in :func:`pooled_summary`."""
    rows = [metrics_at_threshold(sweep, threshold, beta2) for sweep in sweeps.values()]
    return {key: float(np.mean([row[key] for row in rows])) for key in ("precision", "recall", "f_beta", "f1", "iou")}


def merge_sweeps(sweeps: Iterable[ThresholdSweep]) -> ThresholdSweep:
    """One sweep holding every image of ``sweeps`` (same thresholds and tolerance): pooled by pixels."""
    sweeps = list(sweeps)
    if not sweeps:
        raise ValueError("merge_sweeps needs at least one sweep")
    first = sweeps[0]
    merged = ThresholdSweep(first.n_thresholds, first.tolerance_px)
    for sweep in sweeps:
        if sweep.n_thresholds != first.n_thresholds or sweep.tolerance_px != first.tolerance_px:
            raise ValueError("sweeps to merge must share n_thresholds and tolerance_px")
        merged._per_image.extend(sweep._per_image)
        merged._at_half += sweep._at_half
    return merged


def pooled_summary(sweeps: Mapping[str, ThresholdSweep], beta2: float = BETA2) -> dict:
    """Metrics over several data sets in which every data set counts equally (not every pixel).

    ``ods_f`` is the best, over one threshold shared by all data sets, of the mean of their F-beta
    at that threshold (``ods_threshold``): the single decision threshold a deployed model has. The
    other keys are the means of the data sets' own values (``mean_ods_f``: each at its own best
    threshold, an upper bound no single threshold reaches). One data set: its plain summary.
    """
    if not sweeps:
        raise ValueError("pooled_summary needs at least one sweep")
    if len(sweeps) == 1:
        return next(iter(sweeps.values())).summary(beta2)
    summaries = {name: sweep.summary(beta2) for name, sweep in sweeps.items()}
    curves = [_prf_arrays(*(c.astype(float) for c in sweep.totals()), beta2)[2] for sweep in sweeps.values()]
    mean_f = np.mean(curves, axis=0)
    best = int(np.argmax(mean_f))
    first = next(iter(sweeps.values()))
    pooled = {key: float(np.mean([s[key] for s in summaries.values()]))
              for key in ("precision", "recall", "f_beta", "f1", "iou", "ois_f", "ap")}
    return {
        **pooled,
        "ods_f": float(mean_f[best]),
        "ods_threshold": float(first.thresholds[best]),
        "mean_ods_f": float(np.mean([s["ods_f"] for s in summaries.values()])),
        "beta2": float(beta2),
        "tolerance_px": first.tolerance_px,
        "n_images": sum(s["n_images"] for s in summaries.values()),
        "n_sources": len(sweeps),
    }


def _best_f(totals: np.ndarray, beta2: float) -> np.ndarray:
    """Best F over the thresholds of data-set counts ``totals`` (..., 3, thresholds: tp, fp, fn)."""
    return _prf_arrays(totals[..., 0, :], totals[..., 1, :], totals[..., 2, :], beta2)[2].max(axis=-1)


def ods_of_counts(counts: np.ndarray, beta2: float = BETA2) -> np.ndarray:
    """ODS F of per-image counts: ``counts`` (..., images, 3, thresholds) summed over the images, best F over
    the thresholds; one value per leading index (a float for images x 3 x thresholds)."""
    return _best_f(np.asarray(counts, dtype=float).sum(axis=-3), beta2)


def _f_at(totals: np.ndarray, index: int | None, beta2: float) -> np.ndarray:
    """F of data-set counts ``totals`` (..., 3, thresholds) at threshold ``index``, or the best over the
    thresholds (ODS) where ``index`` is None."""
    if index is None:
        return _best_f(totals, beta2)
    return _prf_arrays(totals[..., 0, index], totals[..., 1, index], totals[..., 2, index], beta2)[2]


def paired_bootstrap_f(counts_a: np.ndarray, counts_b: np.ndarray, *, at_a: int | None = None,
                       at_b: int | None = None, resamples: int = 2000, seed: int = 0, beta2: float = BETA2,
                       chunk: int = 200) -> dict[str, float]:
    """How sure is "B's F differs from A's" on these images? Paired bootstrap over images.

    ``counts_a`` / ``counts_b``: images x 3 x thresholds (tp, fp, fn; :meth:`ThresholdSweep.per_image_counts`)
    of two models on the same images in the same order. Each model is scored at its own best threshold (ODS,
    as ``train.evaluate`` reports it) where ``at_a`` / ``at_b`` is None, else at that index of the threshold
    grid (the threshold the model is used at). Each resample draws the images with replacement, the same
    draw for both models, and recomputes both F. Returns ``f_a``, ``f_b``, ``diff`` (B - A on all images),
    ``ci_low`` / ``ci_high`` (the 2.5 / 97.5 percentiles of the resampled differences), ``p_b_below`` (share
    of resamples where B < A) and ``resamples``.
    """
    a, b = np.asarray(counts_a), np.asarray(counts_b)
    if a.shape != b.shape or a.ndim != 3 or a.shape[1] != 3 or a.shape[0] == 0:
        raise ValueError(f"paired counts must both be images x 3 x thresholds with images > 0, got {a.shape} and {b.shape}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    for name, index in (("at_a", at_a), ("at_b", at_b)):
        if index is not None and not 0 <= index < a.shape[2]:
            raise ValueError(f"{name} must index the {a.shape[2]} thresholds, got {index}")
    rng = np.random.default_rng(seed)
    n = a.shape[0]
    diffs = []
    for start in range(0, resamples, chunk):
        draw = rng.integers(0, n, size=(min(chunk, resamples - start), n))
        weights = np.stack([np.bincount(row, minlength=n) for row in draw]).astype(float)  # resamples x images
        # weighted sums over images == the resampled images' sums
        diffs.append(_f_at(np.einsum("ri,ict->rct", weights, b.astype(float)), at_b, beta2)
                     - _f_at(np.einsum("ri,ict->rct", weights, a.astype(float)), at_a, beta2))
    d = np.concatenate(diffs)
    f_a = float(_f_at(a.astype(float).sum(axis=0), at_a, beta2))
    f_b = float(_f_at(b.astype(float).sum(axis=0), at_b, beta2))
    return {"f_a": f_a, "f_b": f_b, "diff": f_b - f_a, "ci_low": float(np.percentile(d, 2.5)),
            "ci_high": float(np.percentile(d, 97.5)), "p_b_below": float(np.mean(d < 0)), "resamples": int(resamples)}


def paired_bootstrap_ods(counts_a: np.ndarray, counts_b: np.ndarray, *, resamples: int = 2000, seed: int = 0,
                         beta2: float = BETA2, chunk: int = 200) -> dict[str, float]:
    """:func:`paired_bootstrap_f` with each model at its own best threshold, its F named ``ods_a`` / ``ods_b``."""
    r = paired_bootstrap_f(counts_a, counts_b, resamples=resamples, seed=seed, beta2=beta2, chunk=chunk)
    return {"ods_a": r.pop("f_a"), "ods_b": r.pop("f_b"), **r}


def _at_or_above(counts_per_level: np.ndarray) -> np.ndarray:
    """Pixels reaching threshold k (k = 1..n) from per-level counts: reverse cumulative sum."""
    return np.cumsum(counts_per_level[::-1])[::-1][1:]


def average_precision(precision: np.ndarray, recall: np.ndarray) -> float:
    """Area under a PR curve by step interpolation: sum over thresholds of (R_k - R_k+1) P_k.

    ``precision``/``recall`` ordered by ascending threshold (recall non-increasing), with R = 0
    appended after the highest threshold; the same rule as scikit-learn's ``average_precision_score``,
    evaluated on the threshold grid (no interpolation, so no optimistic trapezoids).
    """
    recall = np.asarray(recall, float)
    steps = recall - np.append(recall[1:], 0.0)
    return float(np.sum(steps * np.asarray(precision, float)))
