"""The centre-line term (--cldice-weight): the soft skeleton, soft clDice, the wrapper, the flag."""

from __future__ import annotations

import pytest
import torch

from train.config import ConfigError, TrainConfig
from train.losses import CenterlineLoss, build_loss, cldice_loss, soft_skeleton


def _target() -> torch.Tensor:
    t = torch.zeros(1, 1, 40, 60)
    t[0, 0, 10, 5:30] = 1  # a 1-px hairline, 25 px long
    t[0, 0, 26:33, 5:50] = 1  # a 7-px crack, 45 px long
    return t


def test_the_skeleton_is_the_hairline_itself_and_the_centre_line_of_a_wide_crack():
    skel = soft_skeleton(_target())[0, 0]
    assert skel[10, 5:30].eq(1).all(), "a 1-px line is its own skeleton"
    assert skel[29, 8:47].eq(1).all(), "the middle row of the 7-px crack"
    assert skel[26:29, 10].eq(0).all() and skel[30:33, 10].eq(0).all(), "nothing off the centre line"
    assert skel.sum() == 25 + 39


def test_a_missed_hairline_costs_and_the_same_area_off_a_wide_crack_does_not():
    target = _target()
    assert cldice_loss(target.clone(), target).item() == pytest.approx(0.0, abs=1e-6)
    no_hairline = target.clone()
    no_hairline[0, 0, 10, 5:30] = 0
    no_rim = target.clone()
    no_rim[0, 0, 26, 5:30] = 0  # 25 px off the wide crack's edge: its centre line is still covered
    assert cldice_loss(no_hairline, target).item() > 0.2
    assert cldice_loss(no_rim, target).item() == pytest.approx(0.0, abs=1e-6)


def test_a_false_line_lowers_topology_precision():
    target = _target()
    extra = target.clone()
    extra[0, 0, 18, 5:55] = 1  # a straight line where there is no crack
    assert cldice_loss(extra, target).item() > 0.1


def test_outside_valid_does_not_count():
    target = _target()
    pred = target.clone()
    pred[0, 0, :, 50:] = 1  # wrong, but outside the valid area
    valid = torch.ones_like(target)
    valid[..., 50:] = 0
    assert cldice_loss(pred, target, valid).item() == pytest.approx(0.0, abs=1e-6)
    assert cldice_loss(pred, target).item() > 0.1


def test_the_wrapper_adds_the_weighted_term_and_passes_gradient_to_the_missed_hairline():
    target = _target()
    logits = torch.where(target > 0, 4.0, -4.0)
    logits[0, 0, 10, 5:30] = -1.0  # a faint hairline, below the threshold
    logits.requires_grad_()
    bce = build_loss("bce")
    total = CenterlineLoss(bce, 0.5)(logits, target)
    expected = bce(logits, target) + 0.5 * cldice_loss(torch.sigmoid(logits), target)
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    total.backward()
    bce_only = logits.detach().clone().requires_grad_()
    bce(bce_only, target).backward()
    hair = (slice(None), slice(None), 10, slice(5, 30))
    assert logits.grad[hair].sum() < 3 * bce_only.grad[hair].sum() < 0, "the term pushes the hairline up harder"
    with pytest.raises(ValueError, match="clDice"):
        CenterlineLoss(bce, 0.0)


def test_the_flag_is_checked():
    with pytest.raises(ConfigError, match="--cldice-weight"):
        TrainConfig(data=["x"], cldice_weight=-1.0)
    assert TrainConfig(data=["x"]).cldice_weight == 0.0


def test_train_run_adds_the_term_around_the_pixel_loss():
    from train.loop import _loss
    from train.losses import ThinWeightedLoss

    plain = _loss(TrainConfig(data=["x"], loss="bce"), 10, 0, False)
    assert not isinstance(plain, CenterlineLoss)
    both = _loss(TrainConfig(data=["x"], loss="bce", cldice_weight=0.1, thin_weight=3.0), 10, 0, False)
    assert isinstance(both, CenterlineLoss) and both.weight == 0.1 and isinstance(both.loss, ThinWeightedLoss)
