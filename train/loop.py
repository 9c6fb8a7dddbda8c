"""One training run: data, model, Adam, per-epoch validation and checkpoints, then the test evaluation.

:func:`train_run` is what ``python -m train.run`` calls (also under ``torchrun``). A run folder gets::

    config.json      every option (TrainConfig), the data set, device, world size, commit
    splits/*.txt     the stems of train / val / test actually used
    history.csv      one row per epoch: train loss, steps, lr, seconds, validation metrics
    last.pt          resumable: weights, optimizer, GradScaler, RNG states, epoch, best-so-far
    best.pt          weights of the best validation epoch; its threshold = that epoch's ODS threshold
    metrics.json     best.pt on the test split (P, R, F-beta@0.5, F1, IoU, ODS, OIS, AP, at the threshold)
    pr_curve.png/csv test precision-recall curve
    overlays/*.png   a few test images: TP green, FP red, FN blue at the chosen threshold

Best-epoch selection: the validation ``--select`` metric, ODS F-beta by default (the best F over one
data-set-wide threshold), because the deployed threshold is chosen the same way; ``f_beta`` selects
by F-beta at 0.5 instead. Ties keep the earlier epoch.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler
from torch.utils.data.distributed import DistributedSampler

from train import distributed
from train.checkpoint import CheckpointError, load_model, read_checkpoint, save_checkpoint, unwrap
from train.config import TrainConfig
from train.data import (
    CrackImages,
    DatasetError,
    Splits,
    TrainCrops,
    list_samples,
    load_images,
    read_run_splits,
    resolve_splits,
    seed_worker,
    write_splits,
)
from train.inference import sweep_images, torch_predictor
from train.losses import build_loss
from train.model import build_model
from train.report import (
    append_history,
    history_row,
    metrics_at_threshold,
    read_history,
    truncate_history,
    write_json,
    write_overlay,
    write_pr_curve,
)


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, nothing to resume, ...); the message says why."""


@dataclass
class RunResult:
    """What a finished run produced (rank 0; other ranks get ``metrics = {}``)."""

    out: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    best_epoch: int = 0
    best_val: dict[str, Any] = field(default_factory=dict)


def default_out(config: TrainConfig, root: str | Path = "runs") -> Path:
    """``runs/<YYYYmmdd-HHMMSS>-<loss>``."""
    return Path(root) / f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{config.loss}"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def amp_dtype_for(mode: str, device: torch.device) -> torch.dtype | None:
    """``auto``: bf16 on CUDA GPUs that support it, else fp16 on CUDA, nothing on the CPU."""
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return None
    if mode == "bf16":
        return torch.bfloat16
    if mode == "fp16":
        return torch.float16
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _epoch_loader(dataset: TrainCrops, config: TrainConfig, epoch: int, ctx: distributed.DistContext,
                  device: torch.device) -> DataLoader:
    """Loader of one epoch; its order depends only on (seed, epoch) so resumed runs repeat it."""
    dataset.set_epoch(epoch)
    if ctx.enabled:
        sampler: Any = DistributedSampler(dataset, ctx.world_size, ctx.rank, shuffle=True, seed=config.seed)
        sampler.set_epoch(epoch)
    else:
        generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
        sampler = RandomSampler(dataset, generator=generator)
    return DataLoader(
        dataset,
        batch_size=config.batch,
        sampler=sampler,
        num_workers=config.workers,
        pin_memory=device.type == "cuda",
        worker_init_fn=seed_worker,
        drop_last=False,
    )


def train_one_epoch(model, loader, loss_fn, optimizer, scaler, device, amp_dtype, *, epoch: int,
                    max_steps: int = 0, progress: bool = False) -> tuple[float, int]:
    """Adam steps over one epoch; returns (mean loss, steps). Raises TrainingError on a non-finite loss."""
    model.train()
    total = len(loader) if not max_steps else min(max_steps, len(loader))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc=f"epoch {epoch}", unit="step", leave=False)
    loss_sum, steps = 0.0, 0
    for image, mask, valid in loader:
        if max_steps and steps >= max_steps:
            break
        image = image.to(device, non_blocking=True)
        mask = mask.to(device, non_blocking=True)
        valid = valid.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            logits = model(image)
        loss = loss_fn(logits, mask, valid)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise TrainingError(
                f"training loss is {value} at epoch {epoch} step {steps + 1}; lower --lr or use --amp off"
            )
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        loss_sum += value
        steps += 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{value:.4f}", mean=f"{loss_sum / steps:.4f}")
    if bar is not None:
        bar.close()
    return (loss_sum / steps if steps else float("nan")), steps


