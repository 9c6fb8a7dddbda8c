"""``python -m train.evaluate``: score a checkpoint (.pt) or an exported model (.onnx) on a data set split.

Writes the same ``metrics.json``, ``pr_curve.png``/``.csv`` and ``overlays/`` as a training run, and
``counts.npz`` (every image's counts per threshold, for ``python -m benchmarks.paired_bootstrap``).

Both run through the backends and :func:`contract.predict.predict_frame`, the inference path of the
edge daemon, calibration and the export parity check:

* ``.pt``: the torch backend (``train.torch_backend``); whole images padded to a multiple of 16, as
  the training loop validates.
* ``.onnx``: the onnxruntime backend (``contract.backends.ort``), input ``image``, output
  ``probability`` (sigmoid inside), the input contract (colour order, scale, mean/std) from its
  metadata. A graph with dynamic height/width gets whole padded images; one with a static tile (the
  export default, 512) is run exactly as the edge daemon runs it (overlapping tiles, mirrored fill of
  frames smaller than a tile, blended stitch): the same probabilities, so the score is the deployed
  model's.

Which images: ``--splits DIR`` (a run folder with ``splits/*.txt``) when given; else, for a checkpoint,
the run folder it sits in when that has ``splits/``; else the data set's own split rules with the seed
and fractions recorded in the checkpoint (``--seed``/``--val-fraction``/``--test-fraction`` for ONNX).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from contract.backends.flips import FLIP_AXES
from contract.image_tiles import seeded_subset
from contract.metrics import ThresholdSweep, mean_metrics_at_threshold, metrics_at_threshold, pooled_summary
from train.config import TrainConfig, split_data_list
from train.data import DatasetError, Splits, list_samples, load_images
from train.health import detection_words
from train.inference import Predictor, sweep_images
from train.report import source_table, write_json, write_overlay, write_pr_curve
from train.sources import recorded_splits, source_names, source_splits


class EvaluateError(RuntimeError):
    """The model file cannot be evaluated (format, missing runtime); the message says what to do."""


# ----------------------------------------------------------------------------- predictors


def stored_threshold(meta, flips: int) -> tuple[float, str]:
    """The threshold a model's metadata holds for ``flips`` passes, and which one it is in words."""
    from contract.metadata import threshold_key

    if flips > 1 and meta.has_threshold_for(flips):
        return meta.threshold_for(flips), f"metadata {threshold_key(flips)} (calibrated at {flips} passes)"
    words = "metadata threshold (calibrated at one pass)"
    return float(meta.threshold), words + (f"; none calibrated at {flips} passes" if flips > 1 else "")


def checkpoint_predictor(path: Path, device: str = "auto", flips: int = 1) -> tuple[Predictor, dict[str, Any]]:
    """Predictor of a ``.pt`` checkpoint (whole images, as the training loop scores) and a description;
    ``flips`` > 1 averages each image's prediction over its mirrorings (:mod:`contract.backends.flips`)."""
    import torch

    from contract.backends.flips import with_flips
    from train.checkpoint import load_model, metadata_from_checkpoint
    from train.inference import backend_predictor
    from train.torch_backend import TorchBackend

    resolved = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                            ("cpu" if device == "auto" else device))
    model, payload = load_model(path, resolved)
    meta = metadata_from_checkpoint(payload, model_name=path.stem)
    backend = with_flips(TorchBackend.from_module(model, meta, device=resolved, batch_size=1, whole_images=True), flips)
    threshold, stored = stored_threshold(meta, flips)
    info = {"kind": "checkpoint", "threshold": threshold, "threshold_stored": stored,
            "train_config": payload.get("train_config") or {}, "device": str(resolved),
            "epoch": payload.get("epoch"), "model": payload.get("model"), "flips": flips}
    return backend_predictor(backend, whole_image=True), info


