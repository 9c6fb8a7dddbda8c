"""contract.metrics.paired_bootstrap_ods / paired_bootstrap_f: a model against itself, a model better on every
image, each model at the threshold it is used at, bad input; ods_of_counts agrees with ThresholdSweep."""

from __future__ import annotations

import numpy as np
import pytest

from contract.metrics import (
    ThresholdSweep,
    metrics_at_threshold,
    ods_of_counts,
    paired_bootstrap_f,
    paired_bootstrap_ods,
)


def sweep_of(seed: int, n_images: int = 12, noise: float = 0.3) -> ThresholdSweep:
    rng = np.random.default_rng(seed)
    sweep = ThresholdSweep()
    for i in range(n_images):
        target = np.zeros((40, 40), bool)
        target[10 + i % 5, 5:35] = True
        prob = np.clip(target * 0.5 + rng.random((40, 40)) * noise, 0, 1)
        sweep.update(prob, target)
    return sweep


def test_ods_of_counts_is_the_sweeps_ods():
    sweep = sweep_of(0)
    assert float(ods_of_counts(sweep.per_image_counts())) == pytest.approx(sweep.summary()["ods_f"], abs=1e-12)


def test_a_model_against_itself_differs_by_nothing():
    counts = sweep_of(1).per_image_counts()
    r = paired_bootstrap_ods(counts, counts, resamples=300, seed=3)
    assert r["diff"] == 0 and r["ci_low"] == 0 and r["ci_high"] == 0 and r["p_b_below"] == 0


def test_a_model_better_on_every_image_is_surely_better_and_the_draw_is_seeded():
    # the same noise, scaled down: every image is at least as well separated
    worse, better = sweep_of(2, noise=0.9).per_image_counts(), sweep_of(2, noise=0.6).per_image_counts()
    r = paired_bootstrap_ods(worse, better, resamples=500, seed=1)
    assert r["diff"] > 0 and r["ci_low"] > 0 and r["p_b_below"] == 0
    assert paired_bootstrap_ods(worse, better, resamples=500, seed=1) == r
    flipped = paired_bootstrap_ods(better, worse, resamples=500, seed=1)
    assert flipped["ci_high"] < 0 and flipped["p_b_below"] == 1.0


def test_bad_counts_are_refused():
    counts = sweep_of(4).per_image_counts()
    with pytest.raises(ValueError, match="images x 3 x thresholds"):
        paired_bootstrap_ods(counts, counts[:5])
    with pytest.raises(ValueError, match="resamples"):
        paired_bootstrap_ods(counts, counts, resamples=0)
    assert ThresholdSweep().per_image_counts().shape == (0, 3, 99)


def test_f_at_a_used_threshold_is_the_f_of_that_thresholds_counts():
    sweep = sweep_of(5)
    counts = sweep.per_image_counts()
    index = 10  # threshold 0.11 of the 0.01 grid: some noise above it
    r = paired_bootstrap_f(counts, counts, at_a=index, at_b=index, resamples=200, seed=0)
    at = metrics_at_threshold(sweep, 0.11)
    assert r["f_a"] == pytest.approx(at["f_beta"], abs=1e-12) and r["diff"] == 0 and r["ci_low"] == 0
    assert r["f_a"] < float(ods_of_counts(counts)), "a threshold other than the best scores below the ODS"


def test_the_threshold_used_can_reverse_what_ods_says():
    # A: excellent at a threshold it is not used at (index 2), poor at the one it is (index 0);
    # B: the same moderate F at every threshold
    images = 30
    a = np.zeros((images, 3, 3), np.int64)
    a[:, :, 0] = (50, 50, 50)   # tp, fp, fn: F ~ 0.5
    a[:, :, 2] = (95, 2, 5)     # F ~ 0.97
    a[:, :, 1] = (70, 20, 30)
    b = np.tile(np.array([80, 15, 20])[None, :, None], (images, 1, 3))
    best = paired_bootstrap_f(a, b, resamples=300, seed=2)
    used = paired_bootstrap_f(a, b, at_a=0, at_b=0, resamples=300, seed=2)
    assert best["diff"] < 0 and best["ci_high"] < 0, "by ODS B is below A"
    assert used["diff"] > 0 and used["ci_low"] > 0, "at the thresholds used B is above A"
    assert paired_bootstrap_ods(a, b, resamples=300, seed=2)["ods_a"] == pytest.approx(best["f_a"])


def test_a_threshold_index_off_the_grid_is_refused():
    counts = sweep_of(6).per_image_counts()
    with pytest.raises(ValueError, match="at_b must index the 99 thresholds"):
        paired_bootstrap_f(counts, counts, at_a=0, at_b=99)
