"""Widening a trained U-Net (Net2WiderNet): the wider network starts computing what the narrow one did."""

from __future__ import annotations

import pytest
import torch

from train.checkpoint import CheckpointError, initial_weights, save_checkpoint
from train.model import build_model
from train.widen import WidenError, widen_state_dict


def _trained_like(width: int, head: str = "deep", seed: int = 1) -> torch.nn.Module:
    """A network whose every weight is random (not the alive init's zeroed gate): a fair test of the mapping."""
    torch.manual_seed(seed)
    model = build_model(width, head)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, (2.0 / p[0].numel()) ** 0.5 if p.dim() > 1 else 0.05)  # He-normal scale
    return model.eval()


@pytest.mark.parametrize("head", ["deep", "shallow"])
@pytest.mark.parametrize("factor", [2, 3])
def test_the_widened_network_gives_the_same_output(head, factor):
    narrow = _trained_like(4, head)
    wide = build_model(4 * factor, head).eval()
    wide.load_state_dict(widen_state_dict(narrow.state_dict(), 4 * factor, seed=0))
    x = torch.rand(2, 3, 32, 48)
    with torch.no_grad():
        a, b = narrow(x), wide(x)
    assert a.std() > 1e-3  # the output varies over the image: a real comparison
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


def test_copies_of_a_channel_are_read_with_different_shares_so_they_can_drift_apart():
    narrow = _trained_like(4)
    wide = widen_state_dict(narrow.state_dict(), 8, seed=0)
    w = wide["encoder.0.2.weight"]  # 8 x 8 x 3 x 3: input channels j and j + 4 are copies of old channel j
    old = narrow.state_dict()["encoder.0.2.weight"]
    torch.testing.assert_close(w[:4, :4] + w[:4, 4:], old)
    assert not torch.allclose(w[:4, :4], w[:4, 4:])
    # one training step moves copies differently
    model = build_model(8).train()
    model.load_state_dict(wide)
    loss = model(torch.rand(1, 3, 32, 32)).sigmoid().mean()
    loss.backward()
    g = model.encoder[0][0].weight.grad
    assert g.abs().max() > 0
    assert (g[:4] - g[4:]).abs().max() > 0.05 * g.abs().max()


def test_a_width_that_is_not_a_whole_multiple_is_refused_with_the_widths():
    with pytest.raises(WidenError, match="whole multiple.*not to 24"):
        widen_state_dict(_trained_like(16).state_dict(), 24)
    with pytest.raises(WidenError, match="not to 8"):
        widen_state_dict(_trained_like(16).state_dict(), 8)


def test_init_widens_a_narrower_checkpoint_and_says_so(tmp_path):
    narrow = _trained_like(4)
    path = save_checkpoint(tmp_path / "narrow.pt", narrow, size=64)
    wide = build_model(8).eval()
    note = initial_weights(path, wide, seed=3)
    assert "width 4 widened to 8" in note
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(wide(x), narrow(x), rtol=1e-4, atol=1e-5)
    same = build_model(4)
    assert initial_weights(path, same) is None
    with pytest.raises(CheckpointError, match="does not fit"):
        initial_weights(path, build_model(6))
