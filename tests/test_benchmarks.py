"""The benchmark helpers count what they claim, and the inference/training benchmarks run end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import bench_inference, bench_train
from benchmarks.common import conv2d_flops, interleaved_latencies, quantile, unet_conv_flops
from train.model import build_model


def test_conv_flops_match_a_hand_count() -> None:
    # 3 -> 16 channels, 3x3 kernel, 512 x 512 output: each output value is 3 * 9 multiply-adds,
    # 16 * 512 * 512 outputs, 2 FLOPs per multiply-add.
    hand = 2 * (3 * 3 * 3) * (16 * 512 * 512)
    assert hand == 226_492_416
    assert conv2d_flops(3, 16, 3, 512, 512) == hand
    conv = torch.nn.Conv2d(3, 16, 3, padding=1)
    with FlopCounterMode(display=False) as counter:
        conv(torch.zeros(1, 3, 512, 512, device="meta"))
    assert counter.get_total_flops() == hand


@pytest.mark.parametrize("head", ["deep", "shallow"])
@pytest.mark.parametrize("width,size", [(4, 64), (8, 32)])
def test_unet_flops_match_torch_counter_on_the_real_model(head: str, width: int, size: int) -> None:
    """The analytic count walks the same conv shapes the model executes (torch counts them independently)."""
    model = build_model(width, head).to("meta")
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, size, size, device="meta"))
    assert unet_conv_flops(width, head, size) == counter.get_total_flops()


def test_paper_size_flops_scale_with_width_squared_and_area() -> None:
    w16, w64 = unet_conv_flops(16, "deep", 512), unet_conv_flops(64, "deep", 512)
    assert 15.5 < w64 / w16 < 16.1  # all but the 3-channel first conv and the 2->1 conv scale with width^2
    assert unet_conv_flops(16, "deep", 256) * 4 == w16
    with pytest.raises(ValueError, match="multiple of 16"):
        unet_conv_flops(16, "deep", 500)


def test_quantile_matches_numpy() -> None:
    values = [5.0, 1.0, 3.0, 2.0, 4.0, 10.0, 0.5]
    for q in (0.0, 0.5, 0.9, 0.99, 1.0):
        assert quantile(values, q) == pytest.approx(float(np.quantile(values, q)))


def test_interleaved_rounds_rotate_the_order_and_time_every_variant() -> None:
    order: list[str] = []
    variants = {name: (lambda n=name: order.append(n)) for name in "abc"}
    timings = interleaved_latencies(variants, rounds=3, round_seconds=0.0, warmup_calls=1, progress=False)
    assert order == list("abc") + list("abc") + list("bca") + list("cab")  # warm-up, then rotated rounds
    for times in (timings.wall, timings.cpu):
        assert all(len(v) == 3 and min(v) >= 0 for v in times.values())


def test_bench_inference_appends_its_table(shared_data: Path, tmp_path: Path, capsys) -> None:
    results = tmp_path / "RESULTS.md"
    argv = ["--widths", "4", "--size", "32", "--cpu-batches", "1", "2", "--rounds", "1", "--round-seconds", "0",
            "--calib-tiles", "2", "--peak-n", "64", "--threads", "1", "--no-progress",
            "--data", str(shared_data / "deepcrack"), "--results", str(results)]
    assert bench_inference.main(argv) == 0
    text = results.read_text()
    assert "python -m benchmarks.bench_inference --widths 4" in text
    for variant in ("torch CPU eager fp32", "ORT CPU fp32", "ORT CPU int8"):
        assert sum(line.startswith(f"| 4 | {variant} |") for line in text.splitlines()) == 2  # batches 1 and 2
    assert "GOP/s (int8)" in text and "load average" in text
    assert "torch.matmul 64x64 fp32" in text and "onnxruntime MatMul 64x64 fp32" in text
    flops = f"{unet_conv_flops(4, 'deep', 32) / 1e9:.1f}"
    assert f"| {flops} |" in text


def test_bench_train_appends_its_table(shared_data: Path, tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    argv = ["--widths", "4", "8", "--size", "32", "--steps", "1", "--rounds", "1", "--warmup-steps", "1",
            "--images", "2", "--threads", "1", "--peak-n", "64", "--no-progress", "--device", "cpu",
            "--data", str(shared_data / "deepcrack"), "--results", str(results)]
    assert bench_train.main(argv) == 0
    text = results.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| w")]
    assert [row.split(" | ")[0] for row in rows] == ["| w4 fp32", "| w8 fp32"]
    assert "(300 images)" in text  # the DeepCrack train split's size drives the projection
    assert float(rows[0].split(" | ")[2]) > 0


def test_bench_train_explains_a_missing_split(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        bench_train.main(["--data", str(tmp_path), "--no-append"])
    assert "splits/train.txt" in capsys.readouterr().err


def test_each_throughput_is_compared_with_the_peak_of_its_own_precision() -> None:
    """On CUDA, FP32 convolutions run as TF32 by cuDNN's default: their peak is the TF32 matmul's, not
    true FP32's (that mismatch read 152 % of peak on an H200). Autocast variants meet their own dtype."""
    from benchmarks.common import conv_precision, matmul_peak

    assert conv_precision("off", "cuda", True) == "tf32"
    assert conv_precision("off", "cuda", False) == "fp32"
    assert conv_precision("off", "cpu", True) == "fp32"
    assert [conv_precision(a, "cuda", True) for a in ("bf16", "fp16")] == ["bf16", "fp16"]
    with pytest.raises(ValueError, match="amp must be"):
        conv_precision("int8", "cuda", True)
    with pytest.raises(ValueError, match="peak precision"):
        matmul_peak(8, "cpu", "float32")
    run, flops = matmul_peak(8, "cpu", "bf16")
    run()
    assert flops == 2 * 8**3
    peaks = bench_train.train_peaks(["fp32"], 16, "cpu", 1)
    assert sorted(peaks) == ["onnxruntime MatMul 16x16 fp32", "torch.matmul 16x16 fp32"]
    assert {p for _, _, p in peaks.values()} == {"fp32"}
    rates = dict(zip(peaks, (5.0, 7.0), strict=True))
    assert bench_train.best_per_precision(peaks, rates) == {"fp32": 7.0}


