"""Synthetic samples: crack-free backgrounds, hairline cracks and distractors, and their dataset."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest

from train.synth import (
    SynthConfig,
    SyntheticCrops,
    crack_free_background,
    crack_free_windows,
    render_distractors,
    render_hairline_cracks,
)


def textured_grey(size: int = 128, seed: int = 0, level: float = 140.0) -> np.ndarray:
    """A grey surface with fine Gaussian texture (std 8 levels)."""
    rng = np.random.default_rng(seed)
    return np.clip(level + rng.normal(0, 8, size=(size, size, 1)), 0, 255).astype(np.uint8).repeat(3, axis=2)


def widths(mask: np.ndarray) -> np.ndarray:
    """Local crack width (2 * distance to the background - 1) at every crack pixel."""
    return 2.0 * cv2.distanceTransform(mask, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[mask > 0] - 1.0


def test_hairline_cracks_are_deterministic_and_binary() -> None:
    background = textured_grey()
    a = render_hairline_cracks(background, np.random.default_rng(3), SynthConfig())
    b = render_hairline_cracks(background, np.random.default_rng(3), SynthConfig())
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[1].dtype == np.uint8 and set(np.unique(a[1])) <= {0, 1} and a[1].any()
    assert a[0].shape == background.shape and a[0].dtype == np.uint8


@pytest.mark.parametrize("branch_prob", [0.0, 1.0])
def test_each_crack_is_one_connected_thin_line(branch_prob: float) -> None:
    background = textured_grey()
    config = SynthConfig(crack_count=(1, 1), branch_prob=branch_prob)
    for seed in range(12):
        _, mask = render_hairline_cracks(background, np.random.default_rng(seed), config)
        assert cv2.connectedComponents(mask, connectivity=8)[0] - 1 == 1, f"seed {seed}: crack broken into pieces"
        local = widths(mask)
        assert np.percentile(local, 95) <= 3.0 + 1e-6, f"seed {seed}: crack wider than 3 px"
        if branch_prob == 0.0:  # only where a branch leaves the trunk may the mask widen locally
            assert local.max() <= 3.5, f"seed {seed}: a {local.max():.1f}-px blob on a 1-3 px crack"


def test_a_one_pixel_crack_gives_a_connected_one_pixel_mask() -> None:
    config = SynthConfig(crack_count=(1, 1), width_px=(1.0, 1.0), branch_prob=0.0)
    one_px = []
    for seed in range(12):
        _, mask = render_hairline_cracks(textured_grey(seed=seed), np.random.default_rng(seed), config)
        assert cv2.connectedComponents(mask, connectivity=8)[0] - 1 == 1
        one_px.append(np.mean(widths(mask) <= 1.0 + 1e-6))
    # 1 px wide apart from a sharp turn here and there
    assert np.mean(one_px) >= 0.95 and min(one_px) >= 0.9, one_px


def test_darkening_is_the_configured_fraction_and_never_more() -> None:
    flat = np.full((96, 96, 3), 200, np.uint8)
    for darkening in (0.1, 0.3):
        config = SynthConfig(darkening=(darkening, darkening), width_px=(2.5, 3.0), blur_sigma=(0.0, 0.0))
        image, mask = render_hairline_cracks(flat, np.random.default_rng(0), config)
        ratio = image.astype(float) / 200.0
        assert 1.0 - ratio[mask > 0].min() == pytest.approx(darkening, abs=0.01)  # fully covered pixels
        assert ratio.min() >= 1.0 - darkening - 0.01
    defaults = SynthConfig()
    for seed in range(8):  # default ranges, with the softening blur: measured on the rendered crack pixels
        image, mask = render_hairline_cracks(flat, np.random.default_rng(seed), defaults)
        removed = 1.0 - image.astype(float)[mask > 0] / 200.0
        assert removed.max() <= defaults.darkening[1] + 0.01
        assert np.median(removed) >= 0.3 * defaults.darkening[0]


def test_darkening_follows_the_texture_multiplicatively() -> None:
    background = textured_grey(level=120)
    image, mask = render_hairline_cracks(background, np.random.default_rng(1), SynthConfig(blur_sigma=(0.0, 0.0)))
    far = cv2.dilate(mask, np.ones((9, 9), np.uint8)) == 0
    np.testing.assert_array_equal(image[far], background[far])  # untouched away from the cracks
    # on the crack the texture survives: the pixel-to-pixel variation is still there
    assert image[mask > 0].astype(float).std() > 3.0


def test_no_invisible_crack_is_labelled_on_a_too_coarse_surface() -> None:
    coarse = np.clip(120 + np.random.default_rng(0).normal(0, 60, (96, 96, 1)), 0, 255).astype(np.uint8).repeat(3, 2)
    image, mask = render_hairline_cracks(coarse, np.random.default_rng(0), SynthConfig())
    assert not mask.any()
    np.testing.assert_array_equal(image, coarse)
    _, mask = render_hairline_cracks(coarse, np.random.default_rng(0), SynthConfig(min_contrast_to_texture=0.0))
    assert mask.any()


def test_the_walk_prefers_darker_pixels() -> None:
    """On a surface of dark and light grain, the cracks run through darker pixels than average."""
    x = np.arange(128)
    grain = (140 + 25 * np.sign(np.sin(x / 3.0)))[None, :].repeat(128, 0)
    background = np.clip(grain + np.random.default_rng(0).normal(0, 3, (128, 128)), 0, 255).astype(np.uint8)
    background = np.ascontiguousarray(np.rot90(np.dstack([background] * 3)))  # grain runs horizontally
    on_crack, blind = [], []
    for seed in range(6):
        for follow, store in ((1.2, on_crack), (0.0, blind)):
            _, mask = render_hairline_cracks(background, np.random.default_rng(seed), SynthConfig(follow_texture=follow))
            store.append(background[..., 0][mask > 0].mean())
    assert np.mean(on_crack) < np.mean(blind) - 5.0


@pytest.mark.parametrize("kind", ["p_line", "p_grid", "p_edge", "p_paint", "p_streaks"])
def test_each_distractor_changes_the_image(kind: str) -> None:
    background = textured_grey()
    only = {k: 0.0 for k in ("p_line", "p_grid", "p_edge", "p_paint", "p_streaks")} | {kind: 1.0}
    config = SynthConfig(**only)
    for seed in range(4):
        out = render_distractors(background, np.random.default_rng(seed), config)
        assert out.shape == background.shape and out.dtype == np.uint8
        assert np.abs(out.astype(int) - background).mean() > 0.3, f"{kind} seed {seed} drew nothing visible"
    a = render_distractors(background, np.random.default_rng(5), config)
    np.testing.assert_array_equal(a, render_distractors(background, np.random.default_rng(5), config))


def test_distractor_samples_are_labelled_background() -> None:
    background = textured_grey(160)
    crops = SyntheticCrops([background], 64, SynthConfig(p_crack=0.0, p_distractor=1.0), seed=0, length=12)
    plain = SyntheticCrops([background], 64, SynthConfig(p_crack=0.0, p_distractor=0.0), seed=0, length=12)
    changed = 0
    for index in range(len(crops)):
        image, mask, valid = crops[index]
        assert mask.sum() == 0 and bool((valid == 1).all())
        changed += bool((image - plain[index][0]).abs().mean() > 1e-3)
    assert changed == len(crops)


def test_dataset_returns_train_crops_tensors_deterministically() -> None:
    backgrounds = [textured_grey(150, seed=s) for s in range(3)]
    crops = SyntheticCrops(backgrounds, 64, SynthConfig(p_crack=1.0), seed=4, length=10)
    image, mask, valid = crops[3]
    assert image.shape == (3, 64, 64) and mask.shape == (1, 64, 64) and valid.shape == (1, 64, 64)
    assert image.dtype == mask.dtype == valid.dtype == __import__("torch").float32
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert set(mask.unique().tolist()) <= {0.0, 1.0} and mask.sum() > 0
    again = SyntheticCrops(backgrounds, 64, SynthConfig(p_crack=1.0), seed=4, length=10)
    for a, b in zip(crops[3], again[3], strict=True):
        assert bool((a == b).all())
    crops.set_epoch(1)
    assert not bool((crops[3][0] == image).all())  # a new epoch draws a new sample


def test_small_backgrounds_are_mirrored_up_to_size_never_black_padded() -> None:
    small = textured_grey(40)[:30]  # 30 x 40, all pixels far from black
    crops = SyntheticCrops([small], 64, SynthConfig(p_crack=0.0, p_distractor=0.0, p_structures=0.0), seed=0, length=6)
    for index in range(len(crops)):
        image, _ = crops.sample(index)
        assert image.shape == (64, 64, 3) and image.min() >= small.min() - 2


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="darkening"):
        SynthConfig(darkening=(0.3, 0.1))
    with pytest.raises(ValueError, match="p_crack"):
        SynthConfig(p_crack=2.0)
    with pytest.raises(ValueError, match="background 0"):
        SyntheticCrops([np.zeros((8, 8), np.uint8)], 64, SynthConfig())


def test_crack_free_windows_keep_their_margin_from_every_crack() -> None:
    mask = np.zeros((200, 300), np.uint8)
    mask[100, 150] = 1
    windows = crack_free_windows(mask, 64, margin_px=10, stride=8)
    assert windows
    for y, x in windows:
        assert not (y - 10 <= 100 < y + 64 + 10 and x - 10 <= 150 < x + 64 + 10)
    assert (0, 0) in windows and crack_free_windows(mask, 400) == []


def test_unusable_backgrounds_are_refused_and_crack_free_images_kept() -> None:
    image = textured_grey(64)
    assert crack_free_background(image, np.ones((64, 64), np.uint8)) is None  # all crack: nothing to keep
    np.testing.assert_array_equal(crack_free_background(image, np.zeros((64, 64), np.uint8)), image)


def test_inpainting_removes_a_real_crack(shared_data) -> None:
    """On real DeepCrack photographs the old crack pixels end up as bright as their surroundings."""
    from train.data import list_samples, load_pair

    samples = list_samples(shared_data / "deepcrack")
    checked = 0
    for stem in sorted(samples)[:40]:
        image, mask = load_pair(samples[stem])
        background = crack_free_background(image, mask)
        if background is None or mask.sum() < 200:
            continue
        grey_before = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(float)
        grey_after = cv2.cvtColor(background, cv2.COLOR_RGB2GRAY).astype(float)
        near = cv2.dilate(mask, np.ones((31, 31), np.uint8)) > 0
        ring = near & (cv2.dilate(mask, np.ones((15, 15), np.uint8)) == 0)  # 7-15 px from the crack
        crack = mask > 0
        before_gap = grey_before[ring].mean() - grey_before[crack].mean()
        after_gap = grey_after[ring].mean() - grey_after[crack].mean()
        assert before_gap > 10, f"{stem}: expected a visibly dark crack in the photograph"
        assert abs(after_gap) < max(6.0, 0.2 * before_gap), (
            f"{stem}: the crack is still {after_gap:.1f} levels darker than its surroundings (was {before_gap:.1f})"
        )
        checked += 1
        if checked == 5:
            break
    assert checked == 5, "fewer than 5 DeepCrack images gave a usable crack-free background"


def test_broken_hairlines_fade_in_stretches_but_stay_labelled_and_visible():
    """fade_prob: a crack comes and goes (stretches down to 1 - fade_depth of its darkening, never below the
    visibility floor) while its label runs through: one connected piece per crack, as an annotator draws it."""
    background = np.full((160, 160, 3), 150, np.uint8)  # flat: the visibility floor is 0
    config = SynthConfig(crack_count=(1, 1), branch_prob=0.0, width_px=(2.0, 2.0), darkening=(0.3, 0.3),
                         blur_sigma=(0.0, 0.0), length_frac=(0.8, 0.8), fade_length_frac=(0.2, 0.3))
    faded = replace(config, fade_prob=1.0, fade_depth=(0.8, 0.8))
    steady = replace(config, fade_prob=0.0)
    image, mask = render_hairline_cracks(background, np.random.default_rng(5), faded)
    n, _ = cv2.connectedComponents(mask, connectivity=8)
    assert n == 2, "the faded crack is still one labelled piece"
    darkening = 1.0 - image[..., 0][mask > 0] / 150.0
    assert darkening.max() > 0.25 and np.percentile(darkening, 5) < 0.12
    image, mask = render_hairline_cracks(background, np.random.default_rng(5), steady)
    darkening = 1.0 - image[..., 0][(mask > 0) & (cv2.erode(mask, np.ones((3, 3), np.uint8)) > 0)] / 150.0
    assert darkening.size and darkening.min() > 0.2, "without fading the crack's core keeps its darkening"
    # on a textured surface the fade stops at the floor that keeps a labelled crack visible
    rough = textured_grey(160, seed=2)
    image, mask = render_hairline_cracks(rough, np.random.default_rng(5), replace(faded, min_contrast_to_texture=2.5))
    assert mask.any()


def test_wide_cracks_are_wide_dark_labelled_inside_and_off_by_default():
    background = textured_grey(size=192)
    wide = SynthConfig(crack_count=(1, 1), branch_prob=0.0, fade_prob=0.0, wide_prob=1.0)
    for seed in range(6):
        image, mask = render_hairline_cracks(background, np.random.default_rng(seed), wide)
        assert cv2.connectedComponents(mask, connectivity=8)[0] - 1 == 1, f"seed {seed}: one crack, one piece"
        local = widths(mask)
        # 2 d - 1 over every pixel of a band W wide runs from 1 at its edge to W at its centre
        assert 3.5 <= local.max() <= wide.wide_width_px[1] + 1.5, (seed, local.max())
        inside = cv2.erode(mask, np.ones((3, 3), np.uint8)) > 0  # the inside is labelled crack and is dark
        assert inside.sum() > 50
        darker = 1.0 - image[..., 0][inside].astype(float) / background[..., 0][inside].astype(float)
        assert np.median(darker) >= 0.3, f"seed {seed}: the inside of a wide crack must be dark"
    # off by default, and at 0 the random stream (so every sample drawn before this option) is unchanged
    assert SynthConfig().wide_prob == 0.0
    a = render_hairline_cracks(background, np.random.default_rng(7), SynthConfig())
    b = render_hairline_cracks(background, np.random.default_rng(7), SynthConfig(wide_prob=0.0, wide_width_px=(5, 9)))
    np.testing.assert_array_equal(a[1], b[1])
    thin = [np.percentile(widths(render_hairline_cracks(background, np.random.default_rng(s), SynthConfig())[1]), 95)
            for s in range(6)]
    assert max(thin) <= 3.0 + 1e-6
    with pytest.raises(ValueError, match="wide_width_px"):
        SynthConfig(wide_width_px=(0.2, 4.0))
    with pytest.raises(ValueError, match="wide_prob"):
        SynthConfig(wide_prob=1.5)
