"""The alert threshold: the F-beta-optimal (ODS) threshold on validation data, written into the model.

``python -m calibration.threshold --model model.onnx --data ../shared/data/deepcrack --split val --write``

With several ``--data`` (a model trained on several data sets) every data set counts equally, not
every pixel: the threshold is the one that maximises the mean over the data sets of their F-beta
(:func:`contract.metrics.pooled_summary`), so a set with 900 validation crops does not choose alone.
``--run RUN`` takes each data set's validation images from the split a training run recorded
(``RUN/splits/<name>/val.txt``, or ``RUN/splits/val.txt`` for a one-data-set run) where there is one.

Each validation image is tiled, inferred and stitched exactly as the edge daemon does
(:func:`contract.predict.predict_frame` on the model's backend), so the threshold is chosen on the
probabilities the daemon will threshold. The sweep is :class:`contract.metrics.ThresholdSweep`
(F-beta of eq. 10 with beta^2 = 0.3 on the data-set counts, the ODS threshold). ONNX models run on
onnxruntime; a checkpoint (``.pt``) on the torch backend (``train.torch_backend``, imported by
``contract.backends.load_backend`` only for that case).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from contract.backends import Backend, BackendError, load_backend
from contract.backends.flips import FLIP_AXES
from contract.image_tiles import ImageFolderError, list_images, read_bgr, seeded_subset
from contract.metadata import threshold_key
from contract.metrics import (
    BETA2,
    ThresholdSweep,
    mean_metrics_at_threshold,
    metrics_at_threshold,
    pooled_summary,
)
from contract.onnx_file import load_onnx, read_metadata, save_onnx_atomic, write_metadata
from contract.predict import predict_frame


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
    threshold = sweep.summary()["ods_threshold"]
    return _choice(threshold, metrics_at_threshold(sweep, threshold), sweep.n_images)


def choose_pooled_threshold(sweeps: dict[str, ThresholdSweep]) -> ThresholdChoice:
    """The threshold maximising the mean F-beta over data sets, with the mean P/R/F-beta/F1 there (pure)."""
    if len(sweeps) == 1:
        return choose_threshold(next(iter(sweeps.values())))
    threshold = pooled_summary(sweeps)["ods_threshold"]
    return _choice(threshold, mean_metrics_at_threshold(sweeps, threshold), sum(s.n_images for s in sweeps.values()))


def _choice(threshold: float, at: dict[str, float], n_images: int) -> ThresholdChoice:
    return ThresholdChoice(threshold, at["precision"], at["recall"], at["f_beta"], at["f1"], n_images)


def split_for(root: Path, split: str, run: Path | None) -> str | None:
    """The split argument of :func:`labelled_images` for one data set (``--run`` record first)."""
    if split == "all":
        return None
    if run is not None and not split.endswith(".txt"):
        for candidate in (run / "splits" / root.name / f"{split}.txt", run / "splits" / f"{split}.txt"):
            if candidate.is_file():
                return str(candidate)
    return split


def read_mask(root: Path, image: Path) -> np.ndarray:
    """The ground-truth crack mask (``root/masks/<stem>.png``, crack > 127) of ``image``."""
    import cv2

    path = root / "masks" / f"{image.stem}.png"
    mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise ImageFolderError(f"mask {path} for image {image.name} is missing or unreadable")
    return mask > 127


def labelled_images(root: str | os.PathLike, split: str | None, max_images: int = 0) -> list[tuple[Path, Path]]:
    """(image, mask path) pairs of a data set root laid out as images/, masks/, splits/<split>.txt;
    ``max_images`` > 0: a seeded subset of that many (:func:`contract.image_tiles.seeded_subset`, seed 0)."""
    root = Path(root)
    images = seeded_subset(list_images(root, split), max_images)
    return [(image, root / "masks" / f"{image.stem}.png") for image in images]


def probability_maps(
    backend: Backend, root: str | os.PathLike, split: str | None, progress: bool = True, max_images: int = 0
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(stitched probability H x W, crack mask H x W) per labelled image, predicted as the daemon does."""
    root = Path(root)
    pairs = labelled_images(root, split, max_images)
    for image, _ in tqdm(pairs, desc=f"{root.name} images", unit="img", disable=not progress):
        frame = read_bgr(image)
        mask = read_mask(root, image)
        if mask.shape != frame.shape[:2]:
            raise ImageFolderError(f"mask of {image.name} is {mask.shape}, the image is {frame.shape[:2]}")
        yield predict_frame(backend, frame), mask


