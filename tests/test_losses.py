"""Losses: AELF/Exp against eqs. (6)-(7) and their derivative, the gamma tilt, masks, AMP, baselines."""

from __future__ import annotations

import math

import pytest
import torch

from train.losses import (
    LOSS_NAMES,
    aelf_loss,
    auto_pos_weight,
    bce_loss,
    build_loss,
    dice_loss,
    exp_loss,
    focal_loss,
    l1_loss,
    l2_loss,
    tversky_loss,
    weighted_bce_loss,
)


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).reshape(1, 1, 1, -1)


# ----------------------------------------------------------------------------- AELF / Exp


def test_aelf_values_at_hand_computed_points():
    a, b, g1, g2 = 1.0, 0.7, 0.1, -0.2
    # d = +0.5 (false-positive side): exp(0.125 + 0.175 + 0.1 * 0.5)
    assert aelf_loss(t(0.5), t(0), a, b, g1, g2).item() == pytest.approx(math.exp(0.35), rel=1e-6)
    # d = -0.5 (false-negative side): exp(0.125 + 0.175 + (-0.2)(-0.5))
    assert aelf_loss(t(0.5), t(1), a, b, g1, g2).item() == pytest.approx(math.exp(0.40), rel=1e-6)
    # d = 0: exp(0) = 1, whatever the parameters
    assert aelf_loss(t(0.0), t(0), a, b, g1, g2).item() == pytest.approx(1.0)
    assert aelf_loss(t(1.0), t(1), 3.0, 2.0, 0.5, -0.5).item() == pytest.approx(1.0)
    # d = -1 with alpha=2, beta=0.5: exp(2 + 0.5 + 0.2) -- the largest error on the FN side
    assert aelf_loss(t(0.0), t(1), 2.0, 0.5, g1, g2).item() == pytest.approx(math.exp(2.7), rel=1e-6)
    # mean over pixels
    both = aelf_loss(t(0.5, 0.5), t(0, 1), a, b, g1, g2).item()
    assert both == pytest.approx((math.exp(0.35) + math.exp(0.40)) / 2, rel=1e-6)


def test_exp_loss_values_and_symmetry():
    # eq. (6): exp(|d|^3 + 0.7 d^2) at d = +-0.3
    expected = math.exp(0.027 + 0.7 * 0.09)
    assert exp_loss(t(0.3), t(0)).item() == pytest.approx(expected, rel=1e-6)
    assert exp_loss(t(0.7), t(1)).item() == pytest.approx(expected, rel=1e-6)


def test_aelf_with_zero_gammas_equals_exp():
    torch.manual_seed(0)
    prob = torch.rand(2, 1, 16, 16)
    target = (torch.rand(2, 1, 16, 16) > 0.7).float()
    for a, b in [(1.0, 0.7), (2.0, 0.1), (0.5, 1.5)]:
        assert torch.allclose(aelf_loss(prob, target, a, b, 0.0, 0.0), exp_loss(prob, target, a, b))
    x = torch.randn(2, 1, 16, 16)
    assert torch.allclose(build_loss("aelf")(x, target), build_loss("exp")(x, target))


@pytest.mark.parametrize("params", [(1.0, 0.7, 0.0, 0.0), (1.0, 0.7, 0.07, -0.07), (2.0, 0.3, -0.03, 0.05)])
def test_aelf_gradient_matches_derivative_of_eq7(params):
    a, b, g1, g2 = params
    prob = torch.tensor([0.02, 0.3, 0.55, 0.97, 0.02, 0.45, 0.8, 0.999], dtype=torch.float64)
    target = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1], dtype=torch.float64)
    prob = prob.reshape(1, 1, 2, 4).requires_grad_(True)
    target = target.reshape(1, 1, 2, 4)
    aelf_loss(prob, target, a, b, g1, g2).backward()
    d = (prob - target).detach()
    gamma = torch.where(d > 0, torch.tensor(g1, dtype=d.dtype), torch.tensor(g2, dtype=d.dtype))
    exponent = a * d.abs() ** 3 + b * d**2 + gamma * d
    # dL/dprob = exp(E) * (3 a |d| d + 2 b d + g) / N
    analytic = torch.exp(exponent) * (3 * a * d.abs() * d + 2 * b * d + gamma) / d.numel()
    assert torch.allclose(prob.grad.double(), analytic, rtol=1e-5, atol=1e-7)


def _loss_and_grad(prob_value: float, target_value: float, g1: float, g2: float) -> tuple[float, float]:
    prob = t(prob_value).requires_grad_(True)
    loss = aelf_loss(prob, t(target_value), 1.0, 0.7, g1, g2)
    loss.backward()
    return loss.item(), prob.grad.item()