def test_the_gpu_variants_run_a_copy_and_leave_the_cpu_module_where_it_is() -> None:
    """bench_inference moved the caller's module to the GPU, so its CPU eager variant then failed on
    every CUDA machine. The 'meta' device stands in for CUDA here: a real device move, no GPU needed."""
    from train.model import build_model

    unet = build_model(4)
    moved = bench_inference.on_device(unet, "meta")
    assert next(unet.parameters()).device.type == "cpu"
    assert next(moved.parameters()).device.type == "meta" and not moved.training


def test_bench_joints_decides_every_tile_both_ways(shared_data: Path, tmp_path: Path) -> None:
    from benchmarks import bench_joints
    from train.structures import FAMILIES

    results = tmp_path / "RESULTS.md"
    assert bench_joints.main(["--sources", "deepcrack", "--max-images", "1", "--no-progress",
                              "--data-root", str(shared_data), "--results", str(results)]) == 0
    text = results.read_text()
    assert "python -m benchmarks.bench_joints --sources deepcrack" in text
    for family in ("none", *FAMILIES):
        row = next(line for line in text.splitlines() if line.startswith(f"| {family} |"))
        assert row.count("(0/1)") + row.count("(1/1)") == 2, row  # one tile, decided off and on
    assert "| **held-out families, pooled** | | " in text and "recall <= 2 px" in text
    real = next(line for line in text.splitlines() if line.startswith("| deepcrack | 1 | "))  # real straight pieces
    marked, kept_off, kept_on = (int(cell.split()[0]) for cell in real.split("|")[3:6])
    assert kept_on <= kept_off <= marked  # the check only removes; the cleaned mask never adds a piece
    # off is the model alone; on is the daemon's own default check (120 px, share 0.85, support ratio 0.5)
    assert "Straight check off: threshold" in text and "straight_min_length_px 105 (share 0.85, support ratio 0.5, smooth lines 0.75 px, grid segments 20 px)" in text
    assert text.count("straight_min_length_px") == 1, "the off column has no straight check"
    assert "test split of deepcrack" in text and "Real straight structures of the test images" in text
    # validation images, the check's smooth-line part off: what settings are chosen on
    val = tmp_path / "VAL.md"
    assert bench_joints.main(["--sources", "deepcrack", "--max-images", "1", "--no-progress", "--split", "val",
                              "--smooth-line-tolerance-px", "0", "--data-root", str(shared_data), "--flips", "2",
                              "--results", str(val)]) == 0
    text = val.read_text()
    assert "val split of deepcrack" in text and "Real straight structures of the val images" in text
    assert "Every tile predicted 2 times, mirrored, and averaged (model.flips 2)." in text
    assert "Every tile predicted 4 times, mirrored, and averaged (model.flips 4)." in results.read_text()  # the daemon's default
    assert "support ratio 0.5, smooth lines 0 px, grid segments 20 px)" in text
    assert bench_joints.main(["--max-images", "0", "--no-append"]) == 2
    assert bench_joints.main(["--upsample", "0.5", "--no-append"]) == 2
    assert bench_joints.main(["--skip-families", "patch_edge,no_such_family", "--no-append"]) == 2


