"""ONNX -> serialized TensorRT engine (FP32/FP16/INT8) with a JSON sidecar, via the TensorRT Python API.

``python -m export.trt --onnx model.onnx --out model.engine --precision fp16``

Written against TensorRT 8.6 and 10.x (where they differ, both paths are here):
* network: ``builder.create_network(1 << EXPLICIT_BATCH)`` on 8.x; on 10.x explicit batch is the
  only mode and the flag is deprecated, so ``create_network(0)``;
* ``trt.OnnxParser``; each parser error is reported with its node (10.x: ``node_name()`` /
  ``node_operator()``; 8.6: the node index) and description;
* one optimisation profile for input ``image``: batch 1 / max(1, max_batch // 2) / max_batch at the
  tile side recorded in the model metadata (512 by default);
* ``BuilderFlag.FP16`` / ``BuilderFlag.INT8`` with :mod:`export.trt_calibrator`'s entropy
  calibrator (a calibration cache makes a second build skip calibration);
* ``config.set_memory_pool_limit(MemoryPoolType.WORKSPACE, ...)``;
* a timing cache loaded from and saved to ``--timing-cache``, so rebuilds skip tactic timing;
* ``builder.build_serialized_network``.
Beside the engine: ``<engine>.json`` (:mod:`contract.sidecar`) with the model metadata, TensorRT
version, GPU name and compute capability, precision, build flags and the ONNX file's SHA-256.

Unverified here: the development machine has no GPU and no TensorRT (docs/EXPORT.md).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contract.metadata import INPUT_NAME, file_sha256
from contract.onnx_file import load_onnx, read_metadata
from contract.sidecar import EngineCompatError, check_engine_compat, sidecar_path, write_sidecar

__all__ = ["EngineCompatError", "check_engine_compat", "build_engine", "main"]

PRECISIONS = ("fp32", "fp16", "int8")
TENSORRT_HINT = (
    "the Python package 'tensorrt' is not importable: on Jetson it comes with JetPack "
    "(`sudo apt install nvidia-jetpack` / python3-libnvinfer); on x86 with CUDA `pip install tensorrt` "
    "(extra 'trt' of this project)"
)


class EngineBuildError(RuntimeError):
    """TensorRT could not parse the ONNX model or build the engine; the message says where."""


def import_tensorrt():
    """``import tensorrt`` with a message naming the package when it is missing."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise ImportError(f"{TENSORRT_HINT} ({exc})") from exc
    return trt


def trt_major(trt) -> int:
    return int(str(trt.__version__).split(".")[0])


def gpu_identity() -> tuple[str, str]:
    """(GPU name, compute capability 'major.minor') of device 0, from pycuda or else nvidia-smi."""
    try:
        import pycuda.autoinit  # noqa: F401  (creates the context the calibrator also uses)
        import pycuda.driver as cuda

        device = cuda.Device(0)
        major, minor = device.compute_capability()
        return device.name(), f"{major}.{minor}"
    except ImportError:
        pass
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.splitlines()[0]
        name, cap = (part.strip() for part in out.split(","))
        return name, cap
    except (OSError, subprocess.SubprocessError, IndexError, ValueError):
        # Jetson has no nvidia-smi: the SoC model names the GPU
        model_file = Path("/proc/device-tree/model")
        if model_file.is_file():
            return model_file.read_text().strip("\x00 \n"), "unknown"
        raise EngineBuildError("cannot tell which GPU this is: install pycuda (extra 'trt') or the NVIDIA driver's nvidia-smi") from None


def parser_errors(parser) -> str:
    """All ONNX parser errors, one line each, with the node they concern."""
    lines = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        where = f"node #{err.node()}"
        for attr in ("node_name", "node_operator"):  # TensorRT >= 10 (and late 8.6 builds)
            if hasattr(err, attr):
                value = getattr(err, attr)()
                if value:
                    where += f" {value!r}" if attr == "node_name" else f" ({value})"
        lines.append(f"  {where}: {err.desc()} [code {err.code()}]")
    return "\n".join(lines)


@dataclass(frozen=True)
class BuildOptions:
    precision: str = "fp16"
    max_batch: int = 8
    workspace_mb: int = 2048
    timing_cache: Path | None = None
    calib_images: tuple[Path, ...] = ()
    calib_cache: Path | None = None
    calib_max: int = 256
    calib_batch: int = 8

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"--precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.max_batch < 1:
            raise ValueError(f"--max-batch must be >= 1, got {self.max_batch}")
        if self.precision == "int8" and not self.calib_images and not (self.calib_cache and self.calib_cache.is_file()):
            raise ValueError("--precision int8 needs --calib-images DIR (or an existing --calib-cache)")


