"""Static INT8 quantization for onnxruntime on CPUs (QDQ), calibrated on tiles drawn like the runtime's.

``python -m calibration.int8 --model model.onnx --images DIR``

The calibration tiles come from :func:`contract.image_tiles.draw_tiles` (same tiler, same
normalisation as the edge daemon), fed through an onnxruntime ``CalibrationDataReader``. The
metadata of the FP32 model is carried over with ``precision=int8``. Defaults are the settings that
measured fastest on an AVX-512 VNNI CPU while staying accurate (docs/EXPORT.md, benchmarks/RESULTS.md):
QDQ format, per-channel INT8 weights, UINT8 activations (u8s8 is the VNNI kernel), MinMax ranges,
and the last 1x1 conv + sigmoid left in FP32 (int8 logits would quantize the probability itself).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from contract.backends.ort import OnnxRuntimeBackend
from contract.image_tiles import ImageFolderError, draw_tiles
from contract.metadata import INPUT_NAME, ModelMetadata
from contract.metrics import BETA2, prf
from contract.onnx_file import load_onnx, read_metadata, save_onnx_atomic, write_metadata

CALIBRATE_METHODS = ("minmax", "entropy", "percentile")
ACTIVATION_TYPES = ("quint8", "qint8")
KEEP_FP32 = ("none", "last", "first-last")


@dataclass(frozen=True)
class QuantSettings:
    """The knobs of ``quantize_static`` this project measures (docs/EXPORT.md)."""

    per_channel: bool = True
    activation_type: str = "quint8"
    calibrate_method: str = "minmax"
    keep_fp32: str = "last"  # convolutions left unquantized at the ends of the network
    batch_size: int = 4

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("activation_type", self.activation_type, ACTIVATION_TYPES),
            ("calibrate_method", self.calibrate_method, CALIBRATE_METHODS),
            ("keep_fp32", self.keep_fp32, KEEP_FP32),
        ):
            if value not in allowed:
                raise ValueError(f"quantization setting {name!r} must be one of {allowed}, got {value!r}")


class TileReader:
    """onnxruntime ``CalibrationDataReader`` over model-ready tiles, ``batch_size`` tiles at a time."""

    def __init__(self, tiles: np.ndarray, batch_size: int = 4) -> None:
        self.tiles = tiles
        self.batch_size = batch_size
        self._batches: Iterator[dict[str, np.ndarray]] = iter(())
        self.rewind()

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)

    def rewind(self) -> None:
        self._batches = iter(
            {INPUT_NAME: np.ascontiguousarray(self.tiles[i : i + self.batch_size])}
            for i in range(0, len(self.tiles), self.batch_size)
        )


def fp32_nodes(model: onnx.ModelProto, keep_fp32: str) -> list[str]:
    """Names of the nodes to leave in FP32: the sigmoid always; the last/first conv per ``keep_fp32``."""
    nodes = list(model.graph.node)
    keep = [n.name for n in nodes if n.op_type == "Sigmoid"]
    convs = [n for n in nodes if n.op_type == "Conv"]
    if keep_fp32 in ("last", "first-last") and convs:
        keep.append(convs[-1].name)
    if keep_fp32 == "first-last" and convs:
        keep.append(convs[0].name)
    return keep


def quantize(
    fp32_path: str | os.PathLike, out_path: str | os.PathLike, tiles: np.ndarray, settings: QuantSettings | None = None
) -> Path:
    """Write the QDQ INT8 model of ``fp32_path`` calibrated on ``tiles`` to ``out_path`` (atomically)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    settings = settings or QuantSettings()
    meta = read_metadata(fp32_path)
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    activation = {"quint8": QuantType.QUInt8, "qint8": QuantType.QInt8}[settings.activation_type]
    with tempfile.TemporaryDirectory(prefix="int8-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # shape inference + graph optimisation before quantization: lets quantize_static see every
        # tensor's shape and fuse nothing it then cannot quantize
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        quantized = Path(tmp) / "int8.onnx"
        quantize_static(
            str(prepared),
            str(quantized),
            TileReader(tiles, settings.batch_size),
            quant_format=QuantFormat.QDQ,
            per_channel=settings.per_channel,
            activation_type=activation,
            weight_type=QuantType.QInt8,
            calibrate_method=methods[settings.calibrate_method],
            nodes_to_exclude=fp32_nodes(onnx.load(str(prepared)), settings.keep_fp32),
            extra_options={"CalibPercentile": 99.999} if settings.calibrate_method == "percentile" else None,
        )
        model = onnx.load(str(quantized))
    extra = {
        **meta.extra,
        "int8_per_channel": str(settings.per_channel).lower(),
        "int8_activation": settings.activation_type,
        "int8_calibration": f"{settings.calibrate_method}, {len(tiles)} tiles",
        "int8_fp32_nodes": settings.keep_fp32,
    }
    write_metadata(model, meta.replace(precision="int8", extra=extra))
    return save_onnx_atomic(model, out_path)


@dataclass(frozen=True)
class Int8Report:
    fp32_bytes: int
    int8_bytes: int
    n_tiles: int
    max_abs_diff: float
    mean_abs_diff: float
    decision_f: float  # F-beta of the INT8 decisions against the FP32 decisions (1 = identical)

    def describe(self) -> str:
        return (
            f"size {self.fp32_bytes / 1e6:.2f} MB -> {self.int8_bytes / 1e6:.2f} MB; on {self.n_tiles} held-out tiles: "
            f"max |delta p| {self.max_abs_diff:.4f}, mean |delta p| {self.mean_abs_diff:.5f}, "
            f"F-beta of INT8 vs FP32 decisions {self.decision_f:.4f}"
        )


def cpu_backend(path: str | os.PathLike, threads: int | None = 2) -> OnnxRuntimeBackend:
    """``path`` on onnxruntime's CPU provider (2 threads: the development machine's cores), with the
    warnings onnxruntime prints for every INT8 QDQ graph silenced."""
    return OnnxRuntimeBackend(path, providers=["CPUExecutionProvider"], intra_op_threads=threads or 0, log_severity=3)


def compare(fp32_path: str | os.PathLike, int8_path: str | os.PathLike, tiles: np.ndarray, meta: ModelMetadata) -> Int8Report:
    """How far the INT8 model's probabilities and decisions move from FP32's on ``tiles``."""
    p32 = cpu_backend(fp32_path).infer(tiles)
    p8 = cpu_backend(int8_path).infer(tiles)
    diff = np.abs(p8 - p32)
    d32, d8 = p32 >= meta.threshold, p8 >= meta.threshold
    tp, fp, fn = int(np.sum(d8 & d32)), int(np.sum(d8 & ~d32)), int(np.sum(~d8 & d32))
    f = prf(tp, fp, fn, BETA2)[2] if tp + fp + fn else 1.0
    return Int8Report(
        Path(fp32_path).stat().st_size, Path(int8_path).stat().st_size, len(tiles),
        float(diff.max()), float(diff.mean()), float(f),
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m calibration.int8",
        description="Quantize an exported FP32 ONNX model to INT8 (QDQ) for onnxruntime on CPUs, "
        "calibrated on tiles drawn as the edge runtime draws them.",
    )
    parser.add_argument("--model", required=True, type=Path, help="FP32 ONNX model from `python -m export.onnx`")
    parser.add_argument("--images", required=True, type=Path, nargs="+", help="calibration image folder(s) (a data set root with images/ works)")
    parser.add_argument("--out", type=Path, default=None, help="INT8 model to write (default: <model>.int8.onnx)")
    parser.add_argument("--max-tiles", type=int, default=64, help="calibration tiles drawn from the images (default: %(default)s)")
    parser.add_argument("--eval-tiles", type=int, default=16, help="held-out tiles for the FP32/INT8 comparison (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the tile draw (default: %(default)s)")
    parser.add_argument(
        "--per-channel", action=argparse.BooleanOptionalAction, default=True,
        help="per-output-channel weight scales (default: on)",
    )
    parser.add_argument("--activation", choices=ACTIVATION_TYPES, default="quint8", help="activation type (default: %(default)s: u8s8, the VNNI kernel)")
    parser.add_argument("--calibrate", choices=CALIBRATE_METHODS, default="minmax", help="range estimation (default: %(default)s)")
    parser.add_argument(
        "--keep-fp32", choices=KEEP_FP32, default="last",
        help="convolutions left in FP32 besides the sigmoid (default: %(default)s: the final 1x1 conv)",
    )
    parser.add_argument("--format", choices=("qdq",), default="qdq", help="quantized graph format (default: %(default)s; QOperator is not offered: TensorRT and the ORT optimiser read QDQ)")
    parser.add_argument("--calib-cache", type=Path, default=None, help="cache the calibration tiles in this .npy (default: none)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = args.out or args.model.with_name(args.model.stem + ".int8.onnx")
    try:
        meta = read_metadata(load_onnx(args.model), source=str(args.model))
        settings = QuantSettings(args.per_channel, args.activation, args.calibrate, args.keep_fp32)
        calib = draw_tiles(args.images, meta, max_tiles=args.max_tiles, seed=args.seed, cache=args.calib_cache)
        held_out = draw_tiles(args.images, meta, max_tiles=args.eval_tiles, seed=args.seed + 1, progress=False)
        quantize(args.model, out, calib.tiles, settings)
        report = compare(args.model, out, held_out.tiles, meta)
    except (ImageFolderError, FileNotFoundError, ValueError) as exc:
        print(f"calibration.int8: error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {out} (INT8 QDQ, {len(calib)} calibration tiles, {settings})")
    print(report.describe())
    return 0


if __name__ == "__main__":
    sys.exit(main())
