"""Straight structures of real surfaces (train.structures): deterministic, visible, never labelled as
crack, and split into families training may draw and families held out for measurement."""

from __future__ import annotations

import numpy as np
import pytest

from train.augment import AugmentConfig
from train.config import ConfigError, TrainConfig
from train.structures import (
    DEFAULT_TRAINING_FAMILIES,
    FAMILIES,
    HELD_OUT_FAMILIES,
    TRAINING_FAMILIES,
    render_structure,
    render_structures,
)
from train.synth import SynthConfig, synthetic_sample


def surface(size: int = 160, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(130 + rng.normal(0, 8, size=(size, size, 1)), 0, 255).astype(np.uint8).repeat(3, axis=2)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_family_is_deterministic_visible_and_keeps_the_image_format(family: str) -> None:
    image = surface()
    a = render_structure(image, np.random.default_rng(5), family)
    b = render_structure(image, np.random.default_rng(5), family)
    c = render_structure(image, np.random.default_rng(6), family)
    assert a.dtype == np.uint8 and a.shape == image.shape
    assert np.array_equal(a, b), "same generator state, same image"
    assert not np.array_equal(a, c), "another seed draws another structure"
    changed = np.abs(a.astype(int) - image.astype(int)).max(axis=2) > 12
    assert changed.mean() > 0.005, f"{family}: only {changed.mean():.4f} of the pixels visibly changed"


def test_held_out_families_are_never_drawn_in_training_by_default() -> None:
    assert set(TRAINING_FAMILIES).isdisjoint(HELD_OUT_FAMILIES)
    assert set(TRAINING_FAMILIES) | set(HELD_OUT_FAMILIES) == set(FAMILIES)
    assert set(DEFAULT_TRAINING_FAMILIES) <= set(TRAINING_FAMILIES)
    assert SynthConfig().structure_families == DEFAULT_TRAINING_FAMILIES
    assert TrainConfig(data=("x",)).structure_families() == DEFAULT_TRAINING_FAMILIES
    with pytest.raises(ValueError, match="unknown structure family 'rebar'"):
        SynthConfig(structure_families=("tile_grid", "rebar"))
    with pytest.raises(ValueError, match="RGB uint8"):
        render_structure(surface().astype(np.float32), np.random.default_rng(0), "saw_cut")
    image = surface(32)
    assert render_structures(image, np.random.default_rng(0), ()) is image, "no families: nothing drawn"


def test_a_synthetic_sample_with_a_structure_has_an_empty_mask() -> None:
    config = SynthConfig(p_structures=1.0, p_crack=0.0, p_distractor=0.0)
    plain = SynthConfig(p_structures=0.0, p_crack=0.0, p_distractor=0.0)
    no_warp = AugmentConfig(rotation_deg=0.0, shear_deg=0.0, shift_frac=0.0, flip=False)
    image, mask, drawn = synthetic_sample(surface(200), np.random.default_rng(1), 128, config, no_warp, mark_drawn=True)
    bare, _, nothing = synthetic_sample(surface(200), np.random.default_rng(1), 128, plain, no_warp, mark_drawn=True)
    assert image.shape == (128, 128, 3) and mask.shape == (128, 128) and not mask.any()
    assert np.abs(image.astype(int) - bare.astype(int)).max() > 20
    assert drawn.any() and not nothing.any(), "the structure's pixels are marked as drawn, a bare surface has none"


def test_train_run_draws_the_families_it_is_given_and_refuses_held_out_ones() -> None:
    given = TrainConfig(data=("x",), synth_structure_families="tile_grid, line_family,straight_shadow")
    assert given.structure_families() == ("tile_grid", "line_family", "straight_shadow")
    with pytest.raises(ConfigError, match="saw_cut is held out for measurement"):
        TrainConfig(data=("x",), synth_structure_families="tile_grid,saw_cut")
    with pytest.raises(ConfigError, match="unknown structure family 'rebar'"):
        TrainConfig(data=("x",), synth_structure_families="rebar")
    with pytest.raises(ConfigError, match="one or more families"):
        TrainConfig(data=("x",), synth_structure_families=" , ")
