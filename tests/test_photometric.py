"""Photometric augmentation: camera changes to the image only, each group switchable, deterministic."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from train.photometric import GROUPS, PhotometricConfig, random_photometric

ALL_ON = PhotometricConfig(p_colour=1.0, p_grey=1.0, p_shadow=1.0, p_blur=1.0, p_noise=1.0, p_jpeg=1.0)


def textured_colour_image(seed: int = 0, size: int = 96) -> np.ndarray:
    """A coloured surface with fine texture (so that blur, JPEG and grey all have something to change)."""
    rng = np.random.default_rng(seed)
    base = np.array([150, 120, 90], np.float32)
    texture = rng.normal(0, 18, size=(size, size, 1)).astype(np.float32)
    return np.clip(base + texture, 0, 255).astype(np.uint8)


def test_output_keeps_shape_and_dtype_and_leaves_the_input_alone() -> None:
    image = textured_colour_image()
    before = image.copy()
    out = random_photometric(image, np.random.default_rng(1), ALL_ON)
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(image, before)


def test_same_generator_state_gives_the_same_image() -> None:
    image = textured_colour_image()
    a = random_photometric(image, np.random.default_rng(7), ALL_ON)
    b = random_photometric(image, np.random.default_rng(7), ALL_ON)
    c = random_photometric(image, np.random.default_rng(8), ALL_ON)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a.astype(int) - c).mean() > 0.5


def test_off_is_the_identity() -> None:
    image = textured_colour_image()
    for seed in range(20):
        np.testing.assert_array_equal(random_photometric(image, np.random.default_rng(seed), PhotometricConfig.off()), image)
    assert PhotometricConfig.from_groups("none") == PhotometricConfig.off()
    assert PhotometricConfig.from_groups("all") == PhotometricConfig()


def test_a_group_can_be_given_its_own_probability() -> None:
    assert PhotometricConfig.from_groups("all,shadow=0.6") == replace(PhotometricConfig(), p_shadow=0.6)
    only = PhotometricConfig.from_groups("colour, shadow = 0.5")
    assert only == replace(PhotometricConfig.off(), p_colour=PhotometricConfig().p_colour, p_shadow=0.5)
    for bad, message in (("shadow=often", "expected group=probability"), ("shadow=1.5", "must be a probability"),
                         ("glare=0.3", "unknown photometric group"), ("all,glare", "unknown photometric group")):
        with pytest.raises(ValueError, match=message):
            PhotometricConfig.from_groups(bad)


@pytest.mark.parametrize("group", GROUPS)
def test_each_group_alone_changes_the_image(group: str) -> None:
    image = textured_colour_image()
    config = ALL_ON.only((group,))
    changed = [np.abs(random_photometric(image, np.random.default_rng(s), config).astype(int) - image).mean() for s in range(5)]
    assert min(changed) > 0.3, f"group {group} left the image (almost) unchanged: mean |diff| {changed}"


def test_grey_gives_three_equal_channels() -> None:
    out = random_photometric(textured_colour_image(), np.random.default_rng(0), ALL_ON.only(("grey",)))
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])


def test_shadow_darkens_by_the_configured_factor() -> None:
    image = np.full((128, 128, 3), 200, np.uint8)
    config = PhotometricConfig(p_shadow=1.0, shadow_darkening=(0.5, 0.5), shadow_edge_px=(1.0, 1.0)).only(("shadow",))
    for seed in range(5):
        ratio = random_photometric(image, np.random.default_rng(seed), config).astype(float) / 200.0
        assert ratio.max() == pytest.approx(1.0, abs=0.01)  # outside the shadow: untouched
        assert ratio.min() == pytest.approx(0.5, abs=0.01)  # inside: 50 % darker


def test_gaussian_noise_has_the_configured_strength() -> None:
    image = np.full((128, 128, 3), 128, np.uint8)
    config = PhotometricConfig(p_noise=1.0, noise_sigma=(5.0, 5.0), p_poisson=0.0).only(("noise",))
    diff = random_photometric(image, np.random.default_rng(0), config).astype(float) - 128
    assert diff.std() == pytest.approx(5.0, rel=0.1)
    assert abs(diff.mean()) < 0.3


def test_bad_group_names_and_ranges_are_rejected_with_the_field() -> None:
    with pytest.raises(ValueError, match="unknown photometric group"):
        PhotometricConfig().only(("colour", "sepia"))
    with pytest.raises(ValueError, match="p_blur"):
        PhotometricConfig(p_blur=1.5)
    with pytest.raises(ValueError, match="jpeg_quality"):
        PhotometricConfig(jpeg_quality=(0, 200))
    with pytest.raises(ValueError, match="RGB uint8"):
        random_photometric(np.zeros((8, 8), np.uint8), np.random.default_rng(0), ALL_ON)
