"""train.weight_average: the weights between a base model and its fine-tune (WiSE-FT)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from export.onnx import export_checkpoint
from train.checkpoint import load_model, read_checkpoint, save_checkpoint
from train.model import build_model
from train.weight_average import interpolate_state, main


def _pair(width: int = 4) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    base = build_model(width=width, head="deep")
    tuned = build_model(width=width, head="deep")
    with torch.no_grad():  # trained-looking weights (no two tensors alike), and a fine-tune that moved each
        for p in base.parameters():
            p.copy_(p + 0.1 * torch.randn_like(p))
        for p, q in zip(tuned.parameters(), base.parameters(), strict=True):
            p.copy_(q + torch.randn_like(q))
    return base, tuned


def test_interpolation_ends_and_middle():
    base, tuned = _pair()
    b, t = base.state_dict(), tuned.state_dict()
    for alpha, expect in ((0.0, b), (1.0, t)):
        out = interpolate_state(b, t, alpha)
        assert all(torch.equal(out[k], expect[k]) for k in t)
    mid = interpolate_state(b, t, 0.25)
    for k in t:
        torch.testing.assert_close(mid[k], 0.75 * b[k] + 0.25 * t[k])
        assert not torch.equal(mid[k], b[k])  # every tensor moved


def test_interpolation_refuses_what_cannot_be_averaged():
    base, tuned = _pair()
    b, t = base.state_dict(), tuned.state_dict()
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        interpolate_state(b, t, 1.5)
    name = next(iter(t))
    with pytest.raises(ValueError, match=f"{name!r} is only in the tuned model"):
        interpolate_state({k: v for k, v in b.items() if k != name}, t, 0.5)
    wider = build_model(width=8, head="deep").state_dict()
    with pytest.raises(ValueError, match="has shape .* same width and head"):
        interpolate_state(wider, t, 0.5)
    with pytest.raises(ValueError, match="integer tensor 'n' differs"):
        interpolate_state({"n": torch.tensor([1])}, {"n": torch.tensor([2])}, 0.5)


def test_cli_from_an_exported_base_writes_a_checkpoint_that_runs(tmp_path, capsys):
    base, tuned = _pair()
    base_pt = save_checkpoint(tmp_path / "base.pt", base, size=64)
    tuned_pt = save_checkpoint(tmp_path / "tuned.pt", tuned, size=64, threshold=0.42, epoch=7)
    base_onnx = tmp_path / "base.onnx"
    export_checkpoint(base_pt, base_onnx, parity_tiles_n=1)

    out = tmp_path / "avg.pt"
    assert main(["--base", str(base_onnx), "--tuned", str(tuned_pt), "--alpha", "0.5", "--out", str(out)]) == 0
    assert "0.5 x" in capsys.readouterr().out
    payload = read_checkpoint(out)
    assert payload["threshold"] == 0.42 and payload["epoch"] == 7  # the tuned model's record
    assert payload["weight_average"] == {"base": str(base_onnx), "tuned": str(tuned_pt), "alpha": 0.5}
    model, _ = load_model(out)
    b, t = base.state_dict(), tuned.state_dict()
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, 0.5 * b[k] + 0.5 * t[k], atol=1e-6, rtol=0)
    x = torch.from_numpy(np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32))
    assert torch.isfinite(model(x)).all()


def test_cli_errors_name_the_argument(tmp_path, capsys):
    _, tuned = _pair()
    tuned_pt = save_checkpoint(tmp_path / "tuned.pt", tuned, size=64)
    wider = save_checkpoint(tmp_path / "wider.pt", build_model(width=8, head="deep"), size=64)
    code = main(["--base", str(wider), "--tuned", str(tuned_pt), "--alpha", "0.5", "--out", str(tmp_path / "a.pt")])
    assert code == 1
    err = capsys.readouterr().err
    assert "--base" in err and "does not fit" in err and not (tmp_path / "a.pt").exists()
    assert main(["--base", str(tmp_path / "missing.onnx"), "--tuned", str(tuned_pt), "--alpha", "0.5",
                 "--out", str(tmp_path / "a.pt")]) == 1
    assert "--base" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--base", str(wider), "--tuned", str(tuned_pt), "--alpha", "2", "--out", str(tmp_path / "a.pt")])
    with pytest.raises(SystemExit):
        main(["--base", str(wider), "--tuned", str(tuned_pt), "--alpha", "0.5", "--out", str(tmp_path / "a.onnx")])


def test_a_narrower_base_is_widened_with_the_tuned_runs_seed(tmp_path):
    """A width-8 fine-tune of a width-4 base (train.run --init widened it with --seed 5): averaging at
    alpha 0 gives exactly the widened start, so the two average channel by channel."""
    from train.weight_average import average_checkpoints
    from train.widen import widen_state_dict

    base, _ = _pair(4)
    base_pt = save_checkpoint(tmp_path / "base.pt", base, size=64)
    start = widen_state_dict(base.state_dict(), 8, seed=5)
    tuned = build_model(width=8, head="deep")
    tuned.load_state_dict({k: v + 0.01 for k, v in start.items()})
    tuned_pt = save_checkpoint(tmp_path / "tuned.pt", tuned, size=64, train_config={"seed": 5})
    averaged = average_checkpoints(base_pt, tuned_pt, 0.0)["state_dict"]
    for k, v in start.items():
        torch.testing.assert_close(averaged[k], v)
    other_seed = widen_state_dict(base.state_dict(), 8, seed=6)
    assert not torch.allclose(other_seed["encoder.1.0.weight"], start["encoder.1.0.weight"])
