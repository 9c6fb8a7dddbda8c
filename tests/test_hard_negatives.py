"""Hard-negative mining: which predicted pieces are false positives, the crops cut around them, the
sites file, and a training run that mines its starting model's false positives and resumes from them."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import write_small_crackforest

from train.data import CrackImages, CropRecipe, DatasetError, TrainCrops
from train.hard_negatives import (
    HardNegativeSource,
    Site,
    bend_px,
    false_positive_sites,
    mine,
    read_sites,
    write_sites,
)


def scene() -> tuple[np.ndarray, np.ndarray]:
    """A 128 x 128 probability map: a labelled crack found (row 20), a straight false line (row 80),
    a crooked false piece (a zig-zag), a 3-pixel speck, and a prediction 4 px beside the crack."""
    prob = np.zeros((128, 128), np.float32)
    mask = np.zeros((128, 128), np.uint8)
    mask[20, 10:60] = 1
    prob[19:22, 10:60] = 0.9  # the crack, drawn a little wide
    prob[24, 10:40] = 0.8  # 4 px beside the label: within the margin, not a false positive
    prob[79:82, 20:120] = 0.7  # a straight joint, 100 px long
    zig = np.array([[100 + int(12 * np.sin(x / 4.0)), x] for x in range(10, 70)])
    for y, x in zig:
        prob[y - 1 : y + 2, x] = 0.6
    prob[5:6, 100:103] = 0.95  # a speck of 3 px
    return prob, mask


def test_false_positives_are_pieces_away_from_every_label_largest_first():
    prob, mask = scene()
    sites = false_positive_sites(prob, mask, 0.5, margin_px=8, min_area_px=20)
    assert [(y, area) for y, _, area in sites] == [(80, 300), (sites[1][0], 180)]
    assert 85 <= sites[1][0] <= 115, "the zig-zag's centre lies on the zig-zag"
    y, x, _ = sites[1]
    assert prob[y, x] >= 0.5
    # at a threshold above every false piece, nothing; with no margin the crack's own fringe rows (19, 21)
    # and the line beside it count too: the margin is what keeps a label drawn 1 px thin from being mined
    assert false_positive_sites(prob, mask, 0.85) == []
    assert sorted(y for y, _, _ in false_positive_sites(prob, mask, 0.5, margin_px=0))[:3] == [19, 21, 24]
    with pytest.raises(ValueError, match="differ in shape"):
        false_positive_sites(prob, mask[:10], 0.5)


def test_straight_only_keeps_joints_and_leaves_crooked_pieces_that_may_be_unlabelled_cracks():
    prob, mask = scene()
    sites = false_positive_sites(prob, mask, 0.5, straight_only=True)
    assert [(y, area) for y, _, area in sites] == [(80, 300)]
    length, bend = bend_px(*np.nonzero(prob[75:86] >= 0.5))
    assert 99 <= length <= 100 and bend < 1.0  # a 3-px band: RMS about 0.8 px off its axis
    ys, xs = np.nonzero(prob[85:128] >= 0.5)
    assert bend_px(ys, xs)[1] > 2.0


def test_mine_names_sites_by_data_set_and_stem_and_caps_them_per_image(tmp_path):
    prob, mask = scene()
    images = CrackImages(["a", "b"], [np.zeros((128, 128, 3), np.uint8)] * 2, [mask, np.zeros_like(mask)])
    lines = []
    sites = mine(lambda image: prob, [("roads", images)], 0.5, per_image=1, progress=lines.append)
    assert sites == [Site("roads", "a", 80, sites[0].x, 300), Site("roads", "b", 80, sites[1].x, 300)]
    assert lines == ["hard negatives: roads: 2 false-positive sites on 2 training images"]
    write_sites(tmp_path / "sites.json", sites, {"threshold": 0.5})
    assert read_sites(tmp_path / "sites.json") == (sites, {"threshold": 0.5})
    (tmp_path / "broken.json").write_text('{"sites": [["roads"]]')
    with pytest.raises(DatasetError, match="broken.json: cannot read"):
        read_sites(tmp_path / "broken.json")


def test_crops_hold_their_site_and_keep_the_real_mask():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (200, 300, 3), dtype=np.uint8)
    mask = np.zeros((200, 300), np.uint8)
    mask[150, 100:200] = 1
    image[60, 200:280] = 255  # the false positive: a white line
    source = HardNegativeSource([("walls", CrackImages(["w1"], [image], [mask]))], [Site("walls", "w1", 60, 240, 80)])
    assert len(source) == 1
    for seed in range(20):
        crop, crop_mask = source.sample(0, np.random.default_rng(seed), 96)
        assert crop.shape == (96, 96, 3) and crop_mask.shape == (96, 96) and crop.flags.c_contiguous
        white = np.all(crop == 255, axis=2)
        assert white.sum() >= 40, "the site is inside the crop"
        # the mask travels with the image: every labelled pixel of the crop is where the label is in the photo
        assert crop_mask.sum() == 0 or crop_mask.sum() <= 100
    again = source.sample(0, np.random.default_rng(3), 96)
    assert all(np.array_equal(a, b) for a, b in zip(source.sample(0, np.random.default_rng(3), 96), again, strict=True))
    small = HardNegativeSource([("s", CrackImages(["x"], [image[:50, :60]], [mask[:50, :60]]))], [Site("s", "x", 10, 10, 30)])
    assert small.sample(0, np.random.default_rng(0), 96)[0].shape == (96, 96, 3)  # mirrored up to the crop


def test_every_data_set_with_sites_gets_an_equal_share():
    big = CrackImages([f"b{i}" for i in range(9)], [np.zeros((64, 64, 3), np.uint8)] * 9, [np.zeros((64, 64), np.uint8)] * 9)
    small = CrackImages(["s0"], [np.zeros((64, 64, 3), np.uint8)], [np.zeros((64, 64), np.uint8)])
    sites = [Site("big", f"b{i}", 5, 5, 30) for i in range(9)] + [Site("small", "s0", 5, 5, 30)]
    source = HardNegativeSource([("big", big), ("small", small)], sites)
    drawn = [source.site_of(item) for item in range(len(source) * 10)]
    assert sum(s.source == "small" for s in drawn) == len(drawn) // 2
    assert {s.stem for s in drawn if s.source == "big"} == {f"b{i}" for i in range(9)}, "every site of a set in turn"


def test_sites_outside_the_training_split_or_none_at_all_are_errors():
    data = CrackImages(["a"], [np.zeros((64, 64, 3), np.uint8)], [np.zeros((64, 64), np.uint8)])
    with pytest.raises(DatasetError, match="outside the training split \\(first: roads/zz\\)"):
        HardNegativeSource([("roads", data)], [Site("roads", "zz", 1, 1, 30)])
    with pytest.raises(DatasetError, match="no hard-negative sites"):
        HardNegativeSource([("roads", data)], [])


def test_extra_sources_share_the_epoch_by_their_fractions():
    rng = np.random.default_rng(0)
    data = CrackImages(["a", "b"], [rng.integers(0, 255, (80, 80, 3), dtype=np.uint8)] * 2,
                       [np.zeros((80, 80), np.uint8)] * 2)
    mined = HardNegativeSource([("d", data)], [Site("d", "a", 40, 40, 30), Site("d", "b", 10, 10, 30)])
    crops = TrainCrops(data, CropRecipe(64), seed=1, n_draws=100, extras=[(mined, 0.2)])
    crops.set_epoch(2)
    assert sum(crops.source_of(d) == 1 for d in range(100)) == 20
    image, mask, valid = crops.crop(next(d for d in range(100) if crops.source_of(d) == 1))
    assert image.shape == (64, 64, 3) and valid.all()
    for bad in ([(mined, 0.0)], [(mined, 0.6), (mined, 0.5)]):
        with pytest.raises(DatasetError, match="leave room for the real images"):
            TrainCrops(data, CropRecipe(64), extras=bad)


@pytest.fixture(scope="module")
def tiny_cfd(shared_data, tmp_path_factory):
    return write_small_crackforest(shared_data, tmp_path_factory.mktemp("cfd") / "cfd_small")


def test_a_run_mines_its_starting_models_false_positives_once(tiny_cfd, tmp_path, capsys):
    """--hard-negative-fraction: the --init model's false positives on the training split are mined into
    the run folder; a resumed run reads that file instead of mining again; without --init it is refused."""
    from train.run import main as run_main

    common = ["--data", str(tiny_cfd), "--width", "4", "--size", "64", "--workers", "0", "--no-progress",
              "--epoch-samples", "16", "--batch", "4", "--overlays", "0"]
    assert run_main([*common, "--epochs", "1", "--out", str(tmp_path / "start")]) == 0
    start = tmp_path / "start" / "best.pt"
    out = tmp_path / "run"
    # an untrained model's output is near the crack prior (0.05) everywhere: at 0.01 every crack-free area is
    # one false-positive piece, so each training image yields a site
    mining = ["--init", str(start), "--hard-negative-fraction", "0.25", "--hard-negative-shape", "all",
              "--hard-negative-threshold", "0.01"]
    assert run_main([*common, *mining, "--epochs", "1", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"-> {out / 'hard_negatives.json'}" in text
    sites, about = read_sites(out / "hard_negatives.json")
    assert sites and about["model"] == str(start) and about["shape"] == "all" and about["threshold"] == 0.01
    train_stems = set()
    for path in (out / "splits").rglob("train.txt"):
        train_stems |= set(path.read_text().split())
    assert {s.stem for s in sites} <= train_stems and len({s.stem for s in sites}) == len(train_stems), \
        "every training image is mined, no other"
    stamp = (out / "hard_negatives.json").stat().st_mtime_ns
    assert run_main(["--resume", str(out / "last.pt"), "--epochs", "2", "--no-progress"]) == 0
    assert "hard negatives:" not in capsys.readouterr().out
    assert (out / "hard_negatives.json").stat().st_mtime_ns == stamp
    assert run_main(["--data", str(tiny_cfd), "--hard-negative-fraction", "0.2", "--out", str(tmp_path / "x")]) == 2
    assert "--hard-negative-fraction must be 0 without --init" in capsys.readouterr().err