def test_bench_joints_skips_a_blind_family_and_keeps_the_others_draws(shared_data: Path) -> None:
    """A held-out family kept blind is neither drawn nor reported; every other family draws the same tile."""
    from benchmarks import bench_joints
    from benchmarks.bench_generalization import AlertDecider, load_source_split
    from train.structures import FAMILIES

    images = load_source_split(shared_data / "crackforest_cfd", "val", {}, 1, None)  # one image that inpaints
    drawn: list[tuple[int, float]] = []

    def predict(tile: np.ndarray) -> np.ndarray:
        drawn.append((tile.shape[0], float(tile.astype(np.float64).sum())))
        return np.zeros(tile.shape[:2], np.float32)

    decider = AlertDecider.from_config(0.5, None)
    deciders = {"off": decider.with_measure(straight_min_length_px=0.0), "on": decider}
    families = list(FAMILIES)
    every, *_ = bench_joints.score_source(predict, images, 0, deciders, 0, families)
    all_draws = list(drawn)
    drawn.clear()
    fewer, *_ = bench_joints.score_source(predict, images, 0, deciders, 0, families, frozenset({"brick_bond"}))
    assert "brick_bond" in every and "brick_bond" not in fewer and set(every) - set(fewer) == {"brick_bond"}
    assert len(drawn) == len(all_draws) - 1
    skipped_at = 2 + families.index("brick_bond")  # the whole image, "none", then the families in order
    assert drawn == all_draws[:skipped_at] + all_draws[skipped_at + 1:]


def test_bench_dead_network_reports_each_seed_and_variant(shared_data: Path, tmp_path: Path) -> None:
    """The code path only (width 4, 2 steps): the paper's width-64 figures take minutes per seed."""
    from benchmarks import bench_dead_network

    results = tmp_path / "RESULTS.md"
    assert bench_dead_network.main(["--seeds", "1", "--steps", "2", "--size", "32", "--width", "4", "--val-images", "1",
                                    "--data", str(shared_data / "deepcrack"), "--results", str(results)]) == 0
    text = results.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and "| 0 |" in line]
    assert [row.split(" | ")[0] for row in rows] == ["| paper init", "| alive init without clipping", "| shipped defaults"]
    assert "python -m benchmarks.bench_dead_network --seeds 1" in text and "seeds die" in text
    assert bench_dead_network.main(["--variants", "mine", "--no-append"]) == 2


def test_mosaic_fills_a_full_hd_frame_with_the_maps_in_turn() -> None:
    from benchmarks.bench_measure import mosaic

    a, b = np.full((300, 700), 0.25, np.float32), np.full((200, 500), 0.75, np.float32)
    frame = mosaic([a, b], (1080, 1920))
    assert frame.shape == (1080, 1920) and frame.dtype == np.float32
    assert frame[0, 0] == 0.25 and frame[0, 700] == 0.75 and frame[0, 1200] == 0.25  # a, b, a along a row
    assert frame[250, 800] == 0.0  # below the shorter map of the row: nothing drawn
    assert frame[1079, 1919] in (0.0, 0.25, 0.75)
    corner = mosaic([a, b], (1080, 1920), fill=False)  # only the first map, top left
    assert corner[:300, :700].min() == 0.25 and corner[300:].max() == 0.0 and corner[:, 700:].max() == 0.0
    with pytest.raises(ValueError, match="at least one"):
        mosaic([])


def test_bench_measure_times_every_variant_on_real_maps(shared_data: Path, tmp_path: Path) -> None:
    from benchmarks import bench_measure

    results = tmp_path / "RESULTS.md"
    assert bench_measure.main(["--sources", "deepcrack", "--max-images", "2", "--rounds", "1", "--round-seconds", "0.05",
                               "--no-progress", "--data-root", str(shared_data), "--results", str(results)]) == 0
    text = results.read_text()
    assert "python -m benchmarks.bench_measure --sources deepcrack" in text
    for variant in bench_measure.VARIANTS:
        rows = [line for line in text.splitlines() if f"| {variant} |" in line]
        assert len(rows) == 3, variant  # own-size images, dense and sparse full-HD frames
    assert all(line.endswith("| 1.00 |") for line in text.splitlines() if "| no straight check |" in line)
    assert bench_measure.main(["--max-images", "0", "--no-append"]) == 2
    assert bench_measure.main(["--sources", "nonexistent", "--data-root", str(shared_data), "--no-append"]) == 2


def test_bench_flips_times_each_model_at_one_two_and_four_passes(shared_data: Path, tmp_path: Path) -> None:
    from benchmarks import bench_flips

    results = tmp_path / "RESULTS.md"
    assert bench_flips.main(["--tiles", "2", "--batch", "1", "--rounds", "1", "--round-seconds", "0", "--threads", "1",
                             "--no-progress", "--data", str(shared_data / "deepcrack"), "--results", str(results)]) == 0
    text = results.read_text()
    assert "python -m benchmarks.bench_flips --tiles 2" in text and "A full-HD frame is 15 tiles of 512 px." in text
    rows = [line.split("|")[1:-1] for line in text.splitlines() if line.startswith("| demo_model")]
    assert [(r[0].strip(), r[1].strip(), r[2].strip()) for r in rows] == [
        (m, p, f) for m, p in (("demo_model.onnx", "fp32"), ("demo_model.int8.onnx", "int8")) for f in ("1", "2", "4")]
    for r in rows:
        assert float(r[3]) > 0
        assert (r[4].strip() == "1.00x") == (r[2].strip() == "1")
    assert bench_flips.main(["--models", str(tmp_path / "none.onnx"), "--no-append"]) == 2