def onnx_predictor(path: Path, device: str = "auto", batch_size: int = 4, flips: int = 1,
                   ) -> tuple[Predictor, dict[str, Any]]:
    """Predictor of an ``.onnx`` model on the onnxruntime backend (CUDA provider when present and asked for);
    ``flips`` as :func:`checkpoint_predictor`."""
    from contract.backends import BackendError, MissingRuntimeError
    from contract.backends.flips import with_flips
    from contract.backends.ort import OnnxRuntimeBackend, import_onnxruntime
    from train.inference import backend_predictor

    try:
        available = import_onnxruntime().get_available_providers()
        providers = ["CPUExecutionProvider"]
        if device != "cpu" and "CUDAExecutionProvider" in available:
            providers.insert(0, "CUDAExecutionProvider")
        backend = with_flips(OnnxRuntimeBackend(path, providers=providers, batch_size=batch_size, whole_images=True),
                             flips)
    except MissingRuntimeError as exc:
        raise EvaluateError(f"evaluating .onnx models needs onnxruntime: {exc}") from exc
    except BackendError as exc:
        raise EvaluateError(str(exc)) from exc
    tile = None if backend.any_size else backend.input_shape[2]
    threshold, stored = stored_threshold(backend.metadata, flips)
    info = {"kind": "onnx", "threshold": threshold, "train_config": {}, "threshold_stored": stored,
            "device": providers[0], "tile": tile, "metadata": backend.metadata.to_json_dict(), "flips": flips}
    return backend_predictor(backend, whole_image=backend.any_size), info


def load_predictor(path: str | Path, device: str = "auto", flips: int = 1) -> tuple[Predictor, dict[str, Any]]:
    """Predictor and description of a ``.onnx`` model or a ``.pt`` checkpoint, each image's prediction averaged
    over ``flips`` mirrorings (1: none, 2: + left-right, 4: + upside-down and both)."""
    from contract.backends import BackendError
    from contract.backends.flips import check_flips

    path = Path(path)
    try:
        check_flips(flips)
    except BackendError as exc:
        raise EvaluateError(str(exc)) from exc
    if not path.is_file():
        raise EvaluateError(f"model file {path} does not exist")
    if path.suffix == ".onnx":
        return onnx_predictor(path, device, flips=flips)
    if path.suffix in (".pt", ".pth"):
        return checkpoint_predictor(path, device, flips=flips)
    raise EvaluateError(f"{path}: expected a .pt checkpoint (train.run) or an .onnx model (export.onnx)")


# ----------------------------------------------------------------------------- evaluation


def choose_splits(model_path: Path, data: Path, samples, train_config: dict[str, Any], splits_dir: Path | None,
                  seed: int, val_fraction: float, test_fraction: float) -> Splits:
    """The split rules of the module docstring."""
    if splits_dir is not None:
        return recorded_splits(splits_dir, data.name, samples)
    run = model_path.parent if (model_path.parent / "splits").is_dir() and train_config else None
    return source_splits(
        data, samples, seed=int(train_config.get("seed", seed)),
        val_fraction=float(train_config.get("val_fraction", val_fraction)),
        test_fraction=float(train_config.get("test_fraction", test_fraction)), run_folder=run,
    )


def evaluate_model(model: str | Path, data: str | Path, **options: Any) -> dict[str, Any]:
    """Score ``model`` on one split of ``data``; write metrics.json, pr_curve.*, overlays/ into ``out``.

    ``options``: the keywords of :func:`evaluate_sources` (split, out, tolerance_px, threshold, ...).
    """
    return evaluate_sources(model, [data], **options)


