"""calibration: deterministic tile draw, onnxruntime INT8 close to FP32 on real cracks, the ODS threshold."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from calibration.int8 import QuantSettings, compare, cpu_backend, quantize
from calibration.int8 import main as int8_main
from calibration.threshold import choose_pooled_threshold, choose_threshold
from calibration.threshold import main as threshold_main
from contract.image_tiles import ImageFolderError, draw_tiles, list_images
from contract.metadata import ModelMetadata
from contract.metrics import ThresholdSweep
from contract.onnx_file import OLDEST_RUNTIME_MAX_IR, read_metadata

SIZE = 64
META = ModelMetadata(width=4, input_size=SIZE)


def test_same_seed_same_tiles_and_limit_respected(shared_data):
    folder = shared_data / "deepcrack"
    a = draw_tiles(folder, META, max_tiles=12, seed=7, split="test", progress=False)
    b = draw_tiles(folder, META, max_tiles=12, seed=7, split="test", progress=False)
    c = draw_tiles(folder, META, max_tiles=12, seed=8, split="test", progress=False)
    assert len(a) == 12 and a.tiles.shape == (12, 3, SIZE, SIZE) and a.tiles.dtype == np.float32
    assert a.sources == b.sources and np.array_equal(a.tiles, b.tiles)
    assert a.sources != c.sources
    assert 0.0 <= a.tiles.min() and a.tiles.max() <= 1.0  # scaled by the metadata's 1/255
    assert len({s[0] for s in a.sources}) == 12  # a small budget spreads over many images


def test_cache_is_reused_only_for_the_same_draw(shared_data, tmp_path):
    folder, cache = shared_data / "deepcrack", tmp_path / "calib.npy"
    first = draw_tiles(folder, META, max_tiles=4, seed=0, split="test", cache=cache, progress=False)
    assert cache.is_file()
    np.save(cache, np.zeros_like(first.tiles))  # a reused cache returns what is in the file
    assert not draw_tiles(folder, META, max_tiles=4, seed=0, split="test", cache=cache, progress=False).tiles.any()
    other = draw_tiles(folder, META, max_tiles=4, seed=1, split="test", cache=cache, progress=False)
    assert other.tiles.any()  # another seed is another key: drawn again


def test_missing_split_and_empty_folder_are_named(shared_data, tmp_path):
    with pytest.raises(ImageFolderError, match=r"splits/val\.txt does not exist; available splits: \['test', 'train'\]"):
        draw_tiles(shared_data / "deepcrack", META, split="val", progress=False)
    with pytest.raises(ImageFolderError, match="no images"):
        draw_tiles(tmp_path, META, progress=False)


def test_an_unreadable_image_is_skipped_as_the_daemon_skips_it(tmp_path, caplog):
    import cv2

    rng = np.random.default_rng(0)
    cv2.imwrite(str(tmp_path / "good.png"), rng.integers(0, 255, (SIZE * 2, SIZE * 2, 3), dtype=np.uint8))
    (tmp_path / "noise.jpg").write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    tiles = draw_tiles(tmp_path, META, max_tiles=4, progress=False)
    assert len(tiles) >= 1 and {Path(s[0]).name for s in tiles.sources} == {"good.png"}
    assert any("skipping" in r.getMessage() and "noise.jpg" in r.getMessage() for r in caplog.records)
    (tmp_path / "good.png").unlink()
    with pytest.raises(ImageFolderError, match="none of the 1 images"):
        draw_tiles(tmp_path, META, max_tiles=4, progress=False)


def test_split_may_be_a_run_folders_split_file(shared_data, tmp_path):
    # a training run writes runs/<run>/splits/val.txt: calibration must be able to use exactly those images
    split_file = tmp_path / "val.txt"
    split_file.write_text("# held out by train.run\ntrain_11111\n\ntrain_11113  # second\n")
    images = list_images(shared_data / "deepcrack", str(split_file))
    assert [p.stem for p in images] == ["train_11111", "train_11113"]
    with pytest.raises(ImageFolderError, match="missing.txt does not exist"):
        list_images(shared_data / "deepcrack", str(tmp_path / "missing.txt"))


# --------------------------------------------------------------------------- INT8 on a (briefly) trained model


@pytest.fixture(scope="module")
def trained_onnx(shared_data, tmp_path_factory):
    """A width-4 U-Net trained for a few seconds on DeepCrack tiles, exported: its maps mean something.

    Layers of 4 channels can all fall below zero at lr 3e-3 (measured: seeds 0 and 1 of 4 end with a
    dead last decoder layer and a constant map); seed 2 trains, and the ODS check below says so."""
    from export.onnx import main as export_main
    from train.checkpoint import save_checkpoint
    from train.model import build_model

    torch.manual_seed(2)
    torch.set_num_threads(2)
    folder = shared_data / "deepcrack"
    train = draw_tiles(folder, META, max_tiles=96, seed=0, split="train", progress=False)
    masks = np.stack([_mask_tile(shared_data, s) for s in train.sources])
    model = build_model(4, "deep", init="he")  # the seed-2 measurement above is of He-normal weights
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    x, y = torch.from_numpy(train.tiles), torch.from_numpy(masks[:, None].astype(np.float32))
    for step in range(120):
        i = torch.randint(0, len(x), (8,), generator=torch.Generator().manual_seed(step))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x[i]), y[i], pos_weight=torch.tensor(4.0))
        opt.zero_grad()
        loss.backward()
        opt.step()
    tmp = tmp_path_factory.mktemp("int8")
    save_checkpoint(tmp / "best.pt", model, size=SIZE, data={"name": "deepcrack"})
    assert export_main(["--checkpoint", str(tmp / "best.pt"), "--out", str(tmp / "m.onnx"), "--parity-tiles", "2"]) == 0
    return tmp / "m.onnx"


def _mask_tile(shared_data, source):
    import cv2

    path, y, x = source
    mask = cv2.imread(str(shared_data / "deepcrack" / "masks" / f"{Path(path).stem}.png"), cv2.IMREAD_GRAYSCALE)
    tile = np.zeros((SIZE, SIZE), bool)
    patch = mask[y : y + SIZE, x : x + SIZE] > 127
    tile[: patch.shape[0], : patch.shape[1]] = patch
    return tile


def test_int8_runs_and_stays_close_to_fp32_on_real_cracks(trained_onnx, shared_data, tmp_path):
    folder = shared_data / "deepcrack"
    calib = draw_tiles(folder, META, max_tiles=32, seed=0, split="train", progress=False)
    held_out = draw_tiles(folder, META, max_tiles=32, seed=5, split="test", progress=False)
    out = quantize(trained_onnx, tmp_path / "m.int8.onnx", calib.tiles, QuantSettings())
    model = onnx.load(str(out))
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in model.graph.node}
    meta = read_metadata(out)
    assert meta.precision == "int8" and meta.width == 4 and meta.extra["int8_activation"] == "quint8"
    report = compare(trained_onnx, out, held_out.tiles, meta)
    assert report.mean_abs_diff < 0.02, report.describe()
    # against the ground truth, INT8 and FP32 find the same cracks
    truth = np.stack([_mask_tile(shared_data, s) for s in held_out.sources])
    f = {}
    for name, path in (("fp32", trained_onnx), ("int8", out)):
        sweep = ThresholdSweep()
        for prob, mask in zip(cpu_backend(path).infer(held_out.tiles)[:, 0], truth, strict=True):
            sweep.update(prob, mask)
        f[name] = sweep.summary()["ods_f"]
    assert f["fp32"] > 0.2, f  # the model learned something, so the comparison means something
    assert abs(f["int8"] - f["fp32"]) < 0.03, f


def test_int8_cli_writes_a_smaller_model(trained_onnx, shared_data, tmp_path, capsys):
    out = tmp_path / "cli.int8.onnx"
    code = int8_main(["--model", str(trained_onnx), "--images", str(shared_data / "deepcrack"), "--out", str(out),
                      "--max-tiles", "8", "--eval-tiles", "4"])
    assert code == 0 and out.is_file()
    assert "F-beta of INT8 vs FP32 decisions" in capsys.readouterr().out
    assert out.stat().st_size < trained_onnx.stat().st_size
    assert onnx.load(str(out)).ir_version <= OLDEST_RUNTIME_MAX_IR  # quantize_static stamps onnx's newest


# --------------------------------------------------------------------------- threshold


def test_ods_threshold_on_a_constructed_case():
    # 100 crack pixels at p=0.7 and 10 at p=0.2; 50 background pixels at p=0.3, 840 at p=0.05.
    # Any threshold in (0.3, 0.7] keeps every confident crack pixel and no background: P = 1,
    # R = 100/110, the best F-beta; the lowest such threshold on the 0.01 grid is 0.31.
    prob = np.array([0.7] * 100 + [0.2] * 10 + [0.3] * 50 + [0.05] * 840, dtype=np.float32).reshape(10, 100)
    target = np.array([True] * 110 + [False] * 890).reshape(10, 100)
    sweep = ThresholdSweep()
    sweep.update(prob, target)
    choice = choose_threshold(sweep)
    assert choice.threshold == pytest.approx(0.31)
    assert choice.precision == 1.0 and choice.recall == pytest.approx(100 / 110)
    r = 100 / 110
    assert choice.f_beta == pytest.approx(1.3 * r / (0.3 + r))


def test_threshold_cli_writes_the_printed_threshold(trained_onnx, shared_data, tmp_path, capsys):
    root = tmp_path / "val"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "splits").mkdir()
    stems = (shared_data / "deepcrack" / "splits" / "test.txt").read_text().split()[:3]
    for stem in stems:
        shutil.copy(shared_data / "deepcrack" / "images" / f"{stem}.jpg", root / "images")
        shutil.copy(shared_data / "deepcrack" / "masks" / f"{stem}.png", root / "masks")
    (root / "splits" / "val.txt").write_text("\n".join(stems))
    model = tmp_path / "m.onnx"
    shutil.copy(trained_onnx, model)
    assert threshold_main(["--model", str(model), "--data", str(root), "--write"]) == 0
    out = capsys.readouterr().out
    printed = float(out.split("threshold ")[1].split(":")[0])
    assert read_metadata(model).threshold == pytest.approx(printed)
    assert onnx.load(str(model)).ir_version <= OLDEST_RUNTIME_MAX_IR
    assert "on 3 images" in out
    # --max-images: a seeded subset of the split
    assert threshold_main(["--model", str(model), "--data", str(root), "--max-images", "2"]) == 0
    assert "on 2 images" in capsys.readouterr().out
    assert threshold_main(["--model", str(model), "--data", str(root), "--max-images", "-1"]) == 1
    assert "--max-images must be >= 0" in capsys.readouterr().err


def test_pooled_threshold_lets_every_data_set_count_equally():
    # big set: cracks at p=0.6, background 0.34 -> F = 1 for thresholds in (0.34, 0.6];
    # small set: cracks at 0.33, background 0.05 -> F = 1 for thresholds in (0.05, 0.33].
    # Pooled by pixels the big set wins (0.35); with each set counting equally, 0.06..0.33 give
    # mean F (0.126 + 1) / 2 against (1 + 0) / 2 above 0.34, so the lowest of them, 0.06, is chosen.
    big_prob = np.array([0.6] * 1000 + [0.34] * 9000, dtype=np.float32).reshape(100, 100)
    big_target = np.array([True] * 1000 + [False] * 9000).reshape(100, 100)
    small_prob = np.array([0.33] * 10 + [0.05] * 90, dtype=np.float32).reshape(10, 10)
    small_target = np.array([True] * 10 + [False] * 90).reshape(10, 10)
    sweeps = {"big": ThresholdSweep(), "small": ThresholdSweep()}
    sweeps["big"].update(big_prob, big_target)
    sweeps["small"].update(small_prob, small_target)
    choice = choose_pooled_threshold(sweeps)
    assert choice.threshold == pytest.approx(0.06) and choice.n_images == 2
    assert choice.recall == pytest.approx(1.0) and choice.precision == pytest.approx((0.1 + 1.0) / 2)
    merged = ThresholdSweep()
    merged.update(big_prob, big_target)
    merged.update(small_prob, small_target)
    assert choose_threshold(merged).threshold == pytest.approx(0.35)