def open_model(model: str | os.PathLike, threads: int | None = 2, flips: int = 1) -> Backend:
    """The backend of an ONNX file (onnxruntime on the CPU) or a checkpoint (torch on the CPU), its
    predictions averaged over ``flips`` mirrorings as the daemon's ``model.flips`` does."""
    return load_backend(model, providers=["CPUExecutionProvider"], intra_op_threads=threads or None,
                        device="cpu", log_severity=3, flips=flips)


def write_threshold(model: str | os.PathLike, threshold: float, flips: int = 1) -> Path:
    """Record ``threshold`` in the ONNX model's metadata (file rewritten atomically): as ``threshold`` for
    single-pass predictions (``flips`` 1), else as ``extra["threshold_at_flips_<n>"]``, the threshold the
    daemon uses when it averages ``n`` mirrored passes (:meth:`contract.metadata.ModelMetadata.threshold_for`)."""
    proto = load_onnx(model)
    meta = read_metadata(proto, source=str(model))
    source = "calibration.threshold (ODS F-beta on validation data)"
    if flips == 1:
        changed = meta.replace(threshold=float(threshold), extra={**meta.extra, "threshold_source": source})
    else:
        changed = meta.replace(extra={**meta.extra, threshold_key(flips): f"{float(threshold):.4g}",
                                      f"{threshold_key(flips)}_source": f"{source}, {flips} mirrored passes averaged"})
    return save_onnx_atomic(write_metadata(proto, changed), model)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m calibration.threshold",
        description="Choose the F-beta-optimal (ODS) decision threshold on validation data; optionally "
        "write it into the ONNX model's metadata.",
    )
    parser.add_argument("--model", required=True, type=Path, help="model.onnx (onnxruntime) or a checkpoint .pt (torch)")
    parser.add_argument("--data", required=True, type=Path, action="append",
                        help="data set root with images/, masks/ and splits/<split>.txt; repeat for several data sets "
                        "(each then counts equally in the choice)")
    parser.add_argument("--run", type=Path, default=None,
                        help="training run folder whose recorded splits (splits/<name>/<split>.txt) to use where present")
    parser.add_argument("--split", default="val", help="split: a name under <data>/splits/ (val, test), a .txt file of stems (a training run's "
        "runs/<run>/splits/val.txt: the images it held out for validation), or 'all' (default: %(default)s)")
    parser.add_argument("--n-thresholds", type=int, default=99, help="thresholds swept, k/(n+1) for k=1..n (default: %(default)s)")
    parser.add_argument("--tolerance-px", type=int, default=0, help="pixel tolerance when matching cracks (default: %(default)s)")
    parser.add_argument("--max-images", type=int, default=0, help="a seeded subset of N images per data set "
                        "(quicker; the choice then rests on fewer images); 0 = the whole split (default: %(default)s)")
    parser.add_argument("--flips", type=int, default=1, choices=tuple(FLIP_AXES),
                        help="passes per tile, mirrored and averaged, as the daemon's model.flips that will use the "
                        "threshold (default: %(default)s)")
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
        backend = open_model(args.model, args.threads, args.flips)
        meta = backend.metadata
        if len(args.data) > 1 and args.split.endswith(".txt"):
            raise ValueError("--split FILE.txt names the images of one data set; with several --data use a split "
                             "name (val) and --run RUN for a training run's recorded splits")
        if args.max_images < 0:
            raise ValueError(f"--max-images must be >= 0 (0 = the whole split), got {args.max_images}")
        sweeps = {}
        for root in args.data:
            sweep = sweeps[root.name] = ThresholdSweep(args.n_thresholds, args.tolerance_px)
            for prob, mask in probability_maps(backend, root, split_for(root, args.split, args.run),
                                               max_images=args.max_images):
                sweep.update(prob, mask)
        choice = choose_pooled_threshold(sweeps)
    except (ImageFolderError, BackendError, FileNotFoundError, ValueError) as exc:
        print(f"calibration.threshold: error: {exc}", file=sys.stderr)
        return 1
    print(choice.describe())
    if args.write:
        write_threshold(args.model, choice.threshold, args.flips)
        what = "threshold" if args.flips == 1 else f"threshold for {args.flips} mirrored passes ({threshold_key(args.flips)})"
        print(f"wrote {what} {choice.threshold:.2f} into {args.model} (was {meta.threshold_for(args.flips):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
