"""contract.metrics.paired_bootstrap_ods: a model against itself, a model better on every image, bad input;
ods_of_counts agrees with ThresholdSweep."""

from __future__ import annotations

import numpy as np
import pytest

from contract.metrics import ThresholdSweep, ods_of_counts, paired_bootstrap_ods


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