def _score(summary: dict[str, Any], select: str) -> float:
    return float(summary[select])


def _data_record(config: TrainConfig, splits: Splits, split: str) -> dict[str, Any]:
    return {"name": Path(config.data).name, "path": str(Path(config.data).resolve()), "split": split,
            "split_source": splits.source, "scale": config.scale}


def train_run(config: TrainConfig, out: str | Path | None = None, resume: str | Path | None = None) -> RunResult:
    """Train, validate every ``eval_every`` epochs, checkpoint, and evaluate best.pt on the test split.

    ``resume``: a ``last.pt`` (or the run folder holding one); the run continues in that folder from the
    epoch after the checkpoint's, on the splits written there, and reaches the same weights as an
    uninterrupted run (the data order and augmentation of an epoch depend only on seed and epoch).
    """
    ctx = distributed.setup(config.device)  # idempotent: the process group outlives one run (grid, repeats)
    return _train_run(config, out, resume, ctx)


def _train_run(config: TrainConfig, out, resume, ctx: distributed.DistContext) -> RunResult:
    started = time.perf_counter()
    device = distributed.resolve_device(config.device, ctx)
    resume_payload = None
    if resume is not None:
        resume = Path(resume)
        if resume.is_dir():
            resume = resume / "last.pt"
        resume_payload = read_checkpoint(resume)
        if "optimizer" not in resume_payload:
            raise CheckpointError(f"{resume} is not resumable (no optimizer state); resume from a last.pt")
        out = Path(out) if out else resume.parent
    out = Path(ctx.broadcast(str(out if out else default_out(config))))
    progress = config.progress and ctx.is_main
    seed_everything(config.seed)

    samples = list_samples(config.data)
    if resume_payload is not None and (out / "splits").is_dir():
        splits = read_run_splits(out, samples)
    else:
        splits = resolve_splits(config.data, samples, seed=config.seed, val_fraction=config.val_fraction,
                                test_fraction=config.test_fraction)
    if not splits.test:
        raise DatasetError(f"data set {config.data} has no test images: add splits/test.txt or set --test-fraction > 0")
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_splits(splits, out)
        write_json(out / "config.json", {**config.to_dict(), "out": str(out), "device_used": str(device),
                                         "world_size": ctx.world_size, "split_source": splits.source,
                                         "n_train": len(splits.train), "n_val": len(splits.val),
                                         "n_test": len(splits.test)})
    load = dict(scale=config.scale, binarize_masks=config.binarize_masks, progress=progress)
    train_data = load_images(samples, splits.train, desc="loading train", **load)
    val_data = load_images(samples, splits.val, desc="loading val", **load) if ctx.is_main else None

    model = build_model(config.width, config.head).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    amp_dtype = amp_dtype_for(config.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    loss_fn = build_loss(config.loss, **config.loss_kwargs())
    start_epoch, best = 0, {"epoch": 0, "score": -math.inf, "metrics": {}}
    if resume_payload is not None:
        model.load_state_dict(resume_payload["state_dict"])
        optimizer.load_state_dict(resume_payload["optimizer"])
        if resume_payload.get("scaler"):
            scaler.load_state_dict(resume_payload["scaler"])
        set_rng_state(resume_payload["rng"])
        start_epoch = int(resume_payload["epoch"])
        best = resume_payload.get("best", best)
        if ctx.is_main:
            truncate_history(out / "history.csv", start_epoch)
    elif ctx.is_main and (out / "history.csv").exists():
        (out / "history.csv").unlink()  # a fresh run in an old folder starts a fresh history
    if ctx.enabled:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    dataset = TrainCrops(train_data, config.size, config.augment_config(), seed=config.seed)
    record = _data_record(config, splits, "train")
    saved = dict(size=config.size, train_config=config.to_dict(), data=record)

    try:
        for epoch in range(start_epoch + 1, config.epochs + 1):
            t0 = time.perf_counter()
            loader = _epoch_loader(dataset, config, epoch, ctx, device)
            mean_loss, steps = train_one_epoch(model, loader, loss_fn, optimizer, scaler, device, amp_dtype,
                                               epoch=epoch, max_steps=config.max_steps_per_epoch, progress=progress)
            mean_loss = ctx.mean(mean_loss)
            if ctx.is_main:
                val = None
                if val_data and (epoch % config.eval_every == 0 or epoch == config.epochs):
                    val = sweep_images(torch_predictor(unwrap(model), device, amp_dtype), val_data,
                                       tolerance_px=config.tolerance_px, progress=progress,
                                       desc="validating").summary()
                seconds = time.perf_counter() - t0
                append_history(out / "history.csv", history_row(epoch, mean_loss, steps, config.lr, seconds, val))
                improved = (val is not None and _score(val, config.select) > best["score"]) or (
                    not val_data and epoch == config.epochs
                )
                if improved:
                    threshold = float(val["ods_threshold"]) if val is not None else 0.5
                    best = {"epoch": epoch, "score": _score(val, config.select) if val else math.nan,
                            "metrics": dict(val or {})}
                    save_checkpoint(out / "best.pt", model, threshold=threshold, epoch=epoch, metrics=val, **saved)
                save_checkpoint(out / "last.pt", model, threshold=0.5, epoch=epoch, metrics=val, **saved,
                                extra={"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                                       "rng": rng_state(), "best": best})
                if progress:
                    shown = f" val {config.select} {val[config.select]:.4f}" if val else ""
                    print(f"epoch {epoch}/{config.epochs}: loss {mean_loss:.4f}{shown} ({seconds:.1f} s)", flush=True)
            ctx.barrier()
    except KeyboardInterrupt:
        if ctx.is_main:
            print(f"\ninterrupted: {out / 'last.pt'} holds the last finished epoch; "
                  f"continue with --resume {out / 'last.pt'}", flush=True)
        raise

    result = RunResult(out=out)
    if ctx.is_main:
        test_data = load_images(samples, splits.test, desc="loading test", **load)
        result.metrics = evaluate_best(out, test_data, config, device, amp_dtype, splits, started)
        result.best_epoch = int(result.metrics["best_epoch"])
        result.best_val = dict(best.get("metrics") or {})
    ctx.barrier()
    return result


def evaluate_best(out: Path, test_data: CrackImages, config: TrainConfig, device: torch.device,
                  amp_dtype: torch.dtype | None, splits: Splits, started: float) -> dict[str, Any]:
    """Score ``out/best.pt`` on the test images; write metrics.json, pr_curve.*, overlays/."""
    if not (out / "best.pt").exists():
        raise TrainingError(f"{out / 'best.pt'} was never written: no epoch had validation metrics")
    model, payload = load_model(out / "best.pt", device)
    threshold = float(payload["threshold"])
    wanted = set(range(min(config.overlays, len(test_data))))

    def keep_overlay(index: int, prob: np.ndarray) -> None:
        if index in wanted:
            write_overlay(out / "overlays", test_data.stems[index], test_data.images[index], prob,
                          test_data.masks[index], threshold)

    sweep = sweep_images(torch_predictor(model, device, amp_dtype), test_data, tolerance_px=config.tolerance_px,
                         progress=config.progress, desc="testing", on_prediction=keep_overlay)
    metrics = build_metrics(sweep, threshold, extra={
        "best_epoch": int(payload["epoch"]),
        "threshold_source": "ODS threshold of best.pt on the validation split" if splits.val else "default 0.5 (no validation split)",
        "val": payload.get("metrics", {}),
        "data": Path(config.data).name, "data_path": str(Path(config.data).resolve()), "split": "test",
        "split_source": splits.source, "scale": config.scale,
        "loss": config.loss, "gamma1": config.gamma1, "gamma2": config.gamma2, "head": config.head,
        "width": config.width, "size": config.size, "epochs": config.epochs, "seed": config.seed,
        "checkpoint": str(out / "best.pt"), "device": str(device),
        "seconds": round(time.perf_counter() - started, 2),
    })
    write_json(out / "metrics.json", metrics)
    write_pr_curve(sweep, out, label=f"{config.loss} ({config.head}, w{config.width})",
                   title=f"{Path(config.data).name} test: {config.loss}")
    return metrics


def build_metrics(sweep, threshold: float, extra: dict[str, Any]) -> dict[str, Any]:
    """The metrics.json dict: summary at 0.5 and the sweep, plus the values at the chosen threshold."""
    summary = sweep.summary()
    return {**summary, "threshold": threshold, "at_threshold": metrics_at_threshold(sweep, threshold), **extra}


def read_run_metrics(out: str | Path) -> dict[str, Any]:
    import json

    path = Path(out) / "metrics.json"
    if not path.is_file():
        raise TrainingError(f"{path} is missing: the run did not finish")
    return json.loads(path.read_text(encoding="utf-8"))


__all__ = ["RunResult", "TrainingError", "train_run", "default_out", "read_history", "read_run_metrics"]
