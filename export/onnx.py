"""Checkpoint -> ONNX: the U-Net with its sigmoid, model metadata inside, checked against torch.

``python -m export.onnx --checkpoint best.pt --out model.onnx``

* Output is the probability (the paper's final sigmoid, eq. 4, inside the graph), so every runtime
  thresholds the same number. Input ``image`` float32 N x 3 x H x W, output ``probability`` N x 1 x H x W.
* Batch is always dynamic; height/width are static (the tile side, 512 by default) unless
  ``--dynamic-hw``: TensorRT builds faster and fuses more with static spatial dims.
* Opset 17 by default: the newest opset the TensorRT 8.6 ONNX parser (JetPack 6) is documented for,
  and read by TensorRT 10.x as well; the graph (Conv, Relu, MaxPool, Resize-nearest, Concat, Sigmoid)
  needs nothing newer.
* Exporter: ``torch.onnx.export(dynamo=False)`` (TorchScript tracing) by default. With torch 2.13 the
  dynamo exporter needs the extra ``onnxscript`` package, produces opset 18 and down-converts with the
  ONNX version converter; after onnxslim both give the same 58-node graph (Conv, Relu, MaxPool, Resize,
  Concat, Sigmoid), so the default is the one that needs no extra dependency. ``--exporter dynamo``
  is available where onnxscript is installed.
* Simplification with onnxslim (pure Python, maintained): removes the Identity/Constant nodes the
  tracer leaves. onnx-simplifier would need a native build.
"""

from __future__ import annotations

import argparse
import io
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch
from torch import nn

from contract.metadata import INPUT_NAME, OUTPUT_NAME, ModelMetadata
from contract.onnx_file import pin_ir_version, save_onnx_atomic, write_metadata
from export.parity import DEFAULT_TOLERANCE, ParityError, ParityResult, check_parity, parity_tiles
from train.checkpoint import CheckpointError, load_model, metadata_from_checkpoint

DEFAULT_OPSET = 17
EXPORTERS = ("torchscript", "dynamo")


class ExportError(RuntimeError):
    """The model could not be exported, or the exported graph failed a check."""