def test_gamma1_punishes_false_positives_more_and_leaves_false_negatives():
    fp_low, fp_grad_low = _loss_and_grad(0.6, 0, 0.0, 0.0)
    fp_high, fp_grad_high = _loss_and_grad(0.6, 0, 0.07, 0.0)
    assert fp_high > fp_low and fp_grad_high > fp_grad_low > 0  # pushes prob down harder
    fn_low, fn_grad_low = _loss_and_grad(0.4, 1, 0.0, 0.0)
    fn_high, fn_grad_high = _loss_and_grad(0.4, 1, 0.07, 0.0)
    assert fn_high == fn_low and fn_grad_high == fn_grad_low


def test_smaller_gamma2_punishes_false_negatives_more_and_leaves_false_positives():
    fn_ref, fn_grad_ref = _loss_and_grad(0.4, 1, 0.0, 0.0)
    fn_tilt, fn_grad_tilt = _loss_and_grad(0.4, 1, 0.0, -0.07)
    assert fn_tilt > fn_ref and fn_grad_tilt < fn_grad_ref < 0  # pushes prob up harder
    fp_ref, fp_grad_ref = _loss_and_grad(0.6, 0, 0.0, 0.0)
    fp_tilt, fp_grad_tilt = _loss_and_grad(0.6, 0, 0.0, -0.07)
    assert fp_tilt == fp_ref and fp_grad_tilt == fp_grad_ref


def test_exp_gradient_is_small_for_easy_pixels_and_large_for_hard_ones():
    # the paper's motivation: |grad| grows with |d|, faster than L2's 2|d|
    grads = []
    for p in (0.1, 0.3, 0.6, 0.9):
        _, g = _loss_and_grad(p, 0, 0.0, 0.0)
        grads.append(g)
    assert grads == sorted(grads)
    assert grads[-1] / grads[0] > 0.9 / 0.1  # L2 would give exactly 9


# ----------------------------------------------------------------------------- baselines, hand-computed


def test_l1_l2_on_probabilities_via_build_loss():
    logits = t(logit(0.2), logit(0.9))
    target = t(0, 1)
    assert build_loss("l1")(logits, target).item() == pytest.approx((0.2 + 0.1) / 2, rel=1e-5)
    assert build_loss("l2")(logits, target).item() == pytest.approx((0.04 + 0.01) / 2, rel=1e-5)
    assert l1_loss(t(0.2, 0.9), target).item() == pytest.approx(0.15, rel=1e-6)
    assert l2_loss(t(0.2, 0.9), target).item() == pytest.approx(0.025, rel=1e-6)


def test_bce_from_logits():
    # -log sigmoid(0) = log 2 for a crack; -log(1 - sigmoid(2)) = log(1 + e^2) for background
    expected = (math.log(2) + math.log(1 + math.e**2)) / 2
    assert bce_loss(t(0, 2), t(1, 0)).item() == pytest.approx(expected, rel=1e-6)
    assert build_loss("bce")(t(0, 2), t(1, 0)).item() == pytest.approx(expected, rel=1e-6)


def test_weighted_bce_given_and_automatic_pos_weight():
    # logits 0 everywhere: every pixel costs log 2; the crack pixel costs w log 2
    assert weighted_bce_loss(t(0, 0), t(1, 0), pos_weight=3.0).item() == pytest.approx(2 * math.log(2))
    target = t(1, 0, 0, 0)  # 3 background per crack pixel -> w = 3
    assert auto_pos_weight(target) == 3.0
    assert build_loss("wbce")(t(0, 0, 0, 0), target).item() == pytest.approx(6 * math.log(2) / 4, rel=1e-6)
    # capped: 9 background per crack, cap 5
    target10 = t(1, *([0] * 9))
    assert auto_pos_weight(target10, cap=5.0) == 5.0
    got = build_loss("wbce", pos_weight_cap=5.0)(torch.zeros_like(target10), target10).item()
    assert got == pytest.approx(14 * math.log(2) / 10, rel=1e-6)
    # no crack pixel: weight 1 (plain BCE)
    assert auto_pos_weight(t(0, 0)) == 1.0


def test_dice_and_tversky_hand_computed():
    prob, target = t(1.0, 0.5, 0.0), t(1, 1, 0)
    # TP = 1.5, FP = 0, FN = 0.5
    assert dice_loss(prob, target, smooth=0.0).item() == pytest.approx(1 - 3.0 / 3.5, rel=1e-6)
    expected = 1 - 1.5 / (1.5 + 0.3 * 0 + 0.7 * 0.5)
    assert tversky_loss(prob, target, 0.3, 0.7, smooth=0.0).item() == pytest.approx(expected, rel=1e-6)
    # false positives weigh 0.3: TP = 1, FP = 1, FN = 0
    assert tversky_loss(t(1, 1), t(1, 0), 0.3, 0.7, 0.0).item() == pytest.approx(1 - 1 / 1.3, rel=1e-6)
    # smoothing: empty prediction on an empty target is a perfect score
    assert dice_loss(t(0, 0), t(0, 0)).item() == pytest.approx(0.0)
    assert build_loss("dice", smooth=0.0)(t(50.0, 0.0, -50.0), target).item() == pytest.approx(
        1 / 7, rel=1e-5
    )


