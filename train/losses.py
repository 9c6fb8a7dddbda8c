"""Every training loss: the paper's AELF and Exp (Liu et al. 2022, eqs. 6-7) and the baselines.

Two families, by what they take:

* on **probabilities** ``prob`` in [0, 1]: :func:`aelf_loss`, :func:`exp_loss`, :func:`l1_loss`,
  :func:`l2_loss`, :func:`dice_loss`, :func:`tversky_loss`;
* on **logits** (numerically stable sigmoid inside): :func:`bce_loss`, :func:`weighted_bce_loss`,
  :func:`focal_loss`.

:data:`LOSSES` registers each of them once (as timm registers models): its name, the function,
whether it takes probabilities, its options with their defaults (read from the function's signature,
their one home) and whether it saturates. :func:`build_loss` hides the difference between the
families: it returns one callable ``(logits, target, valid=None)``.
``target`` is a float tensor in {0, 1} (1 = crack) of the same shape as the prediction; ``valid``
(same shape, bool or 0/1) marks the pixels that count, so padding added to reach a multiple of 16
never contributes. Every loss is computed in float32 with autocast disabled: under AMP (fp16/bf16)
``exp`` and the cubic term lose too much precision, and a half-precision sigmoid reaches exactly 0 or 1.

The baselines (weighted BCE, Dice, Focal, Tversky) are written here rather than taken from
segmentation_models_pytorch or MONAI: each is a few lines, and either package would add a large
dependency tree to the training install for ~60 lines of code.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

LossFn = Callable[..., torch.Tensor]


# --------------------------------------------------------------------------- helpers


def _float32(*tensors: torch.Tensor | None) -> list[torch.Tensor | None]:
    return [None if t is None else t.float() for t in tensors]


def _check_shapes(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None, what: str) -> None:
    if pred.shape != target.shape:
        raise ValueError(
            f"loss target must have the shape of the {what} {tuple(pred.shape)}, got {tuple(target.shape)}"
        )
    if valid is not None and valid.shape != pred.shape:
        raise ValueError(
            f"loss valid mask must have the shape of the {what} {tuple(pred.shape)}, got {tuple(valid.shape)}"
        )


def _mean(values: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Mean of per-pixel values over the valid pixels (0 when none is valid)."""
    if valid is None:
        return values.mean()
    weight = valid.float()
    return (values * weight).sum() / weight.sum().clamp_min(1.0)


def _no_autocast(device: torch.device) -> torch.autocast:
    return torch.autocast(device_type=device.type, enabled=False)


def _prepare_prob(prob: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None):
    _check_shapes(prob, target, valid, "probabilities")
    prob, target, valid = _float32(prob, target, valid)
    # a sigmoid never leaves [0, 1], but a caller's probabilities might by rounding
    return prob.clamp(0.0, 1.0), target, valid


def _prepare_logits(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None):
    _check_shapes(logits, target, valid, "logits")
    return _float32(logits, target, valid)


# --------------------------------------------------------------------------- the paper's losses


