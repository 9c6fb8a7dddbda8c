"""Training: a tiny model overfits real crack crops, the CLI writes every output, same seed -> same run,
resume reaches the uninterrupted result, grid search / repeats / ablation / torchrun produce their files."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import write_small_crackforest
from torch.utils.data import DataLoader, RandomSampler

from train.ablation import main as ablation_main
from train.data import CrackImages, TrainCrops, list_samples, load_pair
from train.inference import sweep_images, torch_predictor, torch_predictor_with_single_pass
from train.loop import train_one_epoch
from train.losses import build_loss
from train.model import build_model
from train.run import main as run_main

REPO = Path(__file__).resolve().parents[1]
TINY = ["--width", "4", "--size", "64", "--workers", "0", "--no-progress", "--lr", "1e-3"]


@pytest.fixture(scope="module")
def tiny_cfd(shared_data, tmp_path_factory) -> Path:
    """12 real CrackForest pairs at 1/4 size (120 x 80): a data set without splits/."""
    return write_small_crackforest(shared_data, tmp_path_factory.mktemp("cfd") / "cfd_small")


def rows_without_seconds(path: Path) -> list[dict]:
    with path.open() as handle:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(handle)]


def metrics_without_run_details(path: Path) -> dict:
    data = json.loads(path.read_text())
    return {k: v for k, v in data.items() if k not in ("seconds", "checkpoint")}


def test_tiny_model_overfits_real_crack_crops(shared_data):
    """The issue's check: width 8, 3 real 96 x 96 crack crops, 200 Adam steps -> F-beta > 0.9 on them."""
    torch.manual_seed(0)
    samples = list_samples(shared_data / "crackforest_cfd")
    images, masks = [], []
    for stem in ("001", "002", "003"):
        image, mask = load_pair(samples[stem])
        ys, xs = np.nonzero(mask)
        y0 = int(np.clip(np.median(ys) - 48, 0, mask.shape[0] - 96))
        x0 = int(np.clip(np.median(xs) - 48, 0, mask.shape[1] - 96))
        images.append(image[y0 : y0 + 96, x0 : x0 + 96].copy())
        masks.append(mask[y0 : y0 + 96, x0 : x0 + 96].copy())
    data = CrackImages(["001", "002", "003"], images, masks)
    assert all(m.mean() > 0.02 for m in masks)  # the crops do hold cracks
    dataset = TrainCrops(data, 96, augment=None)
    loader = DataLoader(dataset, batch_size=3, sampler=RandomSampler(dataset, replacement=True, num_samples=600))
    # He-normal everywhere: the open-gate head (the default) starts as one constant and, measured at
    # width 8, reaches only F-beta 0.862 (AP 0.930) in these 200 steps; this test checks the loop
    model = build_model(8, "deep", init="he")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    device = torch.device("cpu")
    before = sweep_images(torch_predictor(model, device), data).summary()["f_beta"]
    loss, steps = train_one_epoch(model, loader, build_loss("bce"), optimizer, scaler, device, None, epoch=1)
    after = sweep_images(torch_predictor(model, device), data).summary()
    assert steps == 200 and np.isfinite(loss)
    assert before < 0.5 and after["f_beta"] > 0.9, (before, after)