def evaluate_sources(
    model: str | Path,
    datas: list[str | Path],
    *,
    split: str = "test",
    out: str | Path | None = None,
    tolerance_px: int = 0,
    threshold: float | None = None,
    device: str = "auto",
    scale: float | None = None,
    binarize_masks: bool = False,
    splits_dir: str | Path | None = None,
    seed: int = 0,
    val_fraction: float = TrainConfig.default("val_fraction"),
    test_fraction: float = TrainConfig.default("test_fraction"),
    overlays: int = 4,
    progress: bool = True,
    max_images: int = 0,
    flips: int = 1,
) -> dict[str, Any]:
    """Score ``model`` on one split of each data set; one data set: as :func:`evaluate_model`.

    ``max_images`` > 0 scores a seeded subset of that many images per data set (``seed``; the same images
    as train.run's ``--test-max-images`` with the run's seed); metrics.json records it. ``flips`` > 1 averages
    each image's prediction over its mirrorings (as the daemon's ``model.flips``); metrics.json records it.
    Several: ``out/<name>/`` gets each data set's own metrics.json, PR curve and overlays, and
    ``out/metrics.json`` the pooled metrics (every data set counts equally,
    :func:`contract.metrics.pooled_summary`) with the per-source table under ``sources``.
    """
    started = time.perf_counter()
    model = Path(model)
    datas = [Path(d) for d in datas]
    source_names(datas)  # distinct names, or a clear error
    predict, info = load_predictor(model, device, flips)
    chosen = info["threshold"] if threshold is None else float(threshold)
    if not 0.0 < chosen < 1.0:
        raise ValueError(f"--threshold must be in (0, 1), got {chosen}")
    if max_images < 0:
        raise ValueError(f"--max-images must be >= 0 (0 = the whole split), got {max_images}")
    scale = float(info["train_config"].get("scale", 1.0)) if scale is None else scale
    if out is None:
        names = "+".join(d.name for d in datas)
        out = model.parent / f"eval-{names}-{split}"
    out = Path(out)
    run = dict(model=str(model), model_kind=info["kind"], split=split, scale=scale, device=info["device"],
               threshold=chosen, flips=flips,
               threshold_source="--threshold" if threshold is not None else f"the {info['kind']}'s {info['threshold_stored']}",
               **({"max_images": max_images} if max_images else {}))
    sweeps, per_source = {}, {}
    for data in datas:
        folder = out if len(datas) == 1 else out / data.name
        sweep, record = _score_data(predict, info, model, data, folder, split=split, tolerance_px=tolerance_px,
                                    threshold=chosen, scale=scale, binarize_masks=binarize_masks,
                                    splits_dir=splits_dir, seed=seed, val_fraction=val_fraction,
                                    test_fraction=test_fraction, overlays=overlays, progress=progress,
                                    max_images=max_images)
        stems = record.pop("stems")
        metrics = {**sweep.summary(), "at_threshold": metrics_at_threshold(sweep, chosen), **run, **record,
                   "seconds": round(time.perf_counter() - started, 2)}
        if info.get("tile"):
            metrics["onnx_tile"] = info["tile"]
        write_json(folder / "metrics.json", metrics)
        write_counts(folder / "counts.npz", sweep, stems, data.name)
        write_pr_curve(sweep, folder, label=model.name, title=f"{data.name} {split}: {model.name}")
        sweeps[data.name], per_source[data.name] = sweep, metrics
    if len(datas) == 1:
        return per_source[datas[0].name]
    at = {"threshold": chosen, **mean_metrics_at_threshold(sweeps, chosen)}
    pooled = {**pooled_summary(sweeps), "at_threshold": at, **run,
              "data": "+".join(sweeps), "seconds": round(time.perf_counter() - started, 2), "sources": per_source}
    write_json(out / "metrics.json", pooled)
    return pooled


def _score_data(predict: Predictor, info: dict[str, Any], model: Path, data: Path, out: Path, *, split: str,
                tolerance_px: int, threshold: float, scale: float, binarize_masks: bool,
                splits_dir: str | Path | None, seed: int, val_fraction: float, test_fraction: float,
                overlays: int, progress: bool, max_images: int = 0):
    """The threshold sweep of one data set's split (overlays into ``out``) and what identifies it."""
    samples = list_samples(data)
    splits = choose_splits(model, data, samples, info["train_config"], Path(splits_dir) if splits_dir else None,
                           seed, val_fraction, test_fraction)
    stems = splits.get(split)
    if not stems:
        raise DatasetError(f"split {split!r} of {data} is empty ({splits.source})")
    stems = seeded_subset(stems, max_images, seed)
    images = load_images(samples, stems, scale=scale, binarize_masks=binarize_masks, progress=progress,
                         desc=f"loading {data.name}")
    wanted = set(range(min(overlays, len(images))))

    def keep_overlay(index: int, prob: np.ndarray) -> None:
        if index in wanted:
            write_overlay(out / "overlays", images.stems[index], images.images[index], prob, images.masks[index],
                          threshold)

    sweep = sweep_images(predict, images, tolerance_px=tolerance_px, progress=progress,
                         desc=f"scoring {data.name} {split}", on_prediction=keep_overlay)
    return sweep, {"data": data.name, "data_path": str(data.resolve()), "split_source": splits.source,
                   "stems": list(images.stems)}


