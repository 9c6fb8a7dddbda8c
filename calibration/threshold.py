"""The alert threshold: the F-beta-optimal (ODS) threshold on validation data, written into the model.

``python -m calibration.threshold --model model.onnx --data ../shared/data/deepcrack --split val --write``

Each validation image is tiled, inferred and stitched exactly as the edge daemon does
(:func:`calibration.runtime.predict_frame`), so the threshold is chosen on the probabilities the
daemon will threshold. The sweep is :class:`train.metrics.ThresholdSweep` (F-beta of eq. 10 with
beta^2 = 0.3 on the data-set counts, the ODS threshold). ONNX models run on onnxruntime; a
checkpoint (``.pt``) runs on torch, imported only for that case.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from calibration.dataset import CalibrationDataError, frame_tiles, list_images, read_bgr
from edge.metadata import ModelMetadata
from train.metrics import BETA2, ThresholdSweep, prf

Predictor = Callable[[np.ndarray], np.ndarray]  # model-ready tiles N x 3 x S x S -> probabilities N x 1 x S x S


@dataclass(frozen=True)
class ThresholdChoice:
    """The chosen threshold and the data-set precision, recall, F-beta and F1 at it."""

    threshold: float
    precision: float
    recall: float
    f_beta: float
    f1: float
    n_images: int

    def describe(self) -> str:
        return (
            f"threshold {self.threshold:.2f}: precision {self.precision:.4f}, recall {self.recall:.4f}, "
            f"F-beta (beta^2={BETA2}) {self.f_beta:.4f}, F1 {self.f1:.4f} on {self.n_images} images"
        )


def choose_threshold(sweep: ThresholdSweep) -> ThresholdChoice:
    """The ODS threshold of ``sweep`` (the lowest among ties) with P/R/F there (pure)."""
    summary = sweep.summary()
    threshold = summary["ods_threshold"]
    index = int(np.argmin(np.abs(sweep.thresholds - threshold)))
    tp, fp, fn = (int(c[index]) for c in sweep.totals())
    precision, recall, f_beta = prf(tp, fp, fn)
    return ThresholdChoice(threshold, precision, recall, f_beta, prf(tp, fp, fn, beta2=1.0)[2], sweep.n_images)


def read_mask(root: Path, image: Path) -> np.ndarray:
    """The ground-truth crack mask (``root/masks/<stem>.png``, crack > 127) of ``image``."""
    import cv2

    path = root / "masks" / f"{image.stem}.png"
    mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise CalibrationDataError(f"mask {path} for image {image.name} is missing or unreadable")
    return mask > 127


def labelled_images(root: str | os.PathLike, split: str | None) -> list[tuple[Path, Path]]:
    """(image, mask path) pairs of a data set root laid out as images/, masks/, splits/<split>.txt."""
    root = Path(root)
    return [(image, root / "masks" / f"{image.stem}.png") for image in list_images(root, split)]


def probability_maps(
    predict: Predictor, root: str | os.PathLike, split: str | None, meta: ModelMetadata, progress: bool = True
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(stitched probability H x W, crack mask H x W) per labelled image, predicted as the daemon does."""
    from edge.tiling import stitch

    root = Path(root)
    for image, _ in tqdm(labelled_images(root, split), desc="images", unit="img", disable=not progress):
        frame = read_bgr(image)
        grid, tiles = frame_tiles(frame, meta)
        mask = read_mask(root, image)
        if mask.shape != frame.shape[:2]:
            raise CalibrationDataError(f"mask of {image.name} is {mask.shape}, the image is {frame.shape[:2]}")
        yield stitch(predict(tiles), grid), mask


def load_predictor(model: str | os.PathLike, threads: int | None = 2) -> tuple[Predictor, ModelMetadata]:
    """A tiles -> probabilities function and the model's metadata, for an ONNX file or a checkpoint."""
    model = Path(model)
    if not model.is_file():
        raise FileNotFoundError(f"model {model} does not exist (expected an .onnx model or a .pt checkpoint)")
    if model.suffix == ".onnx":
        from calibration.runtime import ort_session, run_tiles
        from export.metadata_io import read_metadata

        session = ort_session(model, threads)
        return (lambda tiles: run_tiles(session, tiles)), read_metadata(model)
    import torch  # only for checkpoints: calibration must not need torch for ONNX models

    from export.onnx import ProbabilityModel, metadata_from_checkpoint
    from export.parity import torch_probabilities
    from train.checkpoint import load_model

    unet, payload = load_model(model, "cpu")
    if threads:
        torch.set_num_threads(threads)
    net = ProbabilityModel(unet).eval()
    return (lambda tiles: torch_probabilities(net, tiles)), metadata_from_checkpoint(payload)


def write_threshold(model: str | os.PathLike, threshold: float) -> Path:
    """Record ``threshold`` in the ONNX model's metadata (file rewritten atomically)."""
    from export.metadata_io import load_onnx, read_metadata, save_onnx_atomic, write_metadata

    proto = load_onnx(model)
    meta = read_metadata(proto, source=str(model))
    extra = {**meta.extra, "threshold_source": "calibration.threshold (ODS F-beta on validation data)"}
    return save_onnx_atomic(write_metadata(proto, meta.replace(threshold=float(threshold), extra=extra)), model)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m calibration.threshold",
        description="Choose the F-beta-optimal (ODS) decision threshold on validation data; optionally "
        "write it into the ONNX model's metadata.",
    )
    parser.add_argument("--model", required=True, type=Path, help="model.onnx (onnxruntime) or a checkpoint .pt (torch)")
    parser.add_argument("--data", required=True, type=Path, help="data set root with images/, masks/ and splits/<split>.txt")
    parser.add_argument("--split", default="val", help="split: a name under <data>/splits/ (val, test), a .txt file of stems (a training run's "
        "runs/<run>/splits/val.txt: the images it held out for validation), or 'all' (default: %(default)s)")
    parser.add_argument("--n-thresholds", type=int, default=99, help="thresholds swept, k/(n+1) for k=1..n (default: %(default)s)")
    parser.add_argument("--tolerance-px", type=int, default=0, help="pixel tolerance when matching cracks (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for inference (default: %(default)s)")
    parser.add_argument("--write", action="store_true", help="write the threshold into the ONNX metadata (default: print only)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.write and args.model.suffix != ".onnx":
        print("calibration.threshold: error: --write needs an .onnx model; for a checkpoint, pass the printed "
              "threshold to `python -m export.onnx --threshold T`", file=sys.stderr)
        return 1
    try:
        predict, meta = load_predictor(args.model, args.threads)
        sweep = ThresholdSweep(args.n_thresholds, args.tolerance_px)
        for prob, mask in probability_maps(predict, args.data, None if args.split == "all" else args.split, meta):
            sweep.update(prob, mask)
        choice = choose_threshold(sweep)
    except (CalibrationDataError, FileNotFoundError, ValueError) as exc:
        print(f"calibration.threshold: error: {exc}", file=sys.stderr)
        return 1
    print(choice.describe())
    if args.write:
        write_threshold(args.model, choice.threshold)
        print(f"wrote threshold {choice.threshold:.2f} into {args.model} (was {meta.threshold:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
