"""A network that dies in training is stopped with one message and exit status 3; a live one is not.

The dead network here is made the way the paper's network dies: the deep head's 2-channel ReLU layer
closed at every pixel (its bias pushed far below zero), so no gradient reaches any layer below it.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import write_small_crackforest
from torch.utils.data import DataLoader, TensorDataset

from train.checkpoint import save_checkpoint
from train.health import (
    CHANCE_AP_RATIO,
    DEAD_PATIENCE_STEPS,
    DeadNetworkError,
    DeadNetworkWatch,
    StepHealth,
    detection_words,
    validation_verdict,
)
from train.loop import step_health, train_one_epoch
from train.losses import build_loss
from train.model import CRACK_PRIOR, build_model
from train.run import DEAD_NETWORK_EXIT
from train.run import main as run_main

LIVE = StepHealth(first_layer_grad_norm=0.3, logit_spread=0.8, mean_probability=0.05)
NO_GRADIENT = StepHealth(first_layer_grad_norm=0.0, logit_spread=0.0, mean_probability=0.04)


def close_the_head(model: torch.nn.Module) -> None:
    """Shut the deep head's 2-channel ReLU layer at every pixel: what the first Adam steps did at width 64."""
    two_channel = model.head[-3]
    assert two_channel.out_channels == 2
    with torch.no_grad():
        two_channel.bias.fill_(-1e3)


def tiny_loader(n: int = 30, side: int = 32) -> DataLoader:
    torch.manual_seed(0)
    images = torch.rand(n, 3, side, side)
    masks = (torch.rand(n, 1, side, side) > 0.95).float()
    return DataLoader(TensorDataset(images, masks, torch.ones_like(masks)), batch_size=1)


def run_epoch(model: torch.nn.Module, loader: DataLoader, watch: DeadNetworkWatch) -> int:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    _, steps = train_one_epoch(model, loader, build_loss("aelf"), optimizer, scaler, torch.device("cpu"), None,
                               epoch=1, watch=watch, clip_grad_norm=1.0)
    return steps


def test_watch_counts_dead_steps_in_a_row_and_forgives_a_live_one() -> None:
    watch = DeadNetworkWatch(patience=3)
    for step in (1, 2):
        watch.observe(NO_GRADIENT, epoch=1, step=step, lr=1e-4)
    watch.observe(LIVE, epoch=1, step=3, lr=1e-4)  # one live step: the count starts again
    assert watch.dead_steps == 0
    for step in (4, 5):
        watch.observe(NO_GRADIENT, epoch=1, step=step, lr=1e-4)
    with pytest.raises(DeadNetworkError) as caught:
        watch.observe(NO_GRADIENT, epoch=2, step=6, lr=1e-4)
    message = str(caught.value)
    assert "epoch 2 step 6" in message and "no gradient reaches the first layer" in message
    assert "0.0400 everywhere" in message and "--lr (now 0.0001)" in message and "not --resume" in message
    constant = StepHealth(first_layer_grad_norm=0.1, logit_spread=0.0, mean_probability=0.5)
    assert constant.dead and not LIVE.dead
    with pytest.raises(ValueError, match="patience"):
        DeadNetworkWatch(patience=0)


def test_a_network_with_a_closed_head_is_stopped_after_the_patience() -> None:
    model = build_model(width=4)
    close_the_head(model)
    watch = DeadNetworkWatch()
    with pytest.raises(DeadNetworkError, match=f"epoch 1 step {DEAD_PATIENCE_STEPS}: for {DEAD_PATIENCE_STEPS} steps"):
        run_epoch(model, tiny_loader(), watch)


def test_a_fresh_network_is_never_stopped() -> None:
    """The shipped init at the paper's head: only the first step has no gradient below the head (its
    2-channel layer starts with zero weights, open at every pixel); every later step has one."""
    torch.manual_seed(0)
    model = build_model(width=4)
    watch = DeadNetworkWatch(patience=2)  # two dead steps in a row would stop it
    assert run_epoch(model, tiny_loader(), watch) == 30


def test_step_health_reads_the_first_layer_gradient_and_the_output() -> None:
    torch.manual_seed(0)
    model = build_model(width=4)
    logits = model(torch.rand(1, 3, 32, 32))
    logits.mean().backward()
    health = step_health(next(model.parameters()), logits)
    assert health.dead and math.isclose(health.mean_probability, CRACK_PRIOR, rel_tol=1e-4)  # the fresh head
    torch.optim.Adam(model.parameters(), lr=1e-3).step()  # one step gives the gate layer its first weights
    model.zero_grad()
    logits = model(torch.rand(1, 3, 32, 32))
    logits.mean().backward()
    health = step_health(next(model.parameters()), logits)
    assert health.first_layer_grad_norm > 0 and health.logit_spread > 0 and not health.dead
    close_the_head(model)
    model.zero_grad()
    logits = model(torch.rand(1, 3, 32, 32))
    logits.mean().backward()
    health = step_health(next(model.parameters()), logits)
    assert health.first_layer_grad_norm == 0.0 and health.logit_spread < 1e-6 and health.dead


def test_validation_verdict_in_words() -> None:
    assert "one constant" in validation_verdict(0.04, 0.04, 0.0412, 0.0412)
    chance = validation_verdict(CHANCE_AP_RATIO * 0.04, 0.04, 0.01, 0.9)
    assert "no better than chance" in chance and "0.040" in chance
    assert validation_verdict(0.5, 0.04, 0.01, 0.99) is None
    assert validation_verdict(float("nan"), 0.04, 0.01, 0.99) is None  # no AP yet: nothing to say


def test_detection_words_for_scores_that_read_oddly() -> None:
    assert "detects nothing at threshold 0.50" in detection_words(1.0, 0.0, 0.5)
    assert "almost every pixel" in detection_words(0.05, 1.0, 0.01)
    assert detection_words(0.7, 0.6, 0.5) is None


def test_cli_exits_3_with_one_message_when_the_network_dies(shared_data, tmp_path: Path, capsys) -> None:
    data = write_small_crackforest(shared_data, tmp_path / "cfd_small")
    model = build_model(width=4)
    close_the_head(model)
    dead = save_checkpoint(tmp_path / "dead.pt", model, size=64)
    code = run_main(["--data", str(data), "--width", "4", "--size", "64", "--workers", "0", "--no-progress",
                     "--epochs", "5", "--batch", "1", "--init", str(dead), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == DEAD_NETWORK_EXIT == 3
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "the network died at epoch" in lines[0] and "training cannot recover" in lines[0]
