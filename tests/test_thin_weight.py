"""Thin cracks weigh more (--thin-weight): which pixels count as thin, the weights, the loss, the flag."""

from __future__ import annotations

import pytest
import torch

from train.config import ConfigError, TrainConfig
from train.losses import ThinWeightedLoss, build_loss, thin_crack_pixels, thin_crack_weights


def _target() -> torch.Tensor:
    t = torch.zeros(1, 1, 40, 60)
    t[0, 0, 10, 5:30] = 1  # a 1-px hairline
    t[0, 0, 20:22, 5:30] = 1  # a 2-px crack
    t[0, 0, 28:33, 5:30] = 1  # a 5-px crack
    t[0, 0, 0:3, 40:60] = 1  # a 3-px crack along the top edge
    return t


def test_only_cracks_thinner_than_3_px_are_thin():
    thin = thin_crack_pixels(_target())[0, 0]
    assert thin[10, 5:30].eq(1).all() and thin[20:22, 5:30].eq(1).all()
    assert thin[28:33, 6:29].eq(0).all(), "a 5-px crack is not thin (its ends' corners aside)"
    assert thin[0:3, 41:59].eq(0).all(), "a 3-px crack at the border keeps its width: the outside is not background"
    assert thin.sum() == 25 + 50


def test_weights_are_the_factor_on_thin_pixels_one_elsewhere_zero_outside_valid():
    target = _target()
    valid = torch.ones_like(target)
    valid[..., :, 50:] = 0
    w = thin_crack_weights(target, valid, 4.0)[0, 0]
    assert w[10, 5:30].eq(4).all() and w[30, 10].item() == 1.0 and w[35, 0].item() == 1.0
    assert w[:, 50:].eq(0).all()
    assert thin_crack_weights(target, None, 1.0).eq(1).all()


def test_a_missed_hairline_costs_more_with_the_weight():
    target = _target()
    logits = torch.where(target > 0, 3.0, -3.0)
    logits[0, 0, 10, 5:30] = -3.0  # the hairline is missed, everything else is right
    bce = build_loss("bce")
    plain, weighted = bce(logits, target), ThinWeightedLoss(bce, 5.0)(logits, target)
    assert weighted > 2 * plain  # a weighted mean: the weights also grow the denominator
    found = torch.where(target > 0, 3.0, -3.0)
    assert ThinWeightedLoss(bce, 5.0)(found, target) == pytest.approx(bce(found, target).item(), rel=1e-6)
    with pytest.raises(ValueError, match="thin-crack weight"):
        ThinWeightedLoss(bce, 0.5)


def test_the_flag_is_checked():
    with pytest.raises(ConfigError, match="--thin-weight"):
        TrainConfig(data=["x"], thin_weight=0.5)
    assert TrainConfig(data=["x"]).thin_weight == 1.0