def aelf_loss(
    prob: torch.Tensor,
    target: torch.Tensor,
    alpha: float = 1.0,
    beta: float = 0.7,
    gamma1: float = 0.0,
    gamma2: float = 0.0,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Asymmetric exponential loss, eq. (7): mean of exp(a|d|^3 + b d^2 + g d), d = prob - target.

    g = ``gamma1`` on the false-positive side (d > 0), ``gamma2`` on the false-negative side (d <= 0):
    a larger gamma1 punishes false positives more, a smaller gamma2 punishes false negatives more
    (g d < 0 there). Since |d| <= 1 the exponent is bounded by alpha + beta + max|gamma|.
    """
    with _no_autocast(prob.device):
        prob, target, valid = _prepare_prob(prob, target, valid)
        d = prob - target
        gamma = gamma2 + (gamma1 - gamma2) * (d > 0).float()  # gamma1 where d > 0, else gamma2
        return _mean(torch.exp(alpha * d.abs().pow(3) + beta * d.square() + gamma * d), valid)


def exp_loss(
    prob: torch.Tensor,
    target: torch.Tensor,
    alpha: float = 1.0,
    beta: float = 0.7,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric exponential loss, eq. (6): mean of exp(a|d|^3 + b d^2), d = prob - target."""
    return aelf_loss(prob, target, alpha, beta, 0.0, 0.0, valid=valid)


def l1_loss(prob: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean absolute error |prob - target| (the paper's L1 baseline)."""
    with _no_autocast(prob.device):
        prob, target, valid = _prepare_prob(prob, target, valid)
        return _mean((prob - target).abs(), valid)


def l2_loss(prob: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error (prob - target)^2 (the paper's L2 baseline)."""
    with _no_autocast(prob.device):
        prob, target, valid = _prepare_prob(prob, target, valid)
        return _mean((prob - target).square(), valid)


# --------------------------------------------------------------------------- baselines on logits


def bce_loss(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy from logits (the paper's BCE baseline), mean over valid pixels."""
    with _no_autocast(logits.device):
        logits, target, valid = _prepare_logits(logits, target, valid)
        return _mean(F.binary_cross_entropy_with_logits(logits, target, reduction="none"), valid)


def auto_pos_weight(target: torch.Tensor, valid: torch.Tensor | None = None, cap: float = 100.0) -> float:
    """Background/crack pixel ratio of a batch, in [1, cap] (1 when the batch has no crack pixel)."""
    t = target.float() if valid is None else target.float() * valid.float()
    n_valid = float(target.numel() if valid is None else valid.float().sum())
    n_crack = float(t.sum())
    if n_crack <= 0:
        return 1.0
    return float(min(max((n_valid - n_crack) / n_crack, 1.0), cap))


def weighted_bce_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    pos_weight: float | None = None,
    pos_weight_cap: float = 100.0,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """BCE from logits with the crack term weighted by ``pos_weight``.

    loss = -[w t log s(x) + (1 - t) log(1 - s(x))], mean over valid pixels. ``pos_weight=None``
    uses the batch's background/crack ratio (:func:`auto_pos_weight`), capped at ``pos_weight_cap``
    so a crop with three crack pixels does not get a weight of 80 000.
    """
    with _no_autocast(logits.device):
        logits, target, valid = _prepare_logits(logits, target, valid)
        w = auto_pos_weight(target, valid, pos_weight_cap) if pos_weight is None else float(pos_weight)
        per_pixel = F.binary_cross_entropy_with_logits(
            logits, target, reduction="none", pos_weight=torch.tensor(w, device=logits.device)
        )
        return _mean(per_pixel, valid)


def focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    focal_alpha: float = 0.25,
    focal_gamma: float = 2.0,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Focal loss (Lin et al. 2017) from logits: -a_t (1 - p_t)^g log p_t, mean over valid pixels.

    a_t = ``focal_alpha`` on crack pixels, 1 - ``focal_alpha`` on background; p_t is the probability
    of the true class. (1 - p_t)^g is computed as exp(g * logsigmoid(-z)) with z the signed logit, so
    the gradient stays finite for any g > 0 even where a float32 sigmoid saturates to 1.
    """
    with _no_autocast(logits.device):
        logits, target, valid = _prepare_logits(logits, target, valid)
        ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        signed = logits * (2.0 * target - 1.0)  # logit of the true class (target in {0, 1})
        modulating = torch.exp(focal_gamma * F.logsigmoid(-signed))  # (1 - p_t)^gamma
        alpha_t = focal_alpha * target + (1.0 - focal_alpha) * (1.0 - target)
        return _mean(alpha_t * modulating * ce, valid)


# --------------------------------------------------------------------------- overlap losses on probabilities


def tversky_loss(
    prob: torch.Tensor,
    target: torch.Tensor,
    tversky_alpha: float = 0.3,
    tversky_beta: float = 0.7,
    smooth: float = 1.0,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Soft Tversky loss 1 - (TP + s) / (TP + a FP + b FN + s) over the whole batch.

    TP = sum p t, FP = sum p (1 - t), FN = sum (1 - p) t (soft counts, valid pixels only);
    a weighs false positives, b false negatives (Salehi et al. 2017: a = 0.3, b = 0.7 favours recall).
    ``smooth`` (in pixels) makes an empty target with an empty prediction a loss of 0.
    """
    with _no_autocast(prob.device):
        prob, target, valid = _prepare_prob(prob, target, valid)
        if valid is not None:
            prob, target = prob * valid, target * valid
        tp = (prob * target).sum()
        fp = (prob * (1.0 - target)).sum()
        fn = ((1.0 - prob) * target).sum()
        return 1.0 - (tp + smooth) / (tp + tversky_alpha * fp + tversky_beta * fn + smooth)


def dice_loss(
    prob: torch.Tensor, target: torch.Tensor, smooth: float = 1.0, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Soft Dice loss 1 - (2 sum p t + s) / (sum p + sum t + s) over the whole batch (Tversky, a = b = 0.5)."""
    return tversky_loss(prob, target, 0.5, 0.5, smooth, valid=valid)


# --------------------------------------------------------------------------- factory


@dataclass(frozen=True)
class LossSpec:
    """One registered loss: what :func:`build_loss` needs to know about it, in one place."""

    name: str
    fn: LossFn  # fn(x, target, **options, valid=None) with x probabilities or logits
    on_probabilities: bool  # True: fn takes sigmoid(logits); False: fn takes the logits
    saturates: bool = False  # bounded on probabilities: no gradient past a saturated sigmoid (BCE warm-up helps)

    @property
    def options(self) -> dict[str, float | None]:
        """The loss's keyword options with their defaults, from ``fn``'s signature (their one home)."""
        params = inspect.signature(self.fn).parameters
        return {n: p.default for n, p in params.items() if p.default is not inspect.Parameter.empty and n != "valid"}


LOSSES: dict[str, LossSpec] = {
    spec.name: spec
    for spec in (
        LossSpec("aelf", aelf_loss, on_probabilities=True, saturates=True),
        LossSpec("exp", exp_loss, on_probabilities=True, saturates=True),
        LossSpec("l1", l1_loss, on_probabilities=True, saturates=True),
        LossSpec("l2", l2_loss, on_probabilities=True, saturates=True),
        LossSpec("bce", bce_loss, on_probabilities=False),
        LossSpec("wbce", weighted_bce_loss, on_probabilities=False),
        LossSpec("dice", dice_loss, on_probabilities=True),
        LossSpec("focal", focal_loss, on_probabilities=False),
        LossSpec("tversky", tversky_loss, on_probabilities=True),
    )
}
LOSS_NAMES: tuple[str, ...] = tuple(LOSSES)
# every option of any loss: build_loss accepts them all (and ignores the others'), so a CLI can pass its flags
LOSS_OPTIONS: dict[str, float | None] = {n: v for spec in LOSSES.values() for n, v in spec.options.items()}


@dataclass(frozen=True)
class Loss:
    """A configured loss: ``loss(logits, target, valid=None) -> scalar``; its name and parameters print."""

    name: str
    params: dict = field(default_factory=dict)

    def __call__(
        self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        _check_shapes(logits, target, valid, "logits")
        spec = LOSSES[self.name]
        if spec.on_probabilities:
            with _no_autocast(logits.device):
                x = torch.sigmoid(logits.float())
        else:
            x = logits
        return spec.fn(x, target, **self.params, valid=valid)


def _check_option(option: str, value: object) -> None:
    if value is None and option == "pos_weight":
        return  # wbce: the batch's own background/crack ratio
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"loss option {option} must be a finite number, got {value!r}")
    if option in ("pos_weight", "pos_weight_cap", "smooth") and value < 0:
        raise ValueError(f"loss option {option} must be >= 0, got {value}")
    if option == "focal_alpha" and not 0.0 <= value <= 1.0:
        raise ValueError(f"loss option focal_alpha must be in [0, 1], got {value}")


def build_loss(name: str, **options: float | None) -> Loss:
    """Return the loss ``name`` (one of :data:`LOSS_NAMES`) as a callable ``(logits, target, valid=None)``.

    ``options``: any of :data:`LOSS_OPTIONS` (the paper's AELF/Exp ``alpha, beta, gamma1, gamma2``,
    eqs. 6-7; the baselines' ``pos_weight``, ``pos_weight_cap``, ``focal_alpha``, ``focal_gamma``,
    ``tversky_alpha``, ``tversky_beta``, ``smooth``); unset ones take the loss function's defaults.
    Options another loss uses are accepted and ignored; unknown ones raise. The callable takes logits
    and converts them to probabilities itself where the loss is defined on probabilities.
    """
    key = str(name).lower()
    if key not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid names: {', '.join(LOSS_NAMES)}")
    unknown = sorted(set(options) - set(LOSS_OPTIONS))
    if unknown:
        raise ValueError(f"unknown loss option(s) {', '.join(unknown)}; valid: {', '.join(LOSS_OPTIONS)}")
    for option, value in options.items():
        _check_option(option, value)
    params = {**LOSSES[key].options, **{k: v for k, v in options.items() if k in LOSSES[key].options}}
    return Loss(key, {k: None if v is None else float(v) for k, v in params.items()})


class WarmupLoss:
    """BCE for the first ``warmup_steps`` optimizer steps, then ``loss`` (``--bce-warmup-steps``).

    The losses that saturate (``LossSpec.saturates``: AELF, Exp, L1, L2) pass almost no gradient through a saturated
    sigmoid: from a random start at a high learning rate the network can settle on "no crack
    anywhere" and stay there. A short BCE start puts the crack pixels where those losses have a
    gradient. ``step`` counts calls (one per optimizer step) and starts at ``start_step`` so a
    resumed run switches at the same step as an uninterrupted one.
    """

    def __init__(self, loss: Loss, warmup_steps: int, start_step: int = 0) -> None:
        self.loss, self.warmup, self.step = loss, int(warmup_steps), int(start_step)
        self.bce = build_loss("bce")
        self.name = loss.name

    def __call__(self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        chosen = self.bce if self.step < self.warmup else self.loss
        self.step += 1
        return chosen(logits, target, valid)


# --------------------------------------------------------------------------- thin cracks weigh more


def thin_crack_pixels(target: torch.Tensor) -> torch.Tensor:
    """1 on the crack pixels of cracks thinner than 3 px (those a 3 x 3 morphological opening removes:
    the hairlines of the "<= 2 px" width bin), else 0; ``target`` N x 1 x H x W in {0, 1}. Outside the
    image counts as crack for the erosion, so a crack is not thinned where it leaves the crop."""
    t = target.float()
    eroded = -F.max_pool2d(-t, 3, stride=1, padding=1)
    opened = F.max_pool2d(eroded, 3, stride=1, padding=1)
    return t * (1.0 - opened)


def thin_crack_weights(target: torch.Tensor, valid: torch.Tensor | None, weight: float) -> torch.Tensor:
    """Per-pixel loss weights: ``weight`` on thin-crack pixels (:func:`thin_crack_pixels`), 1 elsewhere,
    0 outside ``valid``; every loss here averages with ``valid`` as weights."""
    w = 1.0 + (float(weight) - 1.0) * thin_crack_pixels(target)
    return w if valid is None else w * valid.float()


class ThinWeightedLoss:
    """``loss`` with the pixels of thin cracks weighing ``weight`` times the others (``--thin-weight``).

    Cracks at most 2 px wide are a small share of the labelled crack pixels (6 % in the first 40 test
    images of each of the six sets, bench_generalization) and the hardest to see; weighing them more asks
    the network to find them, at the price of some thin false positives.
    """

    def __init__(self, loss: Loss, weight: float) -> None:
        if not (math.isfinite(weight) and weight >= 1.0):
            raise ValueError(f"thin-crack weight must be >= 1, got {weight!r}")
        self.loss, self.weight = loss, float(weight)
        self.name = getattr(loss, "name", "loss")

    def __call__(self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        return self.loss(logits, target, thin_crack_weights(target, valid, self.weight))


# --------------------------------------------------------------------------- centre lines (soft clDice)


def soft_skeleton(x: torch.Tensor, iters: int = 10) -> torch.Tensor:
    """Differentiable skeleton of a soft mask ``x`` (N x 1 x H x W in [0, 1]), as in Shit et al., "clDice - a
    novel topology-preserving loss function for tubular structure segmentation" (CVPR 2021): repeated soft
    erosion (min pooling) keeps, at each depth, what a soft opening removes. ``iters`` erosions reach the centre
    of cracks up to about 2 x ``iters`` px wide; a 1-px line is its own skeleton."""

    def erode(t: torch.Tensor) -> torch.Tensor:  # the cross-shaped min of the reference implementation
        return torch.minimum(-F.max_pool2d(-t, (3, 1), 1, (1, 0)), -F.max_pool2d(-t, (1, 3), 1, (0, 1)))

    def dilate(t: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(t, 3, 1, 1)

    skel = F.relu(x - dilate(erode(x)))
    for _ in range(iters):
        x = erode(x)
        delta = F.relu(x - dilate(erode(x)))
        skel = skel + F.relu(delta - skel * delta)
    return skel


def cldice_loss(prob: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None, *,
                iters: int = 10, smooth: float = 1.0) -> torch.Tensor:
    """Soft clDice: 1 - the harmonic mean of the share of the prediction's centre line inside the label
    (topology precision) and the share of the label's centre line the prediction covers (topology
    sensitivity), over the whole batch. Each crack counts by its length, not its area: a missed 1-px hairline
    costs as much per pixel of length as a missed 10-px crack, where an area loss charges it a tenth."""
    prob, target = prob.float(), target.float()
    if valid is not None:
        prob, target = prob * valid, target * valid
    skel_p, skel_t = soft_skeleton(prob, iters), soft_skeleton(target, iters)
    t_prec = ((skel_p * target).sum() + smooth) / (skel_p.sum() + smooth)
    t_sens = ((skel_t * prob).sum() + smooth) / (skel_t.sum() + smooth)
    return 1.0 - 2.0 * t_prec * t_sens / (t_prec + t_sens)


class CenterlineLoss:
    """``loss`` plus ``weight`` x soft clDice on the probabilities (``--cldice-weight``): the pixel loss keeps
    the map calibrated, the centre-line term asks the network to cover every crack's length, hairlines
    included, and to keep its own centre lines on cracks."""

    def __init__(self, loss, weight: float, iters: int = 10) -> None:
        if not (math.isfinite(weight) and weight > 0.0):
            raise ValueError(f"centre-line (clDice) weight must be > 0, got {weight!r}")
        self.loss, self.weight, self.iters = loss, float(weight), int(iters)
        self.name = getattr(loss, "name", "loss")

    def __call__(self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        base = self.loss(logits, target, valid)
        with _no_autocast(logits.device):
            prob = torch.sigmoid(logits.float())
            return base + self.weight * cldice_loss(prob, target, None if valid is None else (valid > 0).float(),
                                                    iters=self.iters)
