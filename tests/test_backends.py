"""Backends: real onnxruntime on real ONNX files, the torch checkpoint backend, the TensorRT compat check."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from edge_helpers import crack_image, darkness_model

from contract.backends import BackendError, backend_for_path, load_backend
from contract.metadata import ModelMetadata
from contract.preprocess import to_model_input
from contract.sidecar import EngineCompatError, check_engine_compat, read_sidecar

REPO = Path(__file__).resolve().parents[1]


def test_onnxruntime_backend_reads_metadata_and_infers_any_batch(tmp_path: Path) -> None:
    backend = load_backend(darkness_model(tmp_path / "m.onnx", input_size=64), batch_size=3, intra_op_threads=1)
    assert backend.name == "onnxruntime"
    assert backend.input_shape == (3, 3, 64, 64)
    assert backend.precision == "fp32" and backend.metadata.threshold == 0.5
    assert backend.metadata.model_name == "darkness-test"
    assert "CPUExecutionProvider" in backend.providers
    tiles = np.stack([crack_image(64, 64, crack=bool(i % 2), seed=i) for i in range(7)])
    probs = backend.infer(to_model_input(tiles, backend.metadata))  # 7 > max batch 3: split into calls
    assert probs.shape == (7, 1, 64, 64) and probs.dtype == np.float32
    assert float(probs[0].max()) < 0.01  # no crack
    assert float(probs[1].max()) > 0.99  # the drawn dark line
    single = backend.infer(to_model_input(tiles[1:2], backend.metadata))
    np.testing.assert_allclose(single, probs[1:2], atol=1e-6)


def test_fixed_batch_graph_is_padded_and_cut(tmp_path: Path) -> None:
    backend = load_backend(darkness_model(tmp_path / "m.onnx", input_size=32, batch=4))
    assert backend.input_shape == (4, 3, 32, 32)
    x = np.random.default_rng(0).random((6, 3, 32, 32), dtype=np.float32)
    out = backend.infer(x)
    expected = 1 / (1 + np.exp(-40 * (0.35 - x.mean(axis=1, keepdims=True))))
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_onnxruntime_threads_do_not_spin_unless_asked(tmp_path: Path) -> None:
    # spinning intra-op threads took CPU from the daemon's decode/post-processing threads (bench_pipeline.py)
    key = "session.intra_op.allow_spinning"
    model = darkness_model(tmp_path / "m.onnx", input_size=32)
    assert load_backend(model).session.get_session_options().get_session_config_entry(key) == "0"
    assert load_backend(model, allow_spinning=True).session.get_session_options().get_session_config_entry(key) == "1"


def test_wrong_shape_names_the_expected_tile(tmp_path: Path) -> None:
    backend = load_backend(darkness_model(tmp_path / "m.onnx", input_size=64))
    with pytest.raises(BackendError, match=r"takes float32 N×3×64×64 .*got shape \(2, 3, 32, 32\)"):
        backend.infer(np.zeros((2, 3, 32, 32), np.float32))


def test_model_without_metadata_is_refused_with_the_key(tmp_path: Path) -> None:
    path = darkness_model(tmp_path / "m.onnx")
    model = onnx.load(str(path))
    del model.metadata_props[:]
    onnx.save(model, str(tmp_path / "bare.onnx"))
    with pytest.raises(BackendError, match=r"bare.onnx has no 'arch'.*python -m export.onnx"):
        load_backend(tmp_path / "bare.onnx")


def test_auto_picks_by_extension_and_errors_are_clear(tmp_path: Path) -> None:
    assert backend_for_path("a.onnx") == "onnxruntime"
    assert backend_for_path("a.engine") == "tensorrt" and backend_for_path("a.plan") == "tensorrt"
    assert backend_for_path("a.pt") == "torch"
    with pytest.raises(BackendError, match=r"cannot pick a backend for a.tflite"):
        load_backend("a.tflite")
    with pytest.raises(BackendError, match="does not exist"):
        load_backend(tmp_path / "missing.onnx")
    with pytest.raises(BackendError, match="not in this onnxruntime build"):
        load_backend(darkness_model(tmp_path / "m.onnx"), providers=["NoSuchExecutionProvider"])
    with pytest.raises(BackendError, match="no model given"):
        load_backend("")


def test_engine_compat_check_names_what_to_rebuild(tmp_path: Path) -> None:
    sidecar = {"tensorrt_version": "10.3.0", "gpu_name": "Orin", "precision": "fp16", "onnx_path": "m.onnx"}
    check_engine_compat(sidecar, "10.3.0", " orin ")  # same GPU, case/space-insensitive
    with pytest.raises(EngineCompatError, match=r"TensorRT 10.3.0 \(this device has 8.6.2\).*--precision fp16"):
        check_engine_compat(sidecar, "8.6.2", "Orin")
    with pytest.raises(EngineCompatError, match=r"GPU 'Orin' \(this device has 'NVIDIA H100'\)"):
        check_engine_compat(sidecar, "10.3.0", "NVIDIA H100")
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"\0")
    with pytest.raises(EngineCompatError, match=r"m.engine.json is missing"):
        read_sidecar(engine)


def test_tensorrt_backend_says_what_to_install_when_tensorrt_is_absent(tmp_path: Path) -> None:
    try:
        import tensorrt  # noqa: F401

        pytest.skip("tensorrt is installed here; this test covers machines without it")
    except ImportError:
        pass
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"\0")
    sidecar = {"tensorrt_version": "10.3.0", "gpu_name": "Orin", "precision": "fp16", "metadata": ModelMetadata().to_json_dict()}
    (tmp_path / "m.engine.json").write_text(json.dumps(sidecar))
    with pytest.raises(ImportError, match=r"tensorrt and pycuda.*JetPack"):
        load_backend(engine)


def test_tensorrt_backend_matches_onnxruntime(tmp_path: Path) -> None:
    """An FP32 engine built from an ONNX model gives onnxruntime's probabilities on the same tiles."""
    pytest.importorskip("tensorrt", reason="TensorRT inference needs tensorrt (JetPack, or the 'trt' extra) and a GPU")
    pytest.importorskip("pycuda.driver", reason="the TensorRT backend needs pycuda (the 'trt' extra)")
    from export.trt import BuildOptions, build_engine

    model = darkness_model(tmp_path / "m.onnx", input_size=32)
    engine = tmp_path / "m.engine"
    build_engine(model, engine, BuildOptions(precision="fp32", max_batch=2, workspace_mb=256))
    trt_backend = load_backend(engine)
    assert trt_backend.name == "tensorrt" and trt_backend.input_shape == (2, 3, 32, 32)
    assert trt_backend.metadata == load_backend(model).metadata.replace(precision="fp32")
    x = to_model_input(np.stack([crack_image(32, 32, seed=i) for i in range(3)]), trt_backend.metadata)
    expected = load_backend(model, providers=["CPUExecutionProvider"]).infer(x)
    got = trt_backend.infer(x)  # 3 tiles through a max-batch-2 engine: two runtime calls
    trt_backend.close()
    assert got.shape == (3, 1, 32, 32)
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_torch_backend_runs_a_checkpoint_with_sigmoid(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch", reason="the torch backend needs torch")
    from train.checkpoint import save_checkpoint
    from train.model import build_model

    torch.manual_seed(0)
    model = build_model(width=4, head="shallow")
    save_checkpoint(tmp_path / "tiny.pt", model, size=32, threshold=0.4)
    backend = load_backend(tmp_path / "tiny.pt", batch_size=2, device="cpu")
    assert backend.name == "torch" and backend.input_shape == (2, 3, 32, 32)
    assert backend.metadata.threshold == pytest.approx(0.4) and backend.metadata.width == 4
    x = np.random.default_rng(1).random((3, 3, 32, 32), dtype=np.float32)
    out = backend.infer(x)
    with torch.no_grad():
        expected = torch.sigmoid(model.eval()(torch.from_numpy(x))).numpy()
    assert out.shape == (3, 1, 32, 32) and np.all((out > 0) & (out < 1))
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_edge_imports_and_runs_onnxruntime_without_torch(tmp_path: Path) -> None:
    """The device image has no torch: importing the daemon and running the ONNX backend must not need it."""
    model = darkness_model(tmp_path / "m.onnx", input_size=32)
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.') or name == 'train' or name.startswith('train.'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import numpy as np\n"
        "import contract, contract.backends, contract.predict, contract.sidecar, contract.tiling, contract.preprocess\n"
        "import edge, edge.config, edge.sources, edge.publish, edge.pipeline, edge.demo\n"
        "import edge.__main__\n"
        "from contract.backends import load_backend\n"
        f"b = load_backend({str(model)!r})\n"
        "print(b.infer(np.zeros((1, 3, 32, 32), np.float32)).shape)\n"
        "try:\n"
        "    load_backend('x.pt')\n"
        "except ImportError as e:\n"
        "    print('torch-backend:', e)\n"
        "assert 'torch' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "(1, 1, 32, 32)" in result.stdout
    assert "pip install torch" in result.stdout