def test_focal_hand_computed_and_reduces_to_bce():
    # pixel 1: crack, logit 0 -> p_t 0.5: 0.25 * 0.5^2 * log 2
    # pixel 2: background, logit ln 3 -> p = 0.75, p_t = 0.25: 0.75 * 0.75^2 * log 4
    expected = (0.25 * 0.25 * math.log(2) + 0.75 * 0.5625 * math.log(4)) / 2
    assert focal_loss(t(0, math.log(3)), t(1, 0)).item() == pytest.approx(expected, rel=1e-6)
    x = torch.randn(1, 1, 8, 8)
    y = (torch.rand(1, 1, 8, 8) > 0.5).float()
    assert focal_loss(x, y, focal_alpha=0.5, focal_gamma=0.0).item() == pytest.approx(
        0.5 * bce_loss(x, y).item(), rel=1e-5
    )


# ----------------------------------------------------------------------------- masks, robustness, factory


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_valid_mask_excludes_pixels(name):
    torch.manual_seed(1)
    logits = torch.randn(1, 1, 8, 8)
    target = (torch.rand(1, 1, 8, 8) > 0.8).float()
    target[..., 0, 0] = 1.0
    valid = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    valid[..., :, :5] = True  # the right 3 columns are "padding"
    loss_fn = build_loss(name, gamma1=0.05, gamma2=-0.03)
    masked = loss_fn(logits, target, valid)
    cropped = loss_fn(logits[..., :, :5].contiguous(), target[..., :, :5].contiguous())
    # (for wbce this also checks that the automatic pos_weight counts valid pixels only)
    assert masked.item() == pytest.approx(cropped.item(), rel=1e-5)
    # garbage in the padding changes nothing, and gets no gradient
    noisy = logits.clone()
    noisy[..., :, 5:] = 40.0
    noisy.requires_grad_(True)
    again = loss_fn(noisy, target, valid)
    again.backward()
    assert again.item() == pytest.approx(masked.item(), rel=1e-5)
    assert torch.all(noisy.grad[..., :, 5:] == 0)
    assert noisy.grad[..., :, :5].abs().sum() > 0


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_finite_on_extreme_logits(name):
    torch.manual_seed(2)
    logits = torch.randn(2, 1, 16, 16) * 10
    logits[0, 0, :4] = 50.0
    logits[1, 0, :4] = -50.0
    target = (torch.rand(2, 1, 16, 16) > 0.9).float()
    target[0, 0, 0] = 0.0  # confident false positives
    target[1, 0, 0] = 1.0  # confident misses
    logits.requires_grad_(True)
    loss = build_loss(name, gamma1=0.07, gamma2=-0.07)(logits, target)
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_finite_under_bfloat16_autocast(name):
    torch.manual_seed(3)
    conv = torch.nn.Conv2d(3, 1, 3, padding=1)
    x = torch.randn(2, 3, 16, 16) * 20
    target = (torch.rand(2, 1, 16, 16) > 0.9).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = conv(x)
        assert logits.dtype == torch.bfloat16
        loss = build_loss(name)(logits, target)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(conv.weight.grad).all() and conv.weight.grad.abs().sum() > 0
    # the value matches the float32 computation on the same (rounded) logits
    assert loss.item() == pytest.approx(build_loss(name)(logits.detach().float(), target).item(), rel=1e-5)


def test_build_loss_errors_and_options():
    with pytest.raises(ValueError, match="valid names: aelf, exp, l1, l2, bce, wbce, dice, focal, tversky"):
        build_loss("crossentropy")
    with pytest.raises(ValueError, match="unknown loss option.*tversky_gama"):
        build_loss("tversky", tversky_gama=0.5)
    with pytest.raises(ValueError, match="gamma1 must be a finite number"):
        build_loss("aelf", gamma1=float("nan"))
    with pytest.raises(ValueError, match="focal_alpha must be in"):
        build_loss("focal", focal_alpha=1.5)
    # options of other losses are accepted and ignored (a CLI passes all its flags)
    loss = build_loss("AELF", gamma1=0.03, focal_gamma=3.0, tversky_alpha=0.4)
    assert loss.name == "aelf" and loss.params == {"alpha": 1.0, "beta": 0.7, "gamma1": 0.03, "gamma2": 0.0}
    with pytest.raises(ValueError, match=r"target must have the shape of the logits \(1, 1, 4, 4\)"):
        loss(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))
    with pytest.raises(ValueError, match="valid mask"):
        loss(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), torch.ones(1, 4, 4))
