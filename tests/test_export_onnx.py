"""export.onnx: a tiny checkpoint exported to ONNX computes torch's probabilities and carries its metadata."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from contract.metadata import INPUT_NAME, OUTPUT_NAME
from contract.onnx_file import OLDEST_RUNTIME_MAX_IR, ir_version_of_opset, pin_ir_version, read_metadata
from export.onnx import main, to_onnx
from export.parity import ParityError, check_parity
from train.checkpoint import load_model, metadata_from_checkpoint, save_checkpoint
from train.model import build_model
from train.torch_backend import TorchBackend

SIZE = 64


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    save_checkpoint(path, build_model(4, "deep"), size=SIZE, threshold=0.42, data={"name": "deepcrack", "split": "train"})
    return path


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    assert main(["--checkpoint", str(checkpoint), "--out", str(out), "--parity-tiles", "4"]) == 0
    return out


def _session(path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_graph_has_the_contract_names_and_checks(exported):
    model = onnx.load(str(exported))
    onnx.checker.check_model(model)
    assert [i.name for i in model.graph.input] == [INPUT_NAME]
    assert [o.name for o in model.graph.output] == [OUTPUT_NAME]
    assert model.opset_import[0].version == 17
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [3, SIZE, SIZE]
    assert "Sigmoid" in {n.op_type for n in model.graph.node}
    assert "Identity" not in {n.op_type for n in model.graph.node}  # onnxslim removed the tracer's leftovers


def test_metadata_round_trip_through_the_file(exported, checkpoint):
    meta = read_metadata(exported)
    _, payload = load_model(checkpoint)
    assert (meta.width, meta.head, meta.input_size, meta.precision) == (4, "deep", SIZE, "fp32")
    assert meta.threshold == pytest.approx(0.42)
    assert meta.train_data == "deepcrack (train)" and meta.train_commit == payload["commit"]
    assert meta.extra["opset"] == "17" and meta.extra["dynamic_hw"] == "false"
    assert meta == metadata_from_checkpoint(payload).replace(extra=meta.extra)
    # onnxruntime exposes the same keys to the edge runtime
    assert _session(exported).get_modelmeta().custom_metadata_map["width"] == "4"


def test_probabilities_match_torch_for_batch_1_and_3(exported, checkpoint):
    unet, _ = load_model(checkpoint)
    x = np.random.default_rng(1).random((3, 3, SIZE, SIZE), dtype=np.float32)
    expected = TorchBackend.from_module(unet, whole_images=True).infer(x)
    session = _session(exported)
    batch3 = session.run(None, {INPUT_NAME: x})[0]
    batch1 = session.run(None, {INPUT_NAME: x[1:2]})[0]
    assert batch3.shape == (3, 1, SIZE, SIZE)
    assert np.all((batch3 > 0) & (batch3 < 1))
    assert np.max(np.abs(batch3 - expected)) <= 1e-4
    assert np.max(np.abs(batch1 - expected[1:2])) <= 1e-4


def test_dynamic_hw_accepts_other_sides(checkpoint):
    unet, payload = load_model(checkpoint)
    model = to_onnx(unet, metadata_from_checkpoint(payload), dynamic_hw=True)
    x = np.random.default_rng(2).random((2, 3, 48, 96), dtype=np.float32)
    import onnxruntime as ort

    out = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {INPUT_NAME: x})[0]
    assert out.shape == (2, 1, 48, 96)
    assert np.max(np.abs(out - TorchBackend.from_module(unet, whole_images=True).infer(x))) <= 1e-4


def test_corrupted_weight_fails_parity_with_the_difference(checkpoint):
    unet, payload = load_model(checkpoint)
    serialized = to_onnx(unet, metadata_from_checkpoint(payload)).SerializeToString()
    with torch.no_grad():
        unet.head[-1].bias += 0.5  # the torch model no longer matches the exported graph
    tiles = np.random.default_rng(3).random((2, 3, SIZE, SIZE), dtype=np.float32)
    with pytest.raises(ParityError, match=r"max \|delta p\| = 0\.\d+.*above the tolerance 0\.0001"):
        check_parity(unet, serialized, tiles)


def test_zero_tolerance_is_enforced(checkpoint, tmp_path, capsys):
    # onnxruntime and torch round float32 differently (about 1e-6 here): tolerance 0 fails, and writes nothing
    out = tmp_path / "model.onnx"
    code = main(["--checkpoint", str(checkpoint), "--out", str(out), "--tolerance", "0", "--parity-tiles", "2"])
    assert code == 1 and not out.exists()
    assert "parity check failed: max |delta p|" in capsys.readouterr().err


def test_missing_checkpoint_is_named(tmp_path, capsys):
    assert main(["--checkpoint", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "m.onnx")]) == 1
    assert "nope.pt does not exist" in capsys.readouterr().err


def test_every_written_model_carries_its_opsets_ir_version(exported):
    """onnx 1.23 stamps IR 14 on what it builds; onnxruntime 1.30 reads up to 13, 1.17 (the oldest the
    extras allow) up to 9. The files carry the IR of their opset (17 -> 8) and so open in all of them."""
    assert onnx.load(str(exported)).ir_version == ir_version_of_opset(17) == 8 <= OLDEST_RUNTIME_MAX_IR
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    built = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert built.ir_version == onnx.IR_VERSION  # what the onnx package does by itself
    assert pin_ir_version(built).ir_version == 8
    with pytest.raises(ValueError, match="opset 999 is not in this onnx package's version table"):
        ir_version_of_opset(999)


def test_the_benchmark_matmul_model_opens_in_onnxruntime():
    """benchmarks.common.ort_matmul_peak builds its model in memory: pinned as well (it failed on onnxruntime 1.30)."""
    from benchmarks.common import ort_matmul_peak

    run, flops = ort_matmul_peak(8, threads=1)
    assert run()[0].shape == (8, 8) and flops == 2 * 8**3
