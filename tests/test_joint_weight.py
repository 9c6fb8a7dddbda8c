"""Joints weigh more (--joint-weight): which generated pixels count as drawn, the weights a generated crop
carries into the loss, and the flag."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from train.augment import AugmentConfig
from train.config import ConfigError, TrainConfig
from train.data import CrackImages, TrainCrops
from train.losses import build_loss
from train.synth import SynthConfig, SynthSource, drawn_structures, synthetic_sample

NO_WARP = AugmentConfig(rotation_deg=0.0, shear_deg=0.0, shift_frac=0.0, flip=False)


def surface(size: int = 160, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(130 + rng.normal(0, 12, size=(size, size, 1)), 0, 255).astype(np.uint8).repeat(3, axis=2)


def test_a_drawn_line_and_an_edge_count_a_shadow_inside_does_not():
    before = surface(80)
    after = before.astype(np.float32)
    after[:, 20:23] *= 0.85  # a joint 3 px wide, darkened 15 %
    after[50:, :] *= 0.6  # a shadow: one ratio over a textured area
    after = np.clip(after + 0.5, 0, 255).astype(np.uint8)
    drawn = drawn_structures(before, after)
    assert drawn[:45, 19:24].all(), "the joint and its shoulders"
    assert not drawn[:45, 30:].any() and not drawn[:45, :17].any(), "the bare surface"
    assert drawn[49:51, 40:].all(), "the shadow's edge"
    assert drawn[56:, 30:].mean() < 0.02, "not the inside of the shadow, however textured"
    assert not drawn_structures(before, before).any()


def test_a_generated_crop_marks_its_structures_but_never_near_a_crack():
    config = SynthConfig(p_structures=1.0, p_distractor=1.0, p_crack=1.0)
    for seed in range(6):
        image, mask, drawn = synthetic_sample(surface(200, seed), np.random.default_rng(seed), 128, config, NO_WARP,
                                              mark_drawn=True)
        assert mask.any() and drawn.any()
        near = np.zeros_like(mask)
        ys, xs = np.nonzero(mask)
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                near[np.clip(ys + dy, 0, 127), np.clip(xs + dx, 0, 127)] = 1
        assert not (drawn & near).any(), f"seed {seed}: a drawn pixel within 2 px of a crack"


def test_the_source_turns_drawn_pixels_into_loss_weights():
    config = SynthConfig(p_structures=1.0, p_distractor=0.0, p_crack=0.0)
    rng = lambda: np.random.default_rng(3)  # noqa: E731 - the same draw for each source
    plain = SynthSource([surface(200)], config, NO_WARP)
    weighted = SynthSource([surface(200)], config, NO_WARP, joint_weight=4.0)
    image_a, mask_a, w_a = plain.sample(0, rng(), 96)
    image_b, mask_b, w_b = weighted.sample(0, rng(), 96)
    assert np.array_equal(image_a, image_b) and np.array_equal(mask_a, mask_b), "the weight changes no pixel"
    assert w_a.dtype == np.float32 and np.all(w_a == 1.0)
    assert set(np.unique(w_b)) == {1.0, 4.0} and (w_b == 4.0).mean() > 0.005
    with pytest.raises(ValueError, match="joint weight"):
        SynthSource([surface(64)], config, joint_weight=0.5)


def test_the_weights_reach_the_loss_through_the_training_crops():
    images = [surface(160, s) for s in range(2)]
    data = CrackImages(["a", "b"], images, [np.zeros((160, 160), np.uint8)] * 2)
    config = SynthConfig(p_structures=1.0, p_distractor=1.0, p_crack=0.0)
    crops = TrainCrops(data, 96, NO_WARP, seed=0, n_draws=40,
                       extras=[(SynthSource(images, config, NO_WARP, joint_weight=3.0), 0.5)])
    generated = [d for d in range(len(crops)) if crops.source_of(d) == 1]
    real = [d for d in range(len(crops)) if crops.source_of(d) == 0]
    assert generated and real
    _, _, valid = crops[generated[0]]
    assert valid.dtype == torch.float32 and valid.max() == 3.0 and valid.min() == 1.0
    _, _, valid_real = crops[real[0]]
    assert valid_real.max() == 1.0
    # a false positive on a drawn joint costs more than the same false positive elsewhere
    image, target, valid = crops[generated[0]]
    logits = torch.full_like(target, -4.0)[None]
    on_joint, off_joint = logits.clone(), logits.clone()
    on_joint[0][valid > 1] = 4.0
    k = int((valid > 1).sum())
    off_idx = torch.nonzero((valid == 1).flatten())[:k, 0]
    off_joint.view(-1)[off_idx] = 4.0
    bce = build_loss("bce")
    assert bce(on_joint, target[None], valid[None]) > 2 * bce(off_joint, target[None], valid[None])


def test_the_flag_is_checked():
    with pytest.raises(ConfigError, match="--joint-weight"):
        TrainConfig(data=["x"], joint_weight=0.5, synth_fraction=0.3)
    with pytest.raises(ConfigError, match="--joint-weight must be 1 without --synth-fraction"):
        TrainConfig(data=["x"], joint_weight=2.0)
    assert TrainConfig(data=["x"]).joint_weight == 1.0
    assert TrainConfig(data=["x"], joint_weight=3.0, synth_fraction=0.3).joint_weight == 3.0
