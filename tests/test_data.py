"""Data pipeline: bad-input errors name the file, splits are seeded and reproducible, augmentation keeps
masks binary and aligned, padding round-trips."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from train.augment import AugmentConfig, affine_matrix, random_affine, random_crop, warp_pair
from train.config import TrainConfig
from train.data import (
    DatasetError,
    TrainCrops,
    crop_to,
    list_samples,
    load_images,
    load_pair,
    pad_to_multiple,
    read_mask,
    read_run_splits,
    resize_mask,
    resolve_splits,
    write_splits,
)

# the split of a run with train.run's defaults (TrainConfig is their one home)
DEFAULTS = {"seed": 0, "val_fraction": TrainConfig.default("val_fraction"),
            "test_fraction": TrainConfig.default("test_fraction")}


def make_dataset(root: Path, n: int = 6, hw: tuple[int, int] = (40, 56), split: dict | None = None) -> Path:
    """A tiny data set: random RGB images, masks with one diagonal 0/255 crack line."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        image = rng.integers(0, 256, (*hw, 3), dtype=np.uint8)
        mask = np.zeros(hw, np.uint8)
        cv2.line(mask, (0, i), (hw[1] - 1, hw[0] - 1 - i), 255, 2)
        cv2.imwrite(str(root / "images" / f"s{i:02d}.png"), image)
        cv2.imwrite(str(root / "masks" / f"s{i:02d}.png"), mask)
    for name, stems in (split or {}).items():
        (root / "splits").mkdir(exist_ok=True)
        (root / "splits" / f"{name}.txt").write_text("\n".join(stems) + "\n")
    return root


# ----------------------------------------------------------------------------- errors name the file


