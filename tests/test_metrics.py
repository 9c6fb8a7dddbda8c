"""Metrics: hand-counted confusion matrices, the sweep against a naive loop, tolerance, ODS/OIS/AP, speed."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from contract.metrics import BETA2, ThresholdSweep, confusion, disc, prf
from train.report import plot_pr_curves


def test_confusion_hand_counted():
    pred = np.array([[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 1]], bool)
    target = np.array([[1, 0, 0, 0], [0, 1, 1, 1], [0, 0, 0, 0]], bool)
    # tp: (0,0) (1,1) (1,2); fp: (0,1) (2,3); fn: (1,3)
    assert confusion(pred, target) == (3, 2, 1)
    assert confusion(pred, np.zeros_like(target)) == (0, 5, 0)
    assert confusion(np.zeros_like(pred), target) == (0, 0, 4)
    # 0/255 masks count as crack where != 0
    assert confusion(pred.astype(np.uint8) * 255, target.astype(np.uint8) * 255) == (3, 2, 1)


def test_prf_values_and_empty_conventions():
    p, r, f = prf(3, 1, 2)
    assert (p, r) == (0.75, 0.6)
    assert f == pytest.approx(1.3 * 0.75 * 0.6 / (0.3 * 0.75 + 0.6))
    assert prf(3, 1, 2, beta2=1.0)[2] == pytest.approx(2 * 0.75 * 0.6 / 1.35)
    assert BETA2 == 0.3
    assert prf(0, 0, 0) == (1.0, 1.0, 1.0)  # no crack, nothing predicted
    assert prf(0, 0, 5) == (1.0, 0.0, 0.0)  # silent on a cracked image
    assert prf(0, 3, 0) == (0.0, 1.0, 0.0)  # false alarms on a clean image
    assert prf(0, 3, 5) == (0.0, 0.0, 0.0)


def _naive_counts(prob, target, thresholds, tolerance_px):
    """The definition, one threshold at a time."""
    return np.array([confusion(prob.astype(np.float64) >= th, target, tolerance_px) for th in thresholds]).T


def _random_images(seed: int, count: int = 4, shape=(40, 56)):
    rng = np.random.default_rng(seed)
    images = []
    for i in range(count):
        target = np.zeros(shape, bool)
        for _ in range(3):  # a few thin random lines
            pts = rng.integers(0, min(shape), size=4)
            cv2.line(target.view(np.uint8), (int(pts[0]), int(pts[1])), (int(pts[2]), int(pts[3])), 1, 1)
        prob = np.clip(0.55 * target + rng.random(shape) * 0.6 - 0.05 * i, 0, 1).astype(np.float32)
        # values exactly on thresholds and on their float32 neighbours must land on the right side
        prob[0, :9] = np.float32([0.01, 0.29, 0.5, 0.57, 0.99, 1.0, 0.0, 0.58, 0.14])
        prob[1, :3] = np.nextafter(np.float32([0.29, 0.5, 0.57]), np.float32(0))
        images.append((prob, target))
    images.append((np.round(images[0][0], 2), images[0][1]))  # quantised maps: many exact ties
    return images


@pytest.mark.parametrize("tolerance_px", [0, 1, 2])
def test_sweep_equals_naive_loop_exactly(tolerance_px):
    images = _random_images(seed=tolerance_px)
    sweep = ThresholdSweep(n_thresholds=99, tolerance_px=tolerance_px)
    for prob, target in images:
        sweep.update(prob, target)
    per_image = [_naive_counts(p, t, sweep.thresholds, tolerance_px) for p, t in images]
    naive = np.sum(per_image, axis=0)
    tp, fp, fn = sweep.totals()
    np.testing.assert_array_equal(tp, naive[0])
    np.testing.assert_array_equal(fp, naive[1])
    np.testing.assert_array_equal(fn, naive[2])
    summary = sweep.summary()
    # ODS: best data-set F over thresholds
    _, _, f = prf(*naive)
    assert summary["ods_f"] == pytest.approx(f.max())
    assert summary["ods_threshold"] == pytest.approx(sweep.thresholds[np.argmax(f)])
    # OIS: mean of each image's best F
    ois = np.mean([prf(*c)[2].max() for c in per_image])
    assert summary["ois_f"] == pytest.approx(ois)
    # at 0.5: the same counts as confusion() summed over images
    at_half = np.sum([confusion(p >= 0.5, t, tolerance_px) for p, t in images], axis=0)
    p5, r5, f5 = prf(*at_half)
    assert (summary["precision"], summary["recall"], summary["f_beta"]) == pytest.approx((p5, r5, f5))
    assert summary["f1"] == pytest.approx(prf(*at_half, beta2=1.0)[2])
    assert summary["iou"] == pytest.approx(at_half[0] / at_half.sum())
    assert summary["n_images"] == len(images)


def test_other_threshold_counts():
    images = _random_images(seed=7, count=2)
    for n in (1, 9, 254):
        sweep = ThresholdSweep(n_thresholds=n)
        for prob, target in images:
            sweep.update(prob, target)
        naive = np.sum([_naive_counts(p, t, sweep.thresholds, 0) for p, t in images], axis=0)
        np.testing.assert_array_equal(np.stack(sweep.totals()), naive)


def _line_image(offset_rows: int = 0, thickness: int = 1):
    target = np.zeros((32, 48), bool)
    target[15, 4:44] = True
    pred = np.zeros_like(target)
    top = 15 + offset_rows - thickness // 2
    pred[top : top + thickness, 4:44] = True
    return pred, target


def test_tolerance_forgives_a_one_pixel_shift():
    pred, target = _line_image(offset_rows=1)
    assert prf(*confusion(pred, target, tolerance_px=2)) == (1.0, 1.0, 1.0)
    assert prf(*confusion(pred, target, tolerance_px=0))[:2] == (0.0, 0.0)
    # a 3-px shift is beyond a 2-px tolerance
    far, _ = _line_image(offset_rows=3)
    assert confusion(far, target, tolerance_px=2) == (0, 40, 40)
    # the sweep agrees, on a probability map
    for tol, expected in [(2, 1.0), (0, 0.0)]:
        sweep = ThresholdSweep(tolerance_px=tol)
        sweep.update(pred.astype(np.float32) * 0.9, target)
        s = sweep.summary()
        assert (s["precision"], s["recall"], s["ods_f"]) == (expected, expected, expected)


def test_tolerance_does_not_reward_a_thick_prediction():
    thick, target = _line_image(thickness=3)
    tp, fp, fn = confusion(thick, target, tolerance_px=2)
    assert (tp, fp, fn) == (40, 80, 0)  # 40 one-to-one matches; tp + fp = predictions, tp + fn = cracks
    assert prf(tp, fp, fn)[:2] == (pytest.approx(1 / 3), 1.0)


def test_tolerance_is_euclidean_disc():
    assert disc(2).tolist() == [
        [0, 0, 1, 0, 0],
        [0, 1, 1, 1, 0],
        [1, 1, 1, 1, 1],
        [0, 1, 1, 1, 0],
        [0, 0, 1, 0, 0],
    ]
    target = np.zeros((9, 9), bool)
    target[4, 4] = True
    diagonal = np.zeros_like(target)
    diagonal[6, 6] = True  # distance 2.83 > 2
    assert confusion(diagonal, target, 2) == (0, 1, 1)
    diagonal[6, 6], diagonal[5, 5] = False, True  # distance 1.41
    assert confusion(diagonal, target, 2) == (1, 0, 0)


def test_ois_at_least_ods_and_perfect_predictor():
    rng = np.random.default_rng(3)
    sweep = ThresholdSweep()
    for shift in np.linspace(-0.25, 0.25, 6):  # equally good images, calibrated differently
        target = rng.random((32, 32)) > 0.9
        prob = np.clip(target * 0.3 + rng.random((32, 32)) * 0.4 + 0.3 + shift, 0, 1)
        sweep.update(prob, target)
    s = sweep.summary()
    # each image at its own best threshold beats one threshold for all (typical, not a theorem:
    # OIS averages per-image F, ODS pools the pixel counts)
    assert s["ois_f"] > s["ods_f"] > 0
    assert 0 < s["ap"] < 1
    perfect = ThresholdSweep()
    for _ in range(3):
        target = rng.random((32, 32)) > 0.8
        perfect.update(target.astype(np.float32), target)
    s = perfect.summary()
    assert s["ap"] == 1.0 and s["ods_f"] == 1.0 and s["ois_f"] == 1.0 and s["iou"] == 1.0
    precision, recall, thresholds = perfect.pr_curve()
    assert len(precision) == len(recall) == len(thresholds) == 99
    assert thresholds[0] == 0.01 and thresholds[-1] == 0.99


def test_ap_of_an_uninformative_predictor_is_the_crack_fraction():
    rng = np.random.default_rng(4)
    sweep = ThresholdSweep()
    targets = [rng.random((64, 64)) < 0.1 for _ in range(4)]
    for target in targets:
        sweep.update(rng.random((64, 64)), target)
    prevalence = np.mean(targets)
    assert sweep.summary()["ap"] == pytest.approx(prevalence, abs=0.02)
    precision, recall, _ = sweep.pr_curve()
    assert np.all(np.diff(recall) <= 0)  # recall falls as the threshold rises


def test_bad_inputs_name_the_problem():
    sweep = ThresholdSweep()
    with pytest.raises(ValueError, match=r"shape \(4, 4\) differs from target shape \(4, 5\)"):
        sweep.update(np.zeros((4, 4)), np.zeros((4, 5), bool))
    with pytest.raises(ValueError, match="without NaN"):
        sweep.update(np.full((4, 4), np.nan), np.zeros((4, 4), bool))
    with pytest.raises(ValueError, match="scale 8-bit maps by 1/255"):
        sweep.update(np.full((4, 4), 200, np.uint8), np.zeros((4, 4), bool))
    with pytest.raises(ValueError, match="H x W"):
        sweep.update(np.zeros((2, 4, 4)), np.zeros((2, 4, 4), bool))
    with pytest.raises(ValueError, match="call update"):
        sweep.summary()
    with pytest.raises(ValueError, match="tolerance_px"):
        ThresholdSweep(tolerance_px=-1)
    with pytest.raises(ValueError, match="prediction shape"):
        confusion(np.zeros((3, 3), bool), np.zeros((3, 4), bool))
    # 1 x H x W maps (a model output with its channel) are accepted
    sweep.update(np.zeros((1, 4, 4), np.float32), np.zeros((1, 4, 4), bool))
    assert sweep.n_images == 1


def test_speed_of_a_deepcrack_sized_test_set():
    """237 images of 384 x 544 (the DeepCrack test split) must not dominate an epoch."""
    rng = np.random.default_rng(5)
    distinct = [(rng.random((384, 544), dtype=np.float32), rng.random((384, 544)) > 0.96) for _ in range(8)]
    timings = {}
    for tol in (0, 2):
        sweep = ThresholdSweep(tolerance_px=tol)
        start = time.perf_counter()
        for i in range(237):
            sweep.update(*distinct[i % len(distinct)])
        sweep.summary()
        timings[tol] = time.perf_counter() - start
    print(
        f"\nThresholdSweep on 237 images 384x544: {timings[0]:.2f} s, with 2 px tolerance {timings[2]:.2f} s"
    )
    # ~0.5 s measured on one core; 20x headroom for a shared CI machine
    assert timings[0] < 10 and timings[2] < 15


def test_perfect_and_shifted_real_masks(shared_data):
    """On real DeepCrack masks: the mask scores 1; the mask shifted by 1 px needs the tolerance."""
    stems = (shared_data / "deepcrack" / "splits" / "test.txt").read_text().split()[:3]
    exact, tolerant, strict = ThresholdSweep(), ThresholdSweep(tolerance_px=2), ThresholdSweep()
    for stem in stems:
        mask = cv2.imread(str(shared_data / "deepcrack" / "masks" / f"{stem}.png"), cv2.IMREAD_GRAYSCALE)
        assert mask is not None, stem
        target = mask > 127
        shifted = np.roll(target, 1, axis=1).astype(np.float32)
        exact.update(target.astype(np.float32), target)
        tolerant.update(shifted, target)
        strict.update(shifted, target)
    assert exact.summary()["f_beta"] == 1.0
    assert tolerant.summary()["f_beta"] > 0.99
    assert strict.summary()["f_beta"] < tolerant.summary()["f_beta"] - 0.05


def test_pr_plot_is_written(tmp_path):
    rng = np.random.default_rng(6)
    sweep = ThresholdSweep()
    target = rng.random((32, 32)) > 0.9
    sweep.update(np.clip(target * 0.5 + rng.random((32, 32)) * 0.5, 0, 1), target)
    precision, recall, _ = sweep.pr_curve()
    out = plot_pr_curves(
        {"AELF": (precision, recall), "BCE": (precision * 0.9, recall)},
        tmp_path / "pr" / "c.png",
        title="test",
    )
    data = out.read_bytes()
    assert out == tmp_path / "pr" / "c.png"
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    image = cv2.imread(str(out))
    assert image is not None and image.std() > 10  # something is drawn
