"""The paper's U-Net: channel plan, shapes, heads, init, input checks, checkpoint round trip."""

from __future__ import annotations

import pytest
import torch

from train.checkpoint import CheckpointError, load_model, read_checkpoint, save_checkpoint
from train.model import ModelConfig, build_model, count_parameters, probabilities


def test_paper_channel_plan_and_resolutions():
    model = build_model(width=64, head="deep")
    assert model.channels == [64, 128, 256, 512, 1024]
    convs = [m for m in model.encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 10 and all(c.kernel_size == (3, 3) for c in convs)
    # deep head: 3x3 convs 64, 64, 64, 2, then 1x1 -> 1
    head = [m for m in model.head.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in head] == [64, 64, 64, 2, 1]
    assert [c.kernel_size for c in head] == [(3, 3)] * 4 + [(1, 1)]
    # about 31 M parameters, like the usual 5-stage U-Net
    assert 30e6 < count_parameters(model) < 32e6


def test_encoder_resolutions_at_512():
    model = build_model(width=4)
    seen = []
    hooks = [stage.register_forward_hook(lambda m, i, o: seen.append(o.shape[-1])) for stage in model.encoder]
    model(torch.zeros(1, 3, 512, 512))
    for h in hooks:
        h.remove()
    assert seen == [512, 256, 128, 64, 32]


@pytest.mark.parametrize("head", ["deep", "shallow"])
@pytest.mark.parametrize("hw", [(64, 64), (32, 96), (128, 48)])
def test_output_is_logit_map_of_input_size(head, hw):
    model = build_model(width=4, head=head)
    out = model(torch.rand(2, 3, *hw))
    assert out.shape == (2, 1, *hw)
    p = probabilities(out)
    assert torch.all((p > 0) & (p < 1))


def test_shallow_head_is_one_1x1_conv():
    model = build_model(width=8, head="shallow")
    assert isinstance(model.head, torch.nn.Conv2d) and model.head.kernel_size == (1, 1)


def test_upsampling_is_nearest_x2(monkeypatch):
    import train.model as tm

    calls = []
    real = tm.F.interpolate

    def spy(x, **kw):
        calls.append(kw)
        return real(x, **kw)

    monkeypatch.setattr(tm.F, "interpolate", spy)
    build_model(width=4)(torch.zeros(1, 3, 32, 32))
    assert len(calls) == 4 and all(c["mode"] == "nearest" and c["scale_factor"] == 2.0 for c in calls)


def test_he_normal_init_std():
    torch.manual_seed(0)
    model = build_model(width=64, head="shallow")
    conv = model.encoder[3][0]  # 256 -> 512, fan_in = 256 * 9
    expected = (2.0 / (256 * 9)) ** 0.5
    assert abs(conv.weight.std().item() - expected) / expected < 0.02
    assert torch.count_nonzero(conv.bias) == 0


@pytest.mark.parametrize(
    "shape, message",
    [((1, 3, 100, 64), "multiples of 16"), ((1, 1, 64, 64), "3 channels"), ((3, 64, 64), "N x 3 x H x W")],
)
def test_bad_input_shape_names_the_problem(shape, message):
    with pytest.raises(ValueError, match=message):
        build_model(width=4)(torch.zeros(shape))


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="head"):
        ModelConfig(head="medium")
    with pytest.raises(ValueError, match="width"):
        ModelConfig(width=0)


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(1)
    model = build_model(width=4, head="deep")
    path = save_checkpoint(tmp_path / "m.pt", model, size=64, threshold=0.42, train_config={"loss": "aelf"},
                           data={"name": "toy"}, epoch=3, metrics={"f_beta": 0.5})
    loaded, meta = load_model(path)
    assert meta["threshold"] == pytest.approx(0.42) and meta["epoch"] == 3 and meta["input"]["size"] == 64
    assert meta["model"]["width"] == 4 and meta["train_config"]["loss"] == "aelf"
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), loaded(x))
    assert not (tmp_path / "m.pt.tmp").exists()


def test_checkpoint_errors_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pt"):
        read_checkpoint(bad)
    other = tmp_path / "other.pt"
    torch.save({"weights": 1}, other)
    with pytest.raises(CheckpointError, match="not an aelf-unet-checkpoint"):
        read_checkpoint(other)
