"""Recall by crack width, crack-free / crack tiles, and the generalization benchmark's plan, tables and --model run."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from benchmarks import bench_generalization as bench
from benchmarks.generalization import (
    WidthRecall,
    crack_free_tiles,
    crack_tiles,
    largest_free_square,
    recall_by_width,
    width_bins_of_mask,
    width_map,
)

REPO = Path(__file__).resolve().parents[1]


def line_and_bar(height: int = 48, width: int = 64) -> tuple[np.ndarray, slice, slice]:
    """A 1-px horizontal line (row 8) and a 7-px bar (rows 20-26), both across the whole frame."""
    mask = np.zeros((height, width), bool)
    mask[8, :] = True
    mask[20:27, :] = True
    return mask, slice(8, 9), slice(20, 27)


def test_widths_of_a_line_a_bar_and_the_bin_edges() -> None:
    mask, line, bar = line_and_bar()
    mask[36:41, :] = True  # a 5-px bar: exactly on the 2-5 px bin's upper edge
    widths = width_map(mask)
    assert np.all(widths[line] == 1.0)
    assert np.all(widths[bar] == 7.0)
    assert np.all(widths[36:41] == 5.0)
    assert np.all(widths[~mask] == 0.0)
    bins = width_bins_of_mask(mask)
    assert np.all(bins[line] == 0) and np.all(bins[36:41] == 1) and np.all(bins[bar] == 2)
    assert np.all(bins[~mask] == -1)


def test_a_wide_cracks_border_reads_its_width_not_a_bumps() -> None:
    """A 1-px bump on a 9-px bar's border is part of the wide crack: the bar's pixels keep width 9."""
    mask = np.zeros((40, 60), bool)
    mask[10:19, :] = True
    mask[9, 30] = True  # bump
    widths = width_map(mask)
    assert np.all(widths[10:19] == 9.0)


def test_recall_per_width_bin_is_exact_and_accumulates() -> None:
    mask, line, bar = line_and_bar()
    pred = np.zeros_like(mask)
    pred[line] = True  # finds the whole line
    pred[23, :32] = True  # and the bar's centre row over half its length
    one = recall_by_width(pred, mask)
    assert one.total.tolist() == [64, 0, 7 * 64]
    assert one.found.tolist() == [64, 0, 32]
    assert one.recall[0] == 1.0 and np.isnan(one.recall[1]) and one.recall[2] == pytest.approx(32 / 448)
    both = one + recall_by_width(np.zeros_like(mask), mask)
    assert both.total.tolist() == [128, 0, 896] and both.found.tolist() == [64, 0, 32]
    assert both.labels == ["<= 2 px", "2-5 px", "> 5 px"]


def test_tolerance_finds_crack_pixels_within_t_pixels() -> None:
    mask, line, bar = line_and_bar()
    pred = np.zeros_like(mask)
    pred[10, :] = True  # 2 px below the line
    pred[23, :] = True  # the bar's centre row: rows 21-25 lie within 2 px, rows 20 and 26 do not
    assert recall_by_width(pred, mask, tolerance_px=0).found.tolist() == [0, 0, 64]
    assert recall_by_width(pred, mask, tolerance_px=1).found.tolist() == [0, 0, 3 * 64]
    assert recall_by_width(pred, mask, tolerance_px=2).found.tolist() == [64, 0, 5 * 64]


def test_bad_inputs_name_the_problem() -> None:
    mask, _, _ = line_and_bar()
    with pytest.raises(ValueError, match="differs from mask shape"):
        recall_by_width(np.zeros((4, 4), bool), mask)
    with pytest.raises(ValueError, match="positive and increasing"):
        width_bins_of_mask(mask, edges=(5, 2))
    with pytest.raises(ValueError, match="different bin edges"):
        WidthRecall((2.0, 5.0)) + WidthRecall((3.0,))


def random_cracks(seed: int, shape: tuple[int, int] = (160, 240)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mask = np.zeros(shape, np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        points = rng.integers(0, [shape[1], shape[0]], size=(2, 2))
        cv2.line(mask, tuple(map(int, points[0])), tuple(map(int, points[1])), 1, int(rng.integers(1, 6)))
    return mask.astype(bool)


@pytest.mark.parametrize("seed", range(8))
def test_crack_free_tiles_never_come_near_a_crack(seed: int) -> None:
    mask = random_cracks(seed)
    image = np.zeros(mask.shape + (3,), np.uint8)
    margin = 6
    tiles = crack_free_tiles(image, mask, tile=512, margin_px=margin, min_side_px=16)
    # distance of every pixel to the nearest crack pixel
    to_crack = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    assert tiles, "a 160 x 240 frame with 1-3 thin lines has a crack-free square of 16 px"
    sides = {t.side for t in tiles}
    assert len(sides) == 1 and 16 <= sides.pop() <= 160
    occupied = np.zeros(mask.shape, np.int32)
    for t in tiles:
        assert t.image.shape[:2] == (t.side, t.side)
        assert t.cut(to_crack).min() > margin
        occupied[t.y : t.y + t.side, t.x : t.x + t.side] += 1
    assert occupied.max() == 1  # tiles do not overlap


def test_crack_free_tiles_take_the_largest_square_capped_at_the_tile() -> None:
    image = np.zeros((256, 256, 3), np.uint8)
    empty = np.zeros((256, 256), bool)
    tiles = crack_free_tiles(image, empty, tile=128, margin_px=8)
    assert sorted((t.y, t.x, t.side) for t in tiles) == [(0, 0, 128), (0, 128, 128), (128, 0, 128), (128, 128, 128)]
    cracked = empty.copy()
    cracked[:, 100] = True  # free: columns 0-91 and 109-255 (8 px margin)
    assert largest_free_square(cv2.dilate(cracked.astype(np.uint8), np.ones((17, 17), np.uint8)) > 0) == 147
    assert [t.side for t in crack_free_tiles(image, cracked, tile=512, margin_px=8)] == [147]
    assert crack_free_tiles(image, cracked, tile=512, margin_px=8, min_side_px=148) == []


def test_crack_tiles_hold_enough_crack_pixels() -> None:
    image = np.zeros((100, 250, 3), np.uint8)
    mask = np.zeros((100, 250), bool)
    mask[50, 0:90] = True  # 90 px in the first 100-px square, none in the others
    mask[10:20, 240] = True  # 10 px in the last square (flush with the right edge at x = 150)
    tiles = crack_tiles(image, mask, tile=512, min_crack_px=20)
    assert [(t.y, t.x, t.side) for t in tiles] == [(0, 0, 100)]
    assert [(t.x) for t in crack_tiles(image, mask, tile=512, min_crack_px=5)] == [0, 150]


def test_loso_plan_trains_without_each_source_and_once_on_all(tmp_path: Path) -> None:
    jobs = bench.loso_jobs(["a", "b", "c"])
    assert [(j.name, j.train_sources) for j in jobs] == [
        ("without-a", ("b", "c")), ("without-b", ("a", "c")), ("without-c", ("a", "b")), ("all", ("a", "b", "c"))]
    start = bench.train_command(jobs[0], tmp_path / "data", tmp_path / "work" / "without-a", ["--epochs", "1"], 30.0)
    assert start[1:] == ["-m", "train.run", "--data", str(tmp_path / "data" / "b"), "--data", str(tmp_path / "data" / "c"),
                         "--out", str(tmp_path / "work" / "without-a"), "--epochs", "1", "--time-budget-min", "30.00"]
    run = tmp_path / "work" / "without-a"
    run.mkdir(parents=True)
    (run / "last.pt").write_bytes(b"")
    resume = bench.train_command(jobs[0], tmp_path / "data", run, ["--epochs", "1"], None)
    assert resume[1:] == ["-m", "train.run", "--resume", str(run / "last.pt"), "--out", str(run)]
    with pytest.raises(bench.BenchError, match="two distinct"):
        bench.loso_jobs(["a", "a"])


def test_finished_runs_are_skipped(tmp_path: Path) -> None:
    jobs = bench.loso_jobs(["a", "b"])
    for job in jobs:
        (tmp_path / job.name).mkdir()
        (tmp_path / job.name / "best.pt").write_bytes(b"")
        (tmp_path / job.name / "metrics.json").write_text("{}")
    log: list[str] = []
    assert bench.train_all(jobs, data_root=tmp_path, work=tmp_path, train_args=[], budget_min=None, log=log.append) == []
    assert log == [f"{j.name}: finished earlier, skipped" for j in jobs]


def test_loso_table_rows_and_means() -> None:
    def score(name: str, ods: float) -> bench.SourceScore:
        metrics = {t: {"ods_f": ods + t / 10, "ois_f": ods, "ap": ods} for t in (0, 2)}
        return bench.SourceScore(name, 5, metrics)

    table = bench.loso_table({"a": score("a", 0.8), "b": score("b", 0.6)},
                             {"a": score("a", 0.5), "b": score("b", 0.2)}, (0, 2))
    lines = table.splitlines()
    assert lines[2] == "| a | 5 | 0 px | 0.800 | 0.800 | 0.800 | 0.500 | 0.500 | 0.500 | -0.300 |"
    assert lines[4] == "| **mean of 2** | | 0 px | 0.700 | 0.700 | 0.700 | 0.350 | 0.350 | 0.350 | -0.350 |"
    assert lines[7] == "| **mean of 2** | | 2 px | 0.900 | 0.700 | 0.700 | 0.550 | 0.350 | 0.350 | -0.350 |"


@pytest.mark.slow
def test_model_mode_scores_real_images_and_appends(shared_data: Path, tmp_path: Path) -> None:
    model = REPO / "edge" / "assets" / "demo_model.onnx"
    results, figures = tmp_path / "RESULTS.md", tmp_path / "figures.json"
    argv = ["--model", str(model), "--data-root", str(shared_data), "--sources", "gaps384,shadowcrack",
            "--max-images", "1", "--no-progress", "--results", str(results), "--json", str(figures)]
    assert bench.main(argv) == 0
    text = results.read_text()
    assert "python -m benchmarks.bench_generalization --model" in text
    for source in ("gaps384", "shadowcrack"):
        assert sum(line.startswith(f"| {source} | ") for line in text.splitlines()) == 4  # metrics, alerts, 2 widths
    assert "| **pooled** |" in text and "crack-free tiles: alert rate" in text
    assert "| 0-127 px |" in text and "| >= 256 px |" in text  # the pooled rates by tile side
    import json

    payload = json.loads(figures.read_text())
    gaps = payload["sources"][0]
    assert gaps["name"] == "gaps384" and gaps["n_images"] == 1
    assert 0.0 <= gaps["metrics"]["0"]["ods_f"] <= gaps["metrics"]["2"]["ods_f"] <= 1.0
    widths = gaps["recall_by_width"]["2"]
    assert sum(widths["total"]) == int((cv2.imread(str(next((shared_data / "gaps384" / "masks").glob(
        (shared_data / "gaps384" / "splits" / "test.txt").read_text().split()[0] + ".*"))), 0) > 127).sum())
    assert gaps["alerts"]["crack"]["tiles"] == 1  # a 133 x 133 crop holding a crack is one crack tile


def test_model_mode_names_a_missing_source(shared_data: Path, capsys) -> None:
    argv = ["--model", str(REPO / "edge" / "assets" / "demo_model.onnx"), "--data-root", str(shared_data),
            "--sources", "gaps384,no_such_set", "--no-append"]
    assert bench.main(argv) == 2
    assert "no_such_set not found under" in capsys.readouterr().err


def test_alert_rates_split_by_tile_side_and_merge() -> None:
    a, b = bench.AlertRate(), bench.AlertRate()
    for fired, side in ((True, 100), (False, 100), (True, 300)):
        a.add(fired, side)
    b.add(True, 127)
    both = a.merged(b)
    assert (both.fired, both.tiles) == (3, 4)
    small = both.by_side(0, 128)
    assert (small.fired, small.tiles, small.rate) == (2, 3, 2 / 3)
    assert both.by_side(128, 256).tiles == 0 and math.isnan(both.by_side(128, 256).rate)
    assert (both.by_side(256, math.inf).fired, both.by_side(256, math.inf).tiles) == (1, 1)


def test_image_f_beta_counts_an_empty_image_as_right_and_a_miss_as_zero() -> None:
    from benchmarks.overlay_sheet import image_f_beta

    empty = np.zeros((8, 8), np.uint8)
    crack = empty.copy()
    crack[4, :] = 1
    assert image_f_beta(np.zeros((8, 8)), empty, 0.5) == 1.0
    assert image_f_beta(np.zeros((8, 8)), crack, 0.5) == 0.0
    assert image_f_beta(crack.astype(float), crack, 0.5) == pytest.approx(1.0)
    half = np.zeros((8, 8))
    half[4, :4] = 1.0  # precision 1, recall 0.5
    assert image_f_beta(half, crack, 0.5) == pytest.approx(1.3 * 0.5 / (0.3 + 0.5))


def test_overlay_sheet_shows_a_typical_and_the_worst_image_per_set(shared_data: Path, tmp_path: Path) -> None:
    from benchmarks import overlay_sheet

    out = tmp_path / "sheet.jpg"
    model = REPO / "edge" / "assets" / "demo_model.onnx"
    assert overlay_sheet.main(["--model", str(model), "--data", f"{shared_data / 'gaps384'},{shared_data / 'aiglern_trimm'}",
                               "--max-images", "3", "--out", str(out)]) == 0
    sheet = cv2.imread(str(out))
    assert sheet is not None and sheet.shape[0] == 2 * (overlay_sheet.CELL_HEIGHT + overlay_sheet.CAPTION_HEIGHT) + 8


def test_width_sweep_reads_recall_by_width_at_any_threshold() -> None:
    """One pass over the images gives, at each grid threshold, exactly recall_by_width of prob >= t (0 px)."""
    from contract.widths import WidthSweep

    rng = np.random.default_rng(3)
    sweep = WidthSweep()
    images = []
    for _ in range(3):
        mask = np.zeros((60, 80), np.uint8)
        cv2.line(mask, (5, 10), (75, 20), 1, 1)
        cv2.line(mask, (5, 40), (75, 35), 1, 4)
        cv2.circle(mask, (40, 50), 7, 1, -1)
        prob = rng.random(mask.shape).astype(np.float32)
        sweep.update(prob, mask)
        images.append((prob, mask))
    for t in (0.1, 0.37, 0.5, 0.93):
        want = sum((recall_by_width(p >= round(t, 2), m) for p, m in images), WidthRecall((2.0, 5.0)))
        got = sweep.recall_at(t)
        assert got.total.tolist() == want.total.tolist() and got.found.tolist() == want.found.tolist(), t
    with pytest.raises(ValueError, match="differs from mask shape"):
        sweep.update(np.zeros((5, 5)), np.zeros((6, 6)))