def write_counts(path: Path, sweep: ThresholdSweep, stems: list[str], data_name: str) -> None:
    """Every image's (tp, fp, fn) per sweep threshold with its stem (``counts.npz``: ``counts`` images x 3 x
    thresholds, ``stems``, ``thresholds``, ``tolerance_px``, ``data``), for paired comparisons of two models on
    the same images (``python -m benchmarks.paired_bootstrap``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, counts=sweep.per_image_counts(), stems=np.asarray(stems), thresholds=sweep.thresholds,
                        tolerance_px=np.int64(sweep.tolerance_px), data=np.asarray(data_name))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m train.evaluate",
        description="Score a checkpoint (.pt) or an ONNX model (.onnx) on a data set split: P, R, F-beta "
        "(beta^2=0.3) at 0.5 and at the model's threshold, F1, IoU, ODS, OIS, AP; writes metrics.json, "
        "pr_curve.png/.csv and overlays/.",
    )
    p = parser.add_argument
    p("--model", required=True, type=Path, help="best.pt / last.pt from train.run, or model.onnx from export.onnx")
    p("--data", required=True, action="append", metavar="FOLDER",
      help="data set folder with images/ and masks/; repeat or comma-separate for several (a per-source table "
      "and the pooled score in which every data set counts equally)")
    p("--split", default="test", choices=("train", "val", "test"), help="which split to score (default: %(default)s)")
    p("--out", type=Path, default=None, help="output folder (default: <model folder>/eval-<data>-<split>); "
      "with several data sets one subfolder each")
    p("--tolerance-px", type=int, default=0, help="pixel tolerance of the metrics, e.g. 2 (default: %(default)s)")
    p("--threshold", type=float, default=None, help="decision threshold for the at_threshold metrics and overlays "
      "(default: the one stored in the model)")
    p("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: %(default)s)")
    p("--scale", type=float, default=None, help="resize images by this factor (default: the checkpoint's "
      "training --scale, 1 for ONNX)")
    p("--binarize-masks", action="store_true", help="accept non-0/255 masks, crack where value >= 128")
    p("--splits", type=Path, default=None, help="run folder whose splits/*.txt to use (default: see module docs)")
    p("--seed", type=int, default=0, help="split seed for data sets without splits/ when the model does not record one (default: %(default)s)")
    p("--val-fraction", type=float, default=TrainConfig.default("val_fraction"), help="as train.run, for the seeded split (default: %(default)s)")
    p("--test-fraction", type=float, default=TrainConfig.default("test_fraction"), help="as train.run, for the seeded split (default: %(default)s)")
    p("--max-images", type=int, default=0, help="score a seeded subset (--seed) of N images per data set, for quick "
      "comparisons; 0 = the whole split (default: %(default)s)")
    p("--flips", type=int, default=1, choices=tuple(FLIP_AXES),
      help="predict each image this many times, mirrored (1: as is; 2: + left-right; 4: + upside-down and both), "
      "and average: as the daemon's model.flips; costs that many passes (default: %(default)s, the network alone)")
    p("--overlays", type=int, default=4, help="images written as overlays/*.png (default: %(default)s)")
    p("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        metrics = evaluate_sources(
            args.model, list(split_data_list(args.data)), split=args.split, out=args.out,
            tolerance_px=args.tolerance_px, threshold=args.threshold, device=args.device, scale=args.scale,
            binarize_masks=args.binarize_masks, splits_dir=args.splits, seed=args.seed,
            val_fraction=args.val_fraction, test_fraction=args.test_fraction, overlays=args.overlays,
            progress=args.progress, max_images=args.max_images, flips=args.flips,
        )
    except (EvaluateError, DatasetError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if "sources" in metrics:
        print(source_table(metrics, title=f"{metrics['split']} split, per data set:"))
    keys = ("precision", "recall", "f_beta", "f1", "iou", "ods_f", "ods_threshold", "ois_f", "ap")
    label = "pooled, every data set counting equally" if "sources" in metrics else f"{metrics['n_images']} images"
    print(f"{metrics['split']} ({label}): " + ", ".join(f"{k} {metrics[k]:.4f}" for k in keys))
    at = metrics["at_threshold"]
    print(f"at threshold {at['threshold']:.2f}: precision {at['precision']:.4f}, recall {at['recall']:.4f}, "
          f"f_beta {at['f_beta']:.4f}" + (" (mean over data sets)" if "sources" in metrics else ""))
    said = (detection_words(metrics["precision"], metrics["recall"], 0.5),
            detection_words(at["precision"], at["recall"], at["threshold"]))
    for words in dict.fromkeys(w for w in said if w):
        print(f"the model {words}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
