"""Several data sets at once: balanced sampling, per-source splits and tables, evaluation on a data set's
own split, and a run cut by the wall-clock budget that resumes to exactly the uninterrupted weights."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_small_crackforest

from contract.image_tiles import seeded_subset
from train.config import ConfigError, TrainConfig
from train.data import CrackImages, CropRecipe, TrainCrops, fit_small_image
from train.evaluate import main as evaluate_main
from train.run import main as run_main
from train.sampling import epoch_plan
from train.sources import source_shares

TINY = ["--width", "4", "--size", "64", "--workers", "0", "--no-progress", "--lr", "1e-3", "--overlays", "1"]


@pytest.fixture(scope="module")
def two_sets(shared_data, tmp_path_factory) -> tuple[Path, Path]:
    """12 quarter-size CrackForest pairs (no splits/) and 14 real GAPs384 crops with their own splits/."""
    root = tmp_path_factory.mktemp("multi")
    cfd = write_small_crackforest(shared_data, root / "cfd_small")
    gaps = root / "gaps_small"
    (gaps / "images").mkdir(parents=True)
    (gaps / "masks").mkdir()
    (gaps / "splits").mkdir()
    src = shared_data / "gaps384"
    chosen = {}
    for split, count in (("train", 8), ("val", 3), ("test", 3)):
        stems = (src / "splits" / f"{split}.txt").read_text().split()[:count]
        chosen[split] = stems
        for stem in stems:
            image = next((src / "images").glob(stem + ".*"))
            (gaps / "images" / image.name).write_bytes(image.read_bytes())
            (gaps / "masks" / f"{stem}.png").write_bytes((src / "masks" / f"{stem}.png").read_bytes())
        (gaps / "splits" / f"{split}.txt").write_text("\n".join(stems) + "\n")
    return cfd, gaps


def history_without_seconds(run: Path) -> list[dict]:
    with (run / "history.csv").open() as handle:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(handle)]


def test_balanced_shares_ignore_set_sizes_and_plan_uses_every_image():
    shares = source_shares("balanced", {"big": 5000, "small": 300})
    assert shares == {"big": 0.5, "small": 0.5}
    assert source_shares("images", {"a": 300, "b": 100}) == {"a": 0.75, "b": 0.25}
    assert source_shares({"a": 3, "b": 1}, {"a": 10, "b": 10}) == {"a": 0.75, "b": 0.25}
    src, item = epoch_plan({"big": 0.5, "small": 0.5}, {"big": 5000, "small": 3}, 100, seed=1, epoch=2)
    assert np.bincount(src).tolist() == [50, 50]
    # the 3-image source repeats its images evenly (every image before any twice)
    assert sorted(np.bincount(item[src == 1]).tolist()) == [16, 17, 17]
    again = epoch_plan({"big": 0.5, "small": 0.5}, {"big": 5000, "small": 3}, 100, seed=1, epoch=2)
    assert np.array_equal(src, again[0]) and np.array_equal(item, again[1])
    assert not np.array_equal(src, epoch_plan({"big": 0.5, "small": 0.5}, {"big": 5000, "small": 3}, 100, 1, 3)[0])


def test_small_images_mirror_keeps_labels_and_pad_marks_the_fill_invalid():
    image = np.zeros((40, 30, 3), np.uint8)
    mask = np.zeros((40, 30), np.uint8)
    mask[:, 5] = 1  # a vertical crack
    image[:, 5] = 200
    mirrored, mirrored_mask, valid = fit_small_image(image, mask, 64, "mirror")
    assert mirrored.shape[:2] == (64, 64) and valid is None
    assert (mirrored[mirrored_mask == 1] == 200).all() and mirrored_mask.sum() > mask.sum()
    data = CrackImages(["a"], [image], [mask])
    crops = TrainCrops(data, CropRecipe(64, small_images="pad"), seed=0)
    _, _, pad_valid = crops.crop(0)
    assert pad_valid.mean() == pytest.approx(40 * 30 / 64**2)
    resized, resized_mask, _ = fit_small_image(image, mask, 64, "resize")
    assert min(resized.shape[:2]) == 64 and resized_mask.any()


def test_train_on_two_data_sets_writes_a_per_source_table(two_sets, tmp_path, capsys):
    cfd, gaps = two_sets
    out = tmp_path / "run"
    assert run_main(["--data", str(cfd), "--data", str(gaps), *TINY, "--epochs", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "cfd_small" in printed and "gaps_small" in printed and "pooled (mean)" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["sources"]) == {"cfd_small", "gaps_small"}
    assert metrics["sources"]["gaps_small"]["n_images"] == 3  # its own splits/test.txt
    assert metrics["sources"]["cfd_small"]["n_images"] == 2  # seeded 20 % of 12
    assert metrics["n_images"] == 5 and metrics["ods_f"] <= metrics["mean_ods_f"] + 1e-9
    # each source's split recorded in its own folder; the data set's own files are copied as they are
    recorded = (out / "splits" / "gaps_small" / "test.txt").read_text().split()
    assert recorded == (gaps / "splits" / "test.txt").read_text().split()
    assert (out / "splits" / "cfd_small" / "train.txt").is_file()
    history = (out / "history.csv").read_text().splitlines()
    assert int(history[1].split(",")[2]) == 9 + 8  # one epoch = every training image of both sets once
    assert any(p.name.startswith("gaps_small_") for p in (out / "overlays").iterdir())


def test_evaluate_uses_the_data_sets_own_split_and_prints_a_table(two_sets, tmp_path, capsys):
    cfd, gaps = two_sets
    run = tmp_path / "cfd_only"
    assert run_main(["--data", str(cfd), *TINY, "--epochs", "1", "--out", str(run)]) == 0
    capsys.readouterr()
    # a model trained on one set, scored on another set that has its own splits/: its test split wins
    assert evaluate_main(["--model", str(run / "best.pt"), "--data", f"{cfd},{gaps}", "--no-progress",
                          "--out", str(tmp_path / "eval")]) == 0
    printed = capsys.readouterr().out
    assert "gaps_small" in printed and "pooled (mean)" in printed
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["sources"]["gaps_small"]["n_images"] == 3
    assert metrics["sources"]["cfd_small"]["n_images"] == 2  # the run folder's recorded seeded split
    assert (tmp_path / "eval" / "gaps_small" / "metrics.json").is_file()
    # --max-images: a seeded subset per data set, recorded
    assert evaluate_main(["--model", str(run / "best.pt"), "--data", f"{cfd},{gaps}", "--no-progress",
                          "--max-images", "2", "--overlays", "0", "--out", str(tmp_path / "eval2")]) == 0
    metrics = json.loads((tmp_path / "eval2" / "metrics.json").read_text())
    assert metrics["sources"]["gaps_small"]["n_images"] == 2 and metrics["max_images"] == 2


def test_seeded_subset_is_stable_ordered_and_whole_when_small():
    stems = [f"s{i}" for i in range(50)]
    a, b = seeded_subset(stems, 7, seed=3), seeded_subset(stems, 7, seed=3)
    assert a == b and len(a) == 7 and a == sorted(a, key=stems.index)
    assert seeded_subset(stems, 7, seed=4) != a
    assert seeded_subset(stems, 0) == stems and seeded_subset(stems, 80) == stems


def test_time_budget_stops_after_each_step_and_resume_reaches_the_uninterrupted_weights(two_sets, tmp_path):
    cfd, gaps = two_sets
    # with the cosine schedule: the learning rate of every step must survive the cuts too
    args = ["--data", str(cfd), "--data", str(gaps), *TINY, "--epochs", "2", "--max-steps-per-epoch", "3",
            "--batch", "2", "--overlays", "0", "--lr-schedule", "cosine", "--lr-min", "1e-5"]
    assert run_main([*args, "--out", str(tmp_path / "straight")]) == 0
    # a budget this small stops after every step: the run completes over several invocations
    code = run_main([*args, "--time-budget-min", "0.00001", "--out", str(tmp_path / "pieces")])
    invocations = 1
    while code == 75:
        code = run_main(["--resume", str(tmp_path / "pieces" / "last.pt"), "--no-progress"])
        invocations += 1
        assert invocations < 20
    assert code == 0 and invocations >= 6  # 2 epochs x 3 steps, one step per invocation
    straight = torch.load(tmp_path / "straight" / "best.pt", weights_only=False)
    pieces = torch.load(tmp_path / "pieces" / "best.pt", weights_only=False)
    assert straight["epoch"] == pieces["epoch"]
    for key, value in straight["state_dict"].items():
        assert torch.equal(value, pieces["state_dict"][key]), key
    assert history_without_seconds(tmp_path / "straight") == history_without_seconds(tmp_path / "pieces")
    lrs = [float(row["lr"]) for row in csv.DictReader((tmp_path / "pieces" / "history.csv").open())]
    assert lrs[0] < 1e-3 and lrs[-1] == pytest.approx(1e-5)  # the last step's rate


def test_cosine_schedule_runs_from_lr_to_lr_min_and_constant_stays():
    cosine = TrainConfig(data=("x",), lr=1e-3, lr_schedule="cosine", lr_min=1e-5)
    rates = [cosine.learning_rate(step, 11) for step in range(11)]
    assert rates[0] == pytest.approx(1e-3) and rates[-1] == pytest.approx(1e-5)
    assert rates[5] == pytest.approx((1e-3 + 1e-5) / 2)
    assert all(a > b for a, b in zip(rates, rates[1:], strict=False))
    assert {TrainConfig(data=("x",), lr=1e-3).learning_rate(s, 11) for s in range(11)} == {1e-3}
    with pytest.raises(ConfigError, match="--lr-min must be between 0 and --lr"):
        TrainConfig(data=("x",), lr=1e-3, lr_schedule="cosine", lr_min=1e-2)


def test_bad_source_options_name_the_flag(two_sets, tmp_path, capsys):
    cfd, gaps = two_sets
    assert run_main(["--data", str(cfd), *TINY, "--source-weights", "nosuch=1", "--out", str(tmp_path / "a")]) == 2
    assert "--source-weights names nosuch" in capsys.readouterr().err
    assert run_main(["--data", str(cfd), *TINY, "--source-weights", "cfd_small=x", "--out", str(tmp_path / "b")]) == 2
    assert "--source-weights" in capsys.readouterr().err
    assert run_main(["--data", f"{cfd},{cfd}", *TINY, "--out", str(tmp_path / "c")]) == 2
    assert "two data sets are named 'cfd_small'" in capsys.readouterr().err


def test_init_starts_from_a_checkpoints_weights_widens_to_a_multiple_and_refuses_another_shape(two_sets, tmp_path, capsys):
    cfd, _ = two_sets
    first = tmp_path / "first"
    assert run_main(["--data", str(cfd), *TINY, "--epochs", "1", "--max-steps-per-epoch", "1", "--out", str(first)]) == 0
    from train.checkpoint import initial_weights
    from train.model import build_model

    model = build_model(4, "deep")
    initial_weights(first / "best.pt", model)
    stored = torch.load(first / "best.pt", weights_only=False)["state_dict"]
    assert all(torch.equal(v, stored[k]) for k, v in model.state_dict().items())
    capsys.readouterr()
    odd = [a if a != "4" else "6" for a in TINY]  # not a whole multiple of 4: cannot be widened
    assert run_main(["--data", str(cfd), *odd, "--epochs", "1", "--init", str(first / "best.pt"),
                     "--out", str(tmp_path / "second")]) == 2
    assert "does not fit this model" in capsys.readouterr().err
    wider = [a if a != "4" else "8" for a in TINY]
    assert run_main(["--data", str(cfd), *wider, "--epochs", "1", "--max-steps-per-epoch", "1",
                     "--init", str(first / "best.pt"), "--out", str(tmp_path / "third")]) == 0
    assert "width 4 widened to 8" in capsys.readouterr().out


def test_synthetic_share_of_an_epoch_is_generated_and_deterministic(shared_data):
    from train.data import list_samples, load_images
    from train.synth import SynthSource

    samples = list_samples(shared_data / "deepcrack")
    stems = sorted(samples)[:6]
    data = load_images(samples, stems)
    synthetic = SynthSource.from_training_images([data], seed=0)
    assert 0 < len(synthetic) <= 6
    crops = TrainCrops(data, CropRecipe(64), seed=3, n_draws=40, extras=[(synthetic, 0.25)])
    crops.set_epoch(1)
    generated = [d for d in range(len(crops)) if crops.source_of(d) == 1]
    assert len(generated) == 10  # 25 % of 40 draws
    first = crops.crop(generated[0])
    again = TrainCrops(data, CropRecipe(64), seed=3, n_draws=40, extras=[(synthetic, 0.25)])
    again.set_epoch(1)
    for a, b in zip(first, again.crop(generated[0]), strict=True):
        assert np.array_equal(a, b)
    assert first[0].shape == (64, 64, 3) and set(np.unique(first[1])) <= {0, 1} and first[2].all()


def test_aelf_at_a_high_lr_starts_with_bce_and_resumes_at_the_same_switch(two_sets, tmp_path, capsys):
    from train.config import TrainConfig
    from train.loop import bce_warmup_steps
    from train.losses import WarmupLoss, build_loss

    config = TrainConfig(data=("x",), loss="aelf", lr=1e-3)
    assert bce_warmup_steps(config, 30) == 30  # auto: one epoch
    assert bce_warmup_steps(config.with_(lr=1e-4), 30) == 0
    assert bce_warmup_steps(config.with_(loss="bce"), 30) == 0
    assert bce_warmup_steps(config.with_(bce_warmup_steps=5), 30) == 5
    logits = torch.randn(1, 1, 8, 8)
    target = (torch.rand(1, 1, 8, 8) > 0.8).float()
    loss = WarmupLoss(build_loss("aelf"), warmup_steps=2)
    values = [float(loss(logits, target)) for _ in range(3)]
    assert values[0] == values[1] == pytest.approx(float(build_loss("bce")(logits, target)))
    assert values[2] == pytest.approx(float(build_loss("aelf")(logits, target)))
    resumed = WarmupLoss(build_loss("aelf"), warmup_steps=2, start_step=2)
    assert float(resumed(logits, target)) == pytest.approx(values[2])
    cfd, _ = two_sets
    assert run_main(["--data", str(cfd), *[a for a in TINY if a != "--no-progress"], "--loss", "aelf", "--epochs", "1",
                     "--max-steps-per-epoch", "2", "--out", str(tmp_path / "aelf")]) == 0
    assert "BCE for the first 2 steps, then aelf" in capsys.readouterr().out


def test_the_generator_draws_the_structure_families_the_run_names(shared_data):
    from train.config import TrainConfig
    from train.data import list_samples, load_images
    from train.loop import _training_crops
    from train.sources import Source

    samples = list_samples(shared_data / "deepcrack")
    data = load_images(samples, sorted(samples)[:4])
    source = Source("deepcrack", shared_data / "deepcrack", samples, None)  # its splits are not read here
    config = TrainConfig(data=(str(shared_data / "deepcrack"),), size=64, synth_fraction=0.25,
                         synth_structure_families="line_family,straight_shadow")
    crops = _training_crops(config, [source], [data])
    generator = crops.extras[0]
    assert generator.config.structure_families == ("line_family", "straight_shadow")
    default = _training_crops(config.with_(synth_structure_families=TrainConfig.default("synth_structure_families")),
                              [source], [data])
    assert default.extras[0].config.structure_families == ("tile_grid", "formwork", "chamfer", "paint_line")