class ProbabilityModel(nn.Module):
    """The U-Net followed by the sigmoid: returns crack probability N x 1 x H x W."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.unet(image))


def to_onnx(
    unet: nn.Module,
    meta: ModelMetadata,
    *,
    opset: int = DEFAULT_OPSET,
    dynamic_hw: bool = False,
    simplify: bool = True,
    exporter: str = "torchscript",
) -> onnx.ModelProto:
    """Export ``unet`` (logits) wrapped with its sigmoid to a checked ONNX model carrying ``meta``."""
    if exporter not in EXPORTERS:
        raise ExportError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    wrapped = ProbabilityModel(unet).eval()
    example = torch.zeros(1, 3, meta.input_size, meta.input_size)
    axes = {0: "batch", 2: "height", 3: "width"} if dynamic_hw else {0: "batch"}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # the TorchScript exporter announces its deprecation on every call; the choice is explained above
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        try:
            torch.onnx.export(
                wrapped,
                (example,),
                buffer,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                opset_version=opset,
                dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes},
                do_constant_folding=True,
                dynamo=exporter == "dynamo",
            )
        except ModuleNotFoundError as exc:
            raise ExportError(f"--exporter {exporter} needs {exc.name!r}: `pip install {exc.name}`") from exc
    model = onnx.load_from_string(buffer.getvalue())
    if simplify:
        import onnxslim

        model = onnxslim.slim(model)
    extra = {**meta.extra, "opset": str(opset), "dynamic_hw": str(dynamic_hw).lower(), "exporter": exporter}
    model.producer_name = "aelf-crack export.onnx"
    pin_ir_version(model)  # the opset's IR, not the onnx package's newest: older runtimes read it
    write_metadata(model, meta.replace(extra=extra))
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the exported graph fails onnx.checker: {exc}") from exc
    return model


@dataclass(frozen=True)
class ExportSummary:
    path: Path
    size_bytes: int
    opset: int
    nodes: int
    parity: ParityResult
    metadata: ModelMetadata

    def describe(self) -> str:
        return (
            f"wrote {self.path} ({self.size_bytes / 1e6:.2f} MB, opset {self.opset}, {self.nodes} nodes, "
            f"input {INPUT_NAME} N x 3 x {self.metadata.input_size} x {self.metadata.input_size}, "
            f"threshold {self.metadata.threshold:.3f})\n"
            f"parity: max |delta p| onnxruntime vs torch = {self.parity.max_abs_diff:.2e} on {self.parity.source}"
        )


def export_checkpoint(
    checkpoint: str | Path,
    out: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    dynamic_hw: bool = False,
    simplify: bool = True,
    threshold: float | None = None,
    size: int | None = None,
    parity_images: str | Path | None = None,
    parity_tiles_n: int = 8,
    tolerance: float = DEFAULT_TOLERANCE,
    exporter: str = "torchscript",
) -> ExportSummary:
    """Export a checkpoint, check parity against torch, then write ``out`` atomically (nothing on failure)."""
    unet, payload = load_model(checkpoint, "cpu")
    meta = metadata_from_checkpoint(payload, threshold=threshold, size=size)
    model = to_onnx(unet, meta, opset=opset, dynamic_hw=dynamic_hw, simplify=simplify, exporter=exporter)
    serialized = model.SerializeToString()
    tiles, source = parity_tiles(meta, parity_images, n_tiles=parity_tiles_n)
    parity = check_parity(unet, serialized, tiles, tolerance, source)
    path = save_onnx_atomic(model, out)
    return ExportSummary(path, path.stat().st_size, opset, len(model.graph.node), parity, meta)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m export.onnx",
        description="Export a training checkpoint to ONNX (sigmoid inside, metadata in metadata_props), "
        "checked with onnx.checker and against torch with onnxruntime.",
    )
    parser.add_argument("--checkpoint", required=True, type=Path, help="checkpoint written by `python -m train.run` (best.pt)")
    parser.add_argument("--out", required=True, type=Path, help="ONNX file to write (atomically; not written when a check fails)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset (default: %(default)s, for TensorRT 8.6/10.x)")
    parser.add_argument("--dynamic-hw", action="store_true", help="make height and width dynamic too (default: static tile side)")
    parser.add_argument(
        "--simplify", action=argparse.BooleanOptionalAction, default=True, help="simplify the graph with onnxslim (default: on)"
    )
    parser.add_argument("--threshold", type=float, default=None, help="decision threshold to record (default: the checkpoint's)")
    parser.add_argument("--size", type=int, default=None, help="tile side in pixels, multiple of 16 (default: the checkpoint's input size)")
    parser.add_argument(
        "--parity-images", type=Path, default=None,
        help="folder of images for the parity check (default: DeepCrack test images under $CRACK_DATA_ROOT, "
        "../shared/data when unset; else random tiles)",
    )
    parser.add_argument("--parity-tiles", type=int, default=8, help="number of tiles in the parity check (default: %(default)s)")
    parser.add_argument(
        "--tolerance", type=float, default=DEFAULT_TOLERANCE,
        help="max |delta p| allowed between onnxruntime and torch, on probabilities (default: %(default)g)",
    )
    parser.add_argument(
        "--exporter", choices=EXPORTERS, default="torchscript",
        help="torch.onnx exporter: torchscript (dynamo=False) or dynamo (needs onnxscript) (default: %(default)s)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.tolerance < 0:
        parser.error(f"--tolerance must be >= 0, got {args.tolerance}")
    try:
        summary = export_checkpoint(
            args.checkpoint, args.out, opset=args.opset, dynamic_hw=args.dynamic_hw, simplify=args.simplify,
            threshold=args.threshold, size=args.size, parity_images=args.parity_images,
            parity_tiles_n=args.parity_tiles, tolerance=args.tolerance, exporter=args.exporter,
        )
    except (ParityError, ExportError, CheckpointError, ValueError, FileNotFoundError) as exc:
        print(f"export.onnx: error: {exc}", file=sys.stderr)
        return 1
    print(summary.describe())
    return 0


if __name__ == "__main__":
    sys.exit(main())