def test_cli_smoke_run_writes_every_output(tiny_cfd, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_main(["--data", str(tiny_cfd), *TINY, "--epochs", "2", "--out", str(out), "--overlays", "2"]) == 0
    for name in ("config.json", "history.csv", "last.pt", "best.pt", "metrics.json", "pr_curve.png", "pr_curve.csv",
                 "splits/train.txt", "splits/val.txt", "splits/test.txt"):
        assert (out / name).is_file(), name
    assert len(list((out / "overlays").glob("*.png"))) == 2
    splits = {n: (out / "splits" / f"{n}.txt").read_text().split() for n in ("train", "val", "test")}
    assert [len(splits[n]) for n in ("train", "val", "test")] == [9, 1, 2]  # 12 images: 80 % x 90 %, 10 %, 20 %
    history = rows_without_seconds(out / "history.csv")
    assert [int(r["epoch"]) for r in history] == [1, 2] and all(r["val_ods_f"] for r in history)
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("precision", "recall", "f_beta", "f1", "iou", "ods_f", "ods_threshold", "ois_f", "ap", "threshold",
                "n_images", "data", "split", "seconds", "device"):
        assert key in metrics, key
    assert metrics["n_images"] == 2 and metrics["split"] == "test" and metrics["data"] == "cfd_small"
    best_val = [r for r in history if int(r["epoch"]) == metrics["best_epoch"]][0]
    assert metrics["threshold"] == pytest.approx(float(best_val["val_ods_threshold"]))  # threshold chosen on val
    # validation also gives recall by crack width at its threshold (kept with best.pt's metrics)
    by_width = torch.load(out / "best.pt", map_location="cpu", weights_only=False)["metrics"]["recall_by_width"]
    assert list(by_width) == ["<= 2 px", "2-5 px", "> 5 px"]
    assert all(r is None or 0.0 <= r <= 1.0 for r in by_width.values()) and any(r is not None for r in by_width.values())
    config = json.loads((out / "config.json").read_text())
    assert config["width"] == 4 and config["loss"] == "aelf" and config["split_source"] == "seed 0"
    assert cv2.imread(str(out / "pr_curve.png")) is not None
    assert "test: precision" in capsys.readouterr().out


def test_same_seed_same_history_and_metrics(tiny_cfd, tmp_path):
    args = ["--data", str(tiny_cfd), *TINY, "--epochs", "1", "--seed", "7", "--overlays", "0"]
    assert run_main([*args, "--out", str(tmp_path / "a")]) == 0
    assert run_main([*args, "--out", str(tmp_path / "b")]) == 0
    assert rows_without_seconds(tmp_path / "a" / "history.csv") == rows_without_seconds(tmp_path / "b" / "history.csv")
    assert metrics_without_run_details(tmp_path / "a" / "metrics.json") == metrics_without_run_details(
        tmp_path / "b" / "metrics.json"
    )


def test_resume_continues_to_the_uninterrupted_result(tiny_cfd, tmp_path):
    args = ["--data", str(tiny_cfd), *TINY, "--max-steps-per-epoch", "4", "--overlays", "0"]
    assert run_main([*args, "--epochs", "3", "--out", str(tmp_path / "straight")]) == 0
    assert run_main([*args, "--epochs", "1", "--out", str(tmp_path / "split")]) == 0
    assert run_main(["--resume", str(tmp_path / "split" / "last.pt"), "--epochs", "3", "--no-progress"]) == 0
    straight = torch.load(tmp_path / "straight" / "last.pt", weights_only=False)
    resumed = torch.load(tmp_path / "split" / "last.pt", weights_only=False)
    assert resumed["epoch"] == 3
    for key, value in straight["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key
    assert rows_without_seconds(tmp_path / "straight" / "history.csv") == rows_without_seconds(
        tmp_path / "split" / "history.csv"
    )


def test_bad_flags_give_a_message_not_a_traceback(tiny_cfd, tmp_path, capsys):
    assert run_main(["--data", str(tiny_cfd), *TINY, "--size", "50", "--out", str(tmp_path / "x")]) == 2
    assert "--size must be a multiple of 16" in capsys.readouterr().err
    assert run_main(["--data", str(tmp_path / "missing"), *TINY, "--out", str(tmp_path / "y")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_grid_search_then_retrain_and_repeats(tiny_cfd, tmp_path, capsys):
    out = tmp_path / "grid"
    args = ["--data", str(tiny_cfd), *TINY, "--epochs", "1", "--max-steps-per-epoch", "2", "--overlays", "0"]
    assert run_main([*args, "--grid-search", "--grid=-0.07,0.07", "--repeats", "2", "--out", str(out)]) == 0
    with (out / "grid.csv").open() as handle:
        grid = list(csv.DictReader(handle))
    assert {(float(r["gamma1"]), float(r["gamma2"])) for r in grid} == {(a, b) for a in (-0.07, 0.07) for b in (-0.07, 0.07)}
    best = json.loads((out / "grid.json").read_text())
    assert best["val_score"] == pytest.approx(max(float(r["val_score"]) for r in grid), abs=1e-6)
    assert f"best gamma1={best['gamma1']:g}, gamma2={best['gamma2']:g}" in capsys.readouterr().out
    assert cv2.imread(str(out / "grid.png")) is not None
    summary = json.loads((out / "final" / "summary.json").read_text())
    assert summary["seeds"] == [0, 1] and summary["metrics"]["ods_f"]["n"] == 2
    for seed in (0, 1):
        final = json.loads((out / "final" / f"seed-{seed}" / "metrics.json").read_text())
        assert (final["gamma1"], final["gamma2"]) == (best["gamma1"], best["gamma2"])
    assert "± " in (out / "final" / "summary.md").read_text()


@pytest.mark.slow
def test_ablation_writes_table_6(tiny_cfd, tmp_path, capsys):
    out = tmp_path / "ablation"
    args = ["--data", str(tiny_cfd), *TINY, "--epochs", "1", "--max-steps-per-epoch", "2", "--overlays", "0"]
    assert ablation_main([*args, "--baselines", "dice", "--gamma1", "0.03", "--out", str(out)]) == 0
    table = (out / "ablation.md").read_text()
    for label in ("shallow head (BCE)", "deep head (BCE)", "deep head + Exp (γ=0)", "deep head + AELF (γ₁=0.03, γ₂=0)",
                  "deep head + dice"):
        assert label in table, label
    report = json.loads((out / "ablation.json").read_text())
    assert [r["key"] for r in report["rows"]] == ["shallow-bce", "deep-bce", "deep-exp", "deep-aelf", "deep-dice"]
    shallow = torch.load(out / "shallow-bce" / "seed-0" / "best.pt", weights_only=False)
    assert shallow["model"]["head"] == "shallow" and shallow["train_config"]["loss"] == "bce"


@pytest.mark.slow
def test_torchrun_two_cpu_processes(tiny_cfd, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "train.run", "--data", str(tiny_cfd), *TINY, "--epochs", "1", "--device", "cpu",
           "--overlays", "1", "--out", str(out)]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("history.csv", "best.pt", "last.pt", "metrics.json", "pr_curve.png"):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert config["world_size"] == 2
    history = rows_without_seconds(out / "history.csv")
    assert len(history) == 1 and int(history[0]["steps"]) == 5  # 9 training images split over 2 ranks, batch 1
    assert done.stdout.count("test: precision") == 1  # only rank 0 reports


def test_torchrun_mines_hard_negatives_once_for_both_ranks(tiny_cfd, tmp_path):
    """--hard-negative-fraction under DDP: rank 0 mines into the run folder, every rank reads that file."""
    start = tmp_path / "start"
    assert run_main(["--data", str(tiny_cfd), *TINY, "--epochs", "1", "--overlays", "0", "--out", str(start)]) == 0
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "train.run", "--data", str(tiny_cfd), *TINY, "--epochs", "1", "--device", "cpu", "--overlays", "0",
           "--init", str(start / "best.pt"), "--hard-negative-fraction", "0.3", "--hard-negative-shape", "all",
           "--hard-negative-threshold", "0.01", "--out", str(out)]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("false-positive sites from") == 1, done.stdout  # mined once, by rank 0
    assert (out / "hard_negatives.json").is_file() and json.loads((out / "config.json").read_text())["world_size"] == 2


def test_ablation_help_offers_only_flags_it_has(capsys):
    with pytest.raises(SystemExit):
        ablation_main(["--help"])
    text = capsys.readouterr().out
    assert "--resume" not in text and "--time-budget-min" not in text
    assert "--data" in text and "--baselines" in text


def test_eval_tile_validates_and_tests_through_the_daemons_tiler(tiny_cfd, tmp_path, capsys):
    """--eval-tile N: validation and the final test predict as the daemon does (N-px tiles, stitched),
    so epochs are chosen on what ships; the figures then equal an ONNX export scored at that tile."""
    from contract.metadata import ModelMetadata
    from contract.predict import predict_frame
    from train.torch_backend import TorchBackend

    torch.manual_seed(0)
    model = build_model(4, init="he").eval()  # He-normal everywhere: an output that varies before training
    image = (np.random.default_rng(0).random((80, 120, 3)) * 255).astype(np.uint8)
    tiled = torch_predictor(model, torch.device("cpu"), tile=64)(image)
    daemon = predict_frame(TorchBackend.from_module(model, ModelMetadata(input_size=64), device="cpu"), image[..., ::-1])
    whole = torch_predictor(model, torch.device("cpu"))(image)
    assert tiled.shape == whole.shape == (80, 120) and np.array_equal(tiled, daemon)
    assert not np.allclose(tiled, whole, atol=1e-4), "the tiler sees mirrored context, not zero padding"
    out = tmp_path / "tiled"
    assert run_main(["--data", str(tiny_cfd), *TINY, "--epochs", "1", "--eval-tile", "64", "--overlays", "0",
                     "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["eval_tile"] == 64
    assert run_main(["--data", str(tiny_cfd), *TINY, "--eval-tile", "40", "--out", str(tmp_path / "bad")]) == 2
    assert "--eval-tile must be 0 (whole images) or a multiple of 16, got 40" in capsys.readouterr().err


@pytest.mark.parametrize("tile", [64, 0])
def test_validation_at_n_passes_reads_the_single_pass_from_the_same_passes(tile):
    """--eval-flips N scores the single pass (the threshold of model.flips = 1) on the unmirrored pass the
    N-pass average already ran: both maps equal their own predictors', at N network passes, not N + 1."""
    torch.manual_seed(0)
    model = build_model(4, init="he").eval()
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    image = (np.random.default_rng(1).random((80, 120, 3)) * 255).astype(np.uint8)
    cpu = torch.device("cpu")
    averaged, single = torch_predictor_with_single_pass(model, cpu, tile=tile, flips=4)(image)
    paired_calls = len(calls)
    calls.clear()
    expected_averaged = torch_predictor(model, cpu, tile=tile, flips=4)(image)
    assert len(calls) == paired_calls > 0
    np.testing.assert_array_equal(averaged, expected_averaged)
    np.testing.assert_array_equal(single, torch_predictor(model, cpu, tile=tile)(image))
    assert not np.allclose(single, averaged, atol=1e-4)  # the two readings differ: a real check


def test_eval_flips_chooses_and_thresholds_on_the_daemons_passes(tiny_cfd, tmp_path, capsys):
    """--eval-flips N: validation and the final test average N mirrored passes as the daemon's model.flips
    does; best.pt keeps the single-pass threshold and records the N-pass one, and both reach the metadata
    that export writes, the evaluation and the daemon read."""
    from contract.backends.flips import FlipAveraged
    from contract.metadata import ModelMetadata
    from contract.onnx_file import load_onnx, read_metadata
    from contract.predict import predict_frame
    from export.onnx import main as export_main
    from train.checkpoint import load_model, metadata_from_checkpoint
    from train.config import ConfigError, TrainConfig
    from train.evaluate import load_predictor
    from train.torch_backend import TorchBackend

    torch.manual_seed(0)
    model = build_model(4, init="he").eval()
    image = (np.random.default_rng(0).random((80, 120, 3)) * 255).astype(np.uint8)
    four = torch_predictor(model, torch.device("cpu"), tile=64, flips=4)(image)
    backend = FlipAveraged(TorchBackend.from_module(model, ModelMetadata(input_size=64), device="cpu"), 4)
    assert np.array_equal(four, predict_frame(backend, image[..., ::-1]))
    assert not np.allclose(four, torch_predictor(model, torch.device("cpu"), tile=64)(image), atol=1e-4)

    out = tmp_path / "flips"
    assert run_main(["--data", str(tiny_cfd), *TINY, "--epochs", "1", "--eval-tile", "64", "--eval-flips", "2",
                     "--overlays", "0", "--out", str(out)]) == 0
    _, payload = load_model(out / "best.pt", torch.device("cpu"))
    val = payload["metrics"]
    assert val["flips"] == 2 and set(payload["flip_thresholds"]) == {2}
    assert payload["flip_thresholds"][2] == val["ods_threshold"]
    assert payload["threshold"] == val["one_pass"]["ods_threshold"], "model.flips = 1 keeps a single-pass threshold"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["flips"] == 2 and metrics["threshold"] == payload["flip_thresholds"][2]
    assert metrics["threshold_source"].endswith("at 2 passes")
    meta = metadata_from_checkpoint(payload)
    assert (meta.threshold, meta.threshold_for(2)) == (payload["threshold"], pytest.approx(val["ods_threshold"]))
    assert load_predictor(out / "best.pt", device="cpu", flips=2)[1]["threshold"] == pytest.approx(val["ods_threshold"])
    onnx_path = tmp_path / "flips.onnx"
    assert export_main(["--checkpoint", str(out / "best.pt"), "--out", str(onnx_path), "--size", "64"]) == 0
    exported = read_metadata(load_onnx(onnx_path), source=str(onnx_path))
    assert exported.threshold_for(2) == pytest.approx(val["ods_threshold"])
    assert exported.threshold == pytest.approx(payload["threshold"])

    with pytest.raises(ConfigError, match="--eval-flips must be one of 1, 2, 4"):
        TrainConfig(data=["x"], eval_flips=3)
    with pytest.raises(SystemExit):
        run_main(["--data", str(tiny_cfd), *TINY, "--eval-flips", "3", "--out", str(tmp_path / "bad")])
    capsys.readouterr()


def test_best_pt_keeps_the_single_pass_threshold_and_records_the_averaged_one():
    from contract.metadata import DEFAULT_THRESHOLD
    from train.loop import best_thresholds

    four = {"flips": 4, "ods_threshold": 0.42, "one_pass": {"ods_threshold": 0.44, "ods_f": 0.6, "ap": 0.6}}
    assert best_thresholds(four) == (0.44, {"flip_thresholds": {4: 0.42}})
    assert best_thresholds({"flips": 1, "ods_threshold": 0.37}) == (0.37, {})
    assert best_thresholds(None) == (DEFAULT_THRESHOLD, {})
    from train.checkpoint import CheckpointError, metadata_from_checkpoint

    meta = metadata_from_checkpoint({"threshold": 0.44, "flip_thresholds": {4: 0.42}, "model": {"width": 4}})
    assert (meta.threshold, meta.threshold_for(4), meta.threshold_for(2)) == (0.44, 0.42, 0.44)
    with pytest.raises(CheckpointError, match="checkpoint"):
        metadata_from_checkpoint({"threshold": 0.44, "flip_thresholds": {"four": 0.42}})
