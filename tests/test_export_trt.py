"""export.trt: the engine/device compatibility check (pure), the CLI without TensorRT, and, where
TensorRT and a GPU exist, a real FP16 build and an INT8 build whose second run reads the cache."""

from __future__ import annotations

import importlib.util

import pytest

from contract.sidecar import EngineCompatError, check_engine_compat, read_sidecar, write_sidecar
from export.trt import main
from export.trt_calibrator import read_cache, write_cache

SIDECAR = {"tensorrt_version": "8.6.2.3", "gpu_name": "Orin (nvgpu)", "precision": "fp16", "onnx_path": "m.onnx", "metadata": {}}


def test_same_version_and_gpu_pass():
    check_engine_compat(SIDECAR, "8.6.2.3", "orin  (NVGPU)")  # case and spacing of GPU names do not matter


def test_other_tensorrt_version_names_both_and_how_to_rebuild():
    with pytest.raises(EngineCompatError, match=r"TensorRT 8\.6\.2\.3 \(this device has 10\.3\.0\).*python -m export\.trt --onnx m\.onnx"):
        check_engine_compat(SIDECAR, "10.3.0", "Orin (nvgpu)")


def test_other_gpu_is_refused():
    with pytest.raises(EngineCompatError, match=r"GPU 'Orin \(nvgpu\)' \(this device has 'NVIDIA H100 80GB HBM3'\)"):
        check_engine_compat(SIDECAR, "8.6.2.3", "NVIDIA H100 80GB HBM3")


def test_sidecar_without_versions_is_refused():
    with pytest.raises(EngineCompatError, match="lacks tensorrt_version"):
        check_engine_compat({"gpu_name": "x"}, "8.6", "x")


def test_sidecar_round_trip_and_missing_file(tmp_path):
    engine = tmp_path / "model.engine"
    with pytest.raises(EngineCompatError, match="model.engine.json is missing"):
        read_sidecar(engine)
    write_sidecar(engine, SIDECAR)
    assert read_sidecar(engine)["gpu_name"] == "Orin (nvgpu)"


def test_calibration_cache_round_trip(tmp_path):
    path = tmp_path / "sub" / "model.calib"
    assert read_cache(path) is None
    write_cache(path, b"TRT-8601-EntropyCalibration2\nimage: 3c010a14\n")
    assert read_cache(path).startswith(b"TRT-8601")


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed here")
def test_without_tensorrt_the_cli_names_the_package(tmp_path, capsys):
    assert main(["--onnx", str(tmp_path / "m.onnx"), "--out", str(tmp_path / "m.engine")]) == 2
    err = capsys.readouterr().err
    assert "'tensorrt' is not importable" in err and "JetPack" in err and "pip install tensorrt" in err


def test_int8_without_calibration_data_is_refused(tmp_path, capsys):
    assert main(["--onnx", "m.onnx", "--out", str(tmp_path / "m.engine"), "--precision", "int8"]) == 1
    assert "--calib-images" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (no GPU on this machine): engine builds unverified here")
    pytest.importorskip("pycuda", reason="pycuda is not installed: TensorRT INT8 calibration unverified here")
    import torch

    from export.onnx import main as export_main
    from train.checkpoint import save_checkpoint
    from train.model import build_model

    tmp = tmp_path_factory.mktemp("trt")
    torch.manual_seed(0)
    save_checkpoint(tmp / "best.pt", build_model(4, "deep"), size=64)
    assert export_main(["--checkpoint", str(tmp / "best.pt"), "--out", str(tmp / "m.onnx"), "--parity-tiles", "2"]) == 0
    return tmp / "m.onnx"


def test_fp16_engine_builds_with_sidecar_and_timing_cache(tiny_onnx, tmp_path):
    import tensorrt as trt

    engine, cache = tmp_path / "m.engine", tmp_path / "timing.cache"
    assert main(["--onnx", str(tiny_onnx), "--out", str(engine), "--precision", "fp16", "--max-batch", "2",
                 "--timing-cache", str(cache)]) == 0
    sidecar = read_sidecar(engine)
    assert sidecar["tensorrt_version"] == trt.__version__ and sidecar["precision"] == "fp16"
    assert cache.stat().st_size > 0
    check_engine_compat(sidecar, trt.__version__, sidecar["gpu_name"])
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    assert runtime.deserialize_cuda_engine(engine.read_bytes()) is not None


def test_int8_second_build_reads_the_calibration_cache(tiny_onnx, tmp_path, shared_data):
    calib = tmp_path / "m.calib"
    args = ["--onnx", str(tiny_onnx), "--precision", "int8", "--max-batch", "2", "--calib-cache", str(calib),
            "--calib-max", "8", "--calib-batch", "2"]
    assert main([*args, "--out", str(tmp_path / "a.engine"), "--calib-images", str(shared_data / "deepcrack")]) == 0
    first = calib.read_bytes()
    # no images this time: the build can only succeed by reading the cache instead of recalibrating
    assert main([*args, "--out", str(tmp_path / "b.engine")]) == 0
    assert calib.read_bytes() == first
