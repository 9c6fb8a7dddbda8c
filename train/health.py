"""Is the network still learning? Detect a dead or constant network during training.

A U-Net without normalisation layers can die in its first steps: a ReLU layer whose output is zero
at every pixel passes no gradient to anything below it, the output becomes one constant, and the
loss still creeps down because the last bias learns the crack share. Scores do not show it clearly
(a constant output scores the crack share as AP, about 0.04). Two checks, both on numbers the
training step has anyway:

* every step (:class:`DeadNetworkWatch`): the gradient of the first convolution is exactly zero, or
  the output is exactly constant over the batch, for ``patience`` steps in a row. A live network
  never does that; a dead one never recovers (nothing below the closed layer can change).
* every validation (:func:`validation_verdict`): the prediction is constant over the whole
  validation set, or its AP is no better than guessing (at most ``CHANCE_AP_RATIO`` times the crack
  share). Early in training that is normal, so it is a warning in words, not a stop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DEAD_PATIENCE_STEPS = 20  # steps in a row without gradient below the head before training stops
CHANCE_AP_RATIO = 1.5  # validation AP at most this times the crack share: no better than chance
CONSTANT_PROB_SPREAD = 1e-4  # max - min probability over the validation set below this: one constant


class DeadNetworkError(RuntimeError):
    """The network died during training; the message says what was seen and what to do."""


@dataclass(frozen=True)
class StepHealth:
    """What one training step shows of the network: gradient reaching the first layer, output spread."""

    first_layer_grad_norm: float  # L2 norm of the first convolution's weight gradient
    logit_spread: float  # standard deviation of the output logits over the batch's pixels
    mean_probability: float  # mean predicted crack probability over the batch

    @property
    def dead(self) -> bool:
        """No gradient reaches the bottom of the network, or the output is one exact constant."""
        return self.first_layer_grad_norm == 0.0 or self.logit_spread == 0.0


class DeadNetworkWatch:
    """Counts steps in a row on which :attr:`StepHealth.dead` holds; past ``patience`` it raises.

    One dead step can be chance (a crop whose every pixel closes the head); a dead network has no
    gradient below the head for good, so only ``patience`` dead steps in a row stop training.
    """

    def __init__(self, patience: int = DEAD_PATIENCE_STEPS) -> None:
        if patience < 1:
            raise ValueError(f"patience must be at least 1 step, got {patience}")
        self.patience = int(patience)
        self.dead_steps = 0

    def observe(self, health: StepHealth, *, epoch: int, step: int, lr: float) -> None:
        """Record one step; raise :class:`DeadNetworkError` once ``patience`` dead steps follow each other."""
        self.dead_steps = self.dead_steps + 1 if health.dead else 0
        if self.dead_steps >= self.patience:
            raise DeadNetworkError(dead_message(health, epoch=epoch, step=step, steps=self.dead_steps, lr=lr))


def dead_message(health: StepHealth, *, epoch: int, step: int, steps: int, lr: float) -> str:
    """One message for people: what happened, why it will not heal, what to do."""
    what = ("no gradient reaches the first layer" if health.first_layer_grad_norm == 0.0
            else "the output is one constant at every pixel")
    return (
        f"the network died at epoch {epoch} step {step}: for {steps} steps in a row {what} "
        f"(it predicts a crack probability of {health.mean_probability:.4f} everywhere). A ReLU layer "
        "is closed at every pixel, so nothing below it can learn any more and training cannot recover. "
        f"Start a fresh run (not --resume) with a lower --lr (now {lr:g}), or --init from a trained model; "
        "networks built by this version start with an open head (docs/TRAIN.md, 'Dead networks')."
    )


def constant_prediction(prob_min: float, prob_max: float) -> bool:
    """The prediction over a whole validation set is one constant (a dead network's output)."""
    return prob_max - prob_min < CONSTANT_PROB_SPREAD


def validation_verdict(ap: float, crack_share: float, prob_min: float, prob_max: float) -> str | None:
    """A warning in words when validation shows a network that detects nothing, else None."""
    if constant_prediction(prob_min, prob_max):
        return (f"the prediction is one constant over the whole validation set (probability {prob_min:.4f}"
                f" to {prob_max:.4f}): the network detects nothing yet")
    if crack_share > 0 and math.isfinite(ap) and ap <= CHANCE_AP_RATIO * crack_share:
        return (f"validation AP {ap:.3f} is no better than chance (the crack share is {crack_share:.3f}): "
                "the network does not tell cracks from background yet")
    return None


def detection_words(precision: float, recall: float, threshold: float) -> str | None:
    """Words for scores that read oddly as numbers: nothing detected, or everything marked."""
    if recall == 0.0:
        return (f"it detects nothing at threshold {threshold:.2f}: no pixel reaches it (precision is "
                "reported as 1 when nothing is predicted)")
    if recall >= 0.999 and precision < 0.2:
        return f"it marks almost every pixel as crack at threshold {threshold:.2f}"
    return None


__all__ = [
    "DEAD_PATIENCE_STEPS", "DeadNetworkError", "DeadNetworkWatch", "StepHealth", "constant_prediction",
    "dead_message", "detection_words", "validation_verdict",
]