def test_missing_folder_and_subfolders(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        list_samples(tmp_path / "nope")
    (tmp_path / "images").mkdir()
    with pytest.raises(DatasetError, match=r"no masks/ folder"):
        list_samples(tmp_path)


def test_empty_images_folder(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(DatasetError, match="holds no image files"):
        list_samples(tmp_path)


def test_missing_mask_names_image_and_expected_mask(tmp_path):
    root = make_dataset(tmp_path / "d")
    (root / "masks" / "s03.png").unlink()
    with pytest.raises(DatasetError) as err:
        list_samples(root)
    assert "s03.png" in str(err.value) and str(root / "masks" / "s03.png") in str(err.value)


def test_size_mismatch_names_both_files(tmp_path):
    root = make_dataset(tmp_path / "d")
    cv2.imwrite(str(root / "masks" / "s01.png"), np.zeros((30, 56), np.uint8))
    samples = list_samples(root)
    with pytest.raises(DatasetError, match=r"s01\.png is 56x30 .* is 56x40"):
        load_pair(samples["s01"])


def test_non_binary_mask_lists_values_and_binarize_flag_accepts_it(tmp_path):
    root = make_dataset(tmp_path / "d")
    mask = np.zeros((40, 56), np.uint8)
    mask[5:10, 5:10] = 200
    mask[20:25, 5:10] = 255
    mask[30, 30] = 3
    cv2.imwrite(str(root / "masks" / "s02.png"), mask)
    with pytest.raises(DatasetError) as err:
        read_mask(root / "masks" / "s02.png")
    message = str(err.value)
    assert "s02.png" in message and "3, 200" in message and "--binarize-masks" in message
    binary = read_mask(root / "masks" / "s02.png", binarize=True)
    assert set(np.unique(binary)) == {0, 1}
    assert binary[7, 7] == 1 and binary[22, 7] == 1 and binary[30, 30] == 0


def test_unreadable_image_is_named(tmp_path):
    root = make_dataset(tmp_path / "d")
    (root / "images" / "s04.png").write_bytes(b"this is not a png")
    samples = list_samples(root)
    with pytest.raises(DatasetError, match=r"s04\.png could not be read"):
        load_images(samples, ["s04"])


def test_split_stem_without_image_names_file_and_line(tmp_path):
    root = make_dataset(tmp_path / "d", split={"train": ["s00", "s01", "s02"], "test": ["s03", "ghost"]})
    with pytest.raises(DatasetError, match=r"test\.txt line 2: stem 'ghost' has no image"):
        resolve_splits(root, list_samples(root), **DEFAULTS)


def test_duplicate_stems_are_refused(tmp_path):
    root = make_dataset(tmp_path / "d")
    cv2.imwrite(str(root / "images" / "s00.jpg"), np.zeros((40, 56, 3), np.uint8))
    with pytest.raises(DatasetError, match="two files with the stem 's00'"):
        list_samples(root)


# ----------------------------------------------------------------------------- splits


def test_seeded_split_is_deterministic_disjoint_and_70_10_20():
    stems = [f"{i:03d}" for i in range(118)]  # CrackForest has 118 images and no split
    a = resolve_splits("/nonexistent", stems, **{**DEFAULTS, "seed": 3})
    b = resolve_splits("/nonexistent", list(reversed(stems)), **{**DEFAULTS, "seed": 3})
    c = resolve_splits("/nonexistent", stems, **{**DEFAULTS, "seed": 4})
    assert (a.train, a.val, a.test) == (b.train, b.val, b.test)
    assert a.test != c.test
    assert len(a.test) == 24 and len(a.val) == 9 and len(a.train) == 85
    assert set(a.train) | set(a.val) | set(a.test) == set(stems)
    assert not (set(a.train) & set(a.val)) and not (set(a.train) & set(a.test)) and not (set(a.val) & set(a.test))
    assert a.source == "seed 3"


def test_split_files_are_used_and_val_txt_wins(tmp_path):
    root = make_dataset(tmp_path / "d", n=8, split={"train": ["s00", "s01", "s02", "s03", "s04"], "test": ["s05", "s06"]})
    splits = resolve_splits(root, list_samples(root), **{**DEFAULTS, "val_fraction": 0.2})
    assert splits.test == ["s05", "s06"] and splits.source == "files"
    assert len(splits.val) == 1 and set(splits.train) | set(splits.val) == {"s00", "s01", "s02", "s03", "s04"}
    (root / "splits" / "val.txt").write_text("s04\n# held out\n")
    splits = resolve_splits(root, list_samples(root), **DEFAULTS)
    assert splits.val == ["s04"] and "s04" not in splits.train


def test_splits_written_to_run_folder_read_back(tmp_path):
    root = make_dataset(tmp_path / "d")
    samples = list_samples(root)
    splits = resolve_splits(root, samples, seed=1, val_fraction=0.2, test_fraction=0.3)
    write_splits(splits, tmp_path / "run")
    again = read_run_splits(tmp_path / "run", samples)
    assert (again.train, again.val, again.test) == (splits.train, splits.val, splits.test)


# ----------------------------------------------------------------------------- padding


@pytest.mark.parametrize("shape", [(37, 50, 3), (37, 50), (32, 48), (1, 17)])
def test_pad_to_multiple_round_trip(shape):
    array = np.random.default_rng(0).random(shape).astype(np.float32) + 1
    padded, size_hw = pad_to_multiple(array, 16)
    assert padded.shape[0] % 16 == 0 and padded.shape[1] % 16 == 0
    assert size_hw == shape[:2]
    assert padded.shape[0] - shape[0] < 16 and padded.shape[1] - shape[1] < 16
    np.testing.assert_array_equal(padded[: shape[0], : shape[1]], array)
    assert padded[shape[0] :].sum() == 0 and padded[:, shape[1] :].sum() == 0
    restored = crop_to(np.moveaxis(padded, -1, 0) if padded.ndim == 3 else padded, size_hw)
    np.testing.assert_array_equal(np.moveaxis(restored, 0, -1) if padded.ndim == 3 else restored, array)


# ----------------------------------------------------------------------------- augmentation


def pattern_pair(hw=(64, 80)):
    """An image whose every channel equals its mask x 255: alignment can be read off the image."""
    mask = np.zeros(hw, np.uint8)
    cv2.line(mask, (3, 5), (70, 50), 1, 3)
    cv2.rectangle(mask, (50, 5), (60, 20), 1, -1)
    return np.repeat((mask * 255)[..., None], 3, axis=2), mask


@pytest.mark.parametrize("border", ["reflect", "constant"])
def test_augmentation_keeps_mask_binary_and_aligned(border):
    image, mask = pattern_pair()
    config = AugmentConfig(border=border)
    changed = 0
    for seed in range(20):
        out_image, out_mask, valid = random_affine(image, mask, np.random.default_rng(seed), config)
        assert out_mask.dtype == np.uint8 and set(np.unique(out_mask)) <= {0, 1}
        assert out_image.shape == image.shape and out_mask.shape == mask.shape
        # bilinear image vs nearest mask only differ on edge pixels of the strokes
        agree = ((out_image[..., 0] >= 128) == (out_mask == 1)).mean()
        assert agree > 0.97, (seed, agree)
        changed += not np.array_equal(out_mask, mask)
        if border == "constant":
            assert valid is not None and set(np.unique(valid)) <= {0, 1}
            assert (out_mask[valid == 0] == 0).all()
        else:
            assert valid is None
    assert changed == 20


def test_affine_matrix_flip_and_rotation_move_a_known_pixel():
    mask = np.zeros((11, 21), np.uint8)
    mask[2, 3] = 1
    flipped = warp_pair(mask[..., None].repeat(3, 2), mask, affine_matrix(11, 21, flip_x=True))[1]
    assert flipped[2, 20 - 3] == 1 and flipped.sum() == 1
    square = np.zeros((21, 21), np.uint8)
    square[10, 15] = 1  # 5 px right of the centre
    rotated = warp_pair(square[..., None].repeat(3, 2), square, affine_matrix(21, 21, rotation_deg=90))[1]
    assert rotated.sum() == 1 and rotated[15, 10] == 1  # image y points down: +90 deg turns right into down


def test_random_crop_pads_small_images_and_marks_padding_invalid():
    image, mask = np.full((20, 30, 3), 7, np.uint8), np.ones((20, 30), np.uint8)
    crop_image, crop_mask, valid = random_crop(image, mask, 32, np.random.default_rng(0))
    assert crop_image.shape == (32, 32, 3) and valid.shape == (32, 32)
    assert valid.sum() == 20 * 30 and crop_mask.sum() == 20 * 30 and (crop_image[valid == 0] == 0).all()


def test_train_crops_depend_only_on_seed_epoch_index(tmp_path):
    root = make_dataset(tmp_path / "d", hw=(48, 64))
    samples = list_samples(root)
    data = load_images(samples, sorted(samples))
    a, b = TrainCrops(data, 32, AugmentConfig(), seed=5), TrainCrops(data, 32, AugmentConfig(), seed=5)
    a.set_epoch(2)
    b.set_epoch(2)
    for x, y in zip(a[3], b[3], strict=True):
        assert torch.equal(x, y)
    image, mask, valid = a[3]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and 0 <= image.min() and image.max() <= 1
    assert mask.shape == (1, 32, 32) and set(mask.unique().tolist()) <= {0.0, 1.0} and valid.min() == 1
    b.set_epoch(3)
    assert not torch.equal(a[3][0], b[3][0])


def test_scale_keeps_thin_cracks_connected():
    mask = np.zeros((64, 64), np.uint8)
    cv2.line(mask, (0, 10), (63, 50), 1, 1)
    small = resize_mask(mask, 0.5)
    assert small.shape == (32, 32) and set(np.unique(small)) <= {0, 1}
    n_components, _ = cv2.connectedComponents(small, connectivity=8)
    assert n_components == 2  # background + one crack


def test_real_crackforest_pairs_load(shared_data):
    root = shared_data / "crackforest_cfd"
    samples = list_samples(root)
    assert len(samples) == 118
    data = load_images(samples, ["001", "002"], scale=0.5)
    assert data.images[0].shape == (160, 240, 3) and data.masks[0].shape == (160, 240)
    assert 0 < data.masks[0].mean() < 0.2