def build_engine(onnx_path: str | os.PathLike, out: str | os.PathLike, options: BuildOptions) -> dict[str, Any]:
    """Build and write the engine and its sidecar; returns the sidecar dict."""
    trt = import_tensorrt()
    onnx_path, out = Path(onnx_path), Path(out)
    meta = read_metadata(load_onnx(onnx_path), source=str(onnx_path))
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    if trt_major(trt) >= 10:
        network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    else:
        network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes(), str(onnx_path)):
        raise EngineBuildError(f"TensorRT {trt.__version__} could not parse {onnx_path}:\n{parser_errors(parser)}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mb << 20)
    side = meta.input_size
    profile = builder.create_optimization_profile()
    profile.set_shape(
        INPUT_NAME, (1, 3, side, side), (max(1, options.max_batch // 2), 3, side, side), (options.max_batch, 3, side, side)
    )
    config.add_optimization_profile(profile)
    flags = []
    if options.precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)  # INT8 engines fall back to FP16, not FP32, where INT8 has no kernel
        flags.append("FP16")
    calibrator = None
    if options.precision == "int8":
        from export.trt_calibrator import make_entropy_calibrator

        calibrator = make_entropy_calibrator(
            lambda: _calibration_tiles(options, meta), batch_size=options.calib_batch,
            cache_path=options.calib_cache or out.with_suffix(".calib"),
        )
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = calibrator
        config.set_calibration_profile(profile)  # dynamic batch: calibrate at the profile's shapes
        flags.append("INT8")

    cache_bytes = options.timing_cache.read_bytes() if options.timing_cache and options.timing_cache.is_file() else b""
    timing_cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(timing_cache, ignore_mismatch=False)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"TensorRT {trt.__version__} failed to build an engine from {onnx_path} (see its log above)")
    _write_atomic(out, bytes(serialized))
    if options.timing_cache:
        _write_atomic(options.timing_cache, bytes(config.get_timing_cache().serialize()))

    gpu_name, compute_capability = gpu_identity()
    sidecar = {
        "engine": out.name,
        "metadata": meta.replace(precision=options.precision).to_json_dict(),
        "tensorrt_version": str(trt.__version__),
        "gpu_name": gpu_name,
        "compute_capability": compute_capability,
        "precision": options.precision,
        "build_flags": flags,
        "max_batch": options.max_batch,
        "input_shape": [options.max_batch, 3, side, side],
        "workspace_mb": options.workspace_mb,
        "onnx_path": str(onnx_path),
        "onnx_sha256": file_sha256(onnx_path),
        "host": platform.node(),
    }
    write_sidecar(out, sidecar)
    return sidecar


def _calibration_tiles(options: BuildOptions, meta):
    """Tiles for the INT8 calibrator, drawn only when TensorRT asks for them (not when a cache exists)."""
    from contract.image_tiles import draw_tiles

    return draw_tiles(list(options.calib_images), meta, max_tiles=options.calib_max).tiles


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m export.trt",
        description="Build a TensorRT engine from an exported ONNX model (needs tensorrt and a GPU); "
        "writes <engine>.json beside it with the metadata, TensorRT version and GPU.",
    )
    parser.add_argument("--onnx", required=True, type=Path, help="ONNX model from `python -m export.onnx`")
    parser.add_argument("--out", required=True, type=Path, help="engine file to write (sidecar: <out>.json)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp16", help="engine precision (default: %(default)s)")
    parser.add_argument("--max-batch", type=int, default=8, help="largest batch of tiles in the optimisation profile (default: %(default)s)")
    parser.add_argument("--workspace-mb", type=int, default=2048, help="builder workspace memory pool limit in MiB (default: %(default)s)")
    parser.add_argument("--timing-cache", type=Path, default=None, help="timing cache file read before and written after the build (default: none)")
    parser.add_argument("--calib-images", type=Path, nargs="+", default=(), help="INT8: calibration image folder(s) (default: none)")
    parser.add_argument("--calib-cache", type=Path, default=None, help="INT8: calibration cache to read/write (default: <out>.calib)")
    parser.add_argument("--calib-max", type=int, default=256, help="INT8: calibration tiles drawn from the images (default: %(default)s)")
    parser.add_argument("--calib-batch", type=int, default=8, help="INT8: tiles per calibration batch (default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        options = BuildOptions(
            args.precision, args.max_batch, args.workspace_mb, args.timing_cache,
            tuple(args.calib_images), args.calib_cache, args.calib_max, args.calib_batch,
        )
        import_tensorrt()
    except ValueError as exc:
        print(f"export.trt: error: {exc}", file=sys.stderr)
        return 1
    except ImportError as exc:
        print(f"export.trt: {exc}", file=sys.stderr)
        return 2
    try:
        sidecar = build_engine(args.onnx, args.out, options)
    except (EngineBuildError, FileNotFoundError, ValueError) as exc:
        print(f"export.trt: error: {exc}", file=sys.stderr)
        return 1
    size_mb = args.out.stat().st_size / 1e6
    print(
        f"wrote {args.out} ({size_mb:.1f} MB, {sidecar['precision']}, TensorRT {sidecar['tensorrt_version']}, "
        f"{sidecar['gpu_name']} sm {sidecar['compute_capability']}) and {sidecar_path(args.out)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
