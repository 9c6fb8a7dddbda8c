"""One training run: data, model, Adam, per-epoch validation and checkpoints, then the test evaluation.

:func:`train_run` is what ``python -m train.run`` calls (also under ``torchrun``). A run folder gets::

    config.json      every option (TrainConfig), the data sets, device, world size, commit
    splits/          the stems of train / val / test actually used (per source: train.sources)
    history.csv      one row per epoch: train loss, steps, lr, seconds, validation metrics
    negatives.csv    with --negatives: per validated epoch, the held-out crack-free photos marked (train.negatives)
    last.pt          resumable: weights, optimizer, GradScaler, RNG states, epoch (and step within it), best-so-far
    best.pt          weights of the best validation epoch; its threshold = that epoch's ODS threshold
    metrics.json     best.pt on the test split (P, R, F-beta@0.5, F1, IoU, ODS, OIS, AP, at the threshold),
                     with a per-source table under ``sources`` when several data sets were given
    pr_curve.png/csv test precision-recall curve
    overlays/*.png   a few test images: TP green, FP red, FN blue at the chosen threshold

Best-epoch selection: the validation ``--select`` metric, ODS F-beta by default (the best F over one
data-set-wide threshold), because the deployed threshold is chosen the same way; ``f_beta`` selects
by F-beta at 0.5 instead. Ties keep the earlier epoch. With several data sets, validation pools
their validation splits with every source counting equally (:func:`contract.metrics.pooled_summary`:
the mean over sources of F at one shared threshold), so the biggest set does not choose alone.

``--time-budget-min``: the run stops after the step that passes the budget, writes ``last.pt`` with
the step reached inside the epoch, and ``--resume`` continues from exactly that step (the crops of an
epoch depend only on seed, epoch and position: :class:`train.data.TrainCrops`).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader

from contract.image_tiles import seeded_subset
from contract.metadata import DEFAULT_THRESHOLD
from contract.metrics import (
    ThresholdSweep,
    mean_metrics_at_threshold,
    merge_sweeps,
    metrics_at_threshold,
    pooled_summary,
)
from contract.widths import WidthSweep
from train import distributed
from train.checkpoint import (
    CheckpointError,
    initial_weights,
    load_model,
    metadata_from_checkpoint,
    read_checkpoint,
    save_checkpoint,
    unwrap,
)
from train.config import ConfigError, TrainConfig, parse_source_weights
from train.data import CrackImages, CropRecipe, DatasetError, TrainCrops, load_images, seed_worker
from train.health import DeadNetworkWatch, StepHealth, validation_verdict
from train.inference import sweep_images, torch_predictor, torch_predictor_with_single_pass
from train.losses import LOSSES, CenterlineLoss, ThinWeightedLoss, WarmupLoss, build_loss
from train.model import build_model
from train.negatives import (
    NEGATIVES_CSV,
    NEGATIVES_FIELDS,
    NegativePhotos,
    NegativeSource,
    negative_photos,
    negatives_row,
    open_negatives,
    score_negatives,
    write_negative_splits,
)
from train.report import (
    append_history,
    history_row,
    read_history,
    truncate_history,
    write_json,
    write_overlay,
    write_pr_curve,
)
from train.sources import Source, open_sources, source_shares, write_source_splits


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, nothing to resume, ...); the message says why."""


@dataclass
class RunResult:
    """What a finished run produced (rank 0; other ranks get ``metrics = {}``)."""

    out: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    best_epoch: int = 0
    best_val: dict[str, Any] = field(default_factory=dict)
    stopped: bool = False  # ended by --time-budget-min before the last epoch; resume from out/last.pt


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


class EpochSampler(torch.utils.data.Sampler):
    """Positions ``0 .. n-1`` of an epoch's draws, in order, strided over DDP ranks, from step ``start_step``.

    The shuffling lives in :meth:`train.data.TrainCrops.set_epoch`, so the order is a pure function
    of (seed, epoch); every rank gets ``ceil(n / world)`` positions (the last ones wrap around, as
    ``DistributedSampler`` pads) so all ranks take the same number of steps.
    """

    def __init__(self, n: int, batch: int, rank: int = 0, world: int = 1, start_step: int = 0) -> None:
        per_rank = -(-n // world)
        positions = [(rank + world * i) % n for i in range(per_rank)]
        self.positions = positions[start_step * batch:]

    def __iter__(self):
        return iter(self.positions)

    def __len__(self) -> int:
        return len(self.positions)


def _epoch_loader(dataset: TrainCrops, config: TrainConfig, epoch: int, ctx: distributed.DistContext,
                  device: torch.device, start_step: int = 0) -> DataLoader:
    """Loader of one epoch from ``start_step``; its order depends only on (seed, epoch) so resumed runs repeat it."""
    dataset.set_epoch(epoch)
    sampler = EpochSampler(len(dataset), config.batch, ctx.rank, ctx.world_size, start_step)
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
                    max_steps: int = 0, progress: bool = False,
                    should_stop: Callable[[], bool] | None = None,
                    lr_at: Callable[[int], float] | None = None,
                    watch: DeadNetworkWatch | None = None, clip_grad_norm: float = 0.0) -> tuple[float, int]:
    """Adam steps over one epoch; returns (mean loss, steps). Raises TrainingError on a non-finite loss.

    ``should_stop()`` is asked after every step; True ends the epoch there (the wall-clock budget).
    ``lr_at(i)`` is the learning rate of this call's i-th step (the schedule), set before the step.
    ``clip_grad_norm`` > 0 clips the gradient's global L2 norm before the step (after unscaling).
    ``watch`` sees every step's :class:`train.health.StepHealth` and raises
    :class:`train.health.DeadNetworkError` when the network has died.
    """
    model.train()
    first_layer = next(unwrap(model).parameters())  # the first convolution's weight: bottom of the network
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
        if lr_at is not None:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(steps)
        scaler.scale(loss).backward()
        if watch is not None:
            watch.observe(step_health(first_layer, logits), epoch=epoch, step=steps + 1,
                          lr=optimizer.param_groups[0]["lr"])
        if clip_grad_norm:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        loss_sum += value
        steps += 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{value:.4f}", mean=f"{loss_sum / steps:.4f}")
        if should_stop is not None and should_stop():
            break
    if bar is not None:
        bar.close()
    return (loss_sum / steps if steps else float("nan")), steps


def step_health(first_layer: torch.Tensor, logits: torch.Tensor) -> StepHealth:
    """The step's :class:`train.health.StepHealth` (read after ``backward``, before the optimizer step)."""
    grad = first_layer.grad
    detached = logits.detach().float()
    return StepHealth(first_layer_grad_norm=0.0 if grad is None else float(grad.float().norm()),
                      logit_spread=float(detached.std()) if detached.numel() > 1 else 1.0,
                      mean_probability=float(torch.sigmoid(detached).mean()))


def _score(summary: dict[str, Any], select: str) -> float:
    return float(summary[select])


def _data_record(config: TrainConfig, sources: list[Source], split: str) -> dict[str, Any]:
    return {"name": config.data_name, "path": ",".join(str(s.root.resolve()) for s in sources), "split": split,
            "split_source": _split_source(sources), "scale": config.scale, "sources": [s.name for s in sources]}


def _split_source(sources: list[Source]) -> str:
    if len(sources) == 1:
        return sources[0].splits.source
    return "; ".join(f"{s.name}: {s.splits.source}" for s in sources)


def train_run(config: TrainConfig, out: str | Path | None = None, resume: str | Path | None = None) -> RunResult:
    """Train, validate every ``eval_every`` epochs, checkpoint, and evaluate best.pt on the test split.

    ``resume``: a ``last.pt`` (or the run folder holding one); the run continues in that folder from the
    step after the checkpoint's, on the splits written there, and reaches the same weights as an
    uninterrupted run (the data order and augmentation of an epoch depend only on seed and epoch).
    """
    ctx = distributed.setup(config.device)  # idempotent: the process group outlives one run (grid, repeats)
    return _train_run(config, out, resume, ctx)


@dataclass
class _Progress:
    """Where training stands: the last whole epoch, steps and loss of the epoch under way, the best epoch."""

    epoch: int = 0
    step: int = 0  # steps of epoch + 1 already taken (a budget stop inside an epoch)
    loss_sum: float = 0.0  # their summed loss
    seconds: float = 0.0  # their wall time
    best: dict[str, Any] = field(default_factory=lambda: {"epoch": 0, "score": -math.inf, "metrics": {}})

    def to_dict(self) -> dict[str, Any]:
        return {"step_in_epoch": self.step, "epoch_loss_sum": self.loss_sum, "epoch_seconds": self.seconds,
                "best": self.best}


def _steps_per_epoch(n_draws: int, config: TrainConfig, world_size: int) -> int:
    """Optimizer steps of one epoch on each rank (``--max-steps-per-epoch`` caps it)."""
    per_rank = math.ceil(n_draws / world_size)
    steps = math.ceil(per_rank / config.batch)
    return min(steps, config.max_steps_per_epoch) if config.max_steps_per_epoch else steps


def bce_warmup_steps(config: TrainConfig, steps_per_epoch: int) -> int:
    """Steps of BCE before ``--loss`` (``--bce-warmup-steps``; -1 = the automatic rule in its help)."""
    if config.bce_warmup_steps >= 0:
        return config.bce_warmup_steps
    risky = LOSSES[config.loss].saturates and config.lr > 1e-4 and not config.init
    return steps_per_epoch if risky else 0


def _loss(config: TrainConfig, steps_per_epoch: int, start_step: int, progress: bool):
    """The training loss, behind a BCE warm-up when one applies (says so once), with thin cracks weighted
    when ``--thin-weight`` asks for it, plus the centre-line term of ``--cldice-weight``."""
    loss = build_loss(config.loss, **config.loss_kwargs())
    warmup = bce_warmup_steps(config, steps_per_epoch)
    if warmup:
        if progress and start_step < warmup:
            print(f"loss: BCE for the first {warmup} steps, then {config.loss} (--bce-warmup-steps; {config.loss} on "
                  "probabilities can saturate to 'no crack' from a random start)", flush=True)
        loss = WarmupLoss(loss, warmup, start_step)
    if config.thin_weight != 1.0:
        loss = ThinWeightedLoss(loss, config.thin_weight)
    return CenterlineLoss(loss, config.cldice_weight) if config.cldice_weight else loss


def _open_resume(resume, out) -> tuple[dict[str, Any] | None, Path | None]:
    """The resume checkpoint (or None) and the run folder it implies."""
    if resume is None:
        return None, Path(out) if out else None
    resume = Path(resume)
    if resume.is_dir():
        resume = resume / "last.pt"
    payload = read_checkpoint(resume)
    if "optimizer" not in payload:
        raise CheckpointError(f"{resume} is not resumable (no optimizer state); resume from a last.pt")
    return payload, Path(out) if out else resume.parent


def _open_data(config: TrainConfig, out: Path, resumed: bool, ctx: distributed.DistContext, device: torch.device,
               progress: bool) -> tuple[list[Source], list[CrackImages], dict[str, CrackImages]]:
    """Sources with their splits (recorded in the run folder), training images, validation images (rank 0)."""
    sources = open_sources(config.data, seed=config.seed, val_fraction=config.val_fraction,
                           test_fraction=config.test_fraction, run_folder=out if resumed else None)
    for source in sources:
        if not source.splits.test:
            raise DatasetError(f"data set {source.root} has no test images: add splits/test.txt or set --test-fraction > 0")
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_source_splits(sources, out)
        write_json(out / "config.json", {
            **config.to_dict(), "out": str(out), "device_used": str(device), "world_size": ctx.world_size,
            "split_source": _split_source(sources),
            "n_train": sum(len(s.splits.train) for s in sources), "n_val": sum(len(s.splits.val) for s in sources),
            "n_test": sum(len(s.splits.test) for s in sources),
            "sources": {s.name: {"path": str(s.root.resolve()), "n_train": len(s.splits.train),
                                 "n_val": len(s.splits.val), "n_test": len(s.splits.test)} for s in sources}})
    load = dict(scale=config.scale, binarize_masks=config.binarize_masks, progress=progress)
    train_sets = [load_images(s.samples, s.splits.train, desc=f"loading {s.name} train", **load) for s in sources]
    val_sets: dict[str, CrackImages] = {}
    if ctx.is_main:
        for s in sources:
            stems = seeded_subset(s.splits.val, config.val_max_images, config.seed)
            if stems:
                val_sets[s.name] = load_images(s.samples, stems, desc=f"loading {s.name} val", **load)
    return sources, train_sets, val_sets


@dataclass
class _Negatives:
    """The --negatives photos (read when used): training photos of every folder, held-out ones by folder (rank 0)."""

    train: list[NegativePhotos]
    val: dict[str, NegativePhotos]


def _open_negatives(config: TrainConfig, out: Path, resumed: bool, ctx: distributed.DistContext) -> _Negatives | None:
    """The --negatives folders split (recorded in the run folder) and read; None without --negatives."""
    if not config.negatives:
        return None
    folders = open_negatives(config.negatives, seed=config.seed, val_fraction=config.val_fraction,
                             run_folder=out if resumed else None)
    if ctx.is_main:
        write_negative_splits(folders, out)
        print("negatives: " + ", ".join(f"{f.name} {len(f.splits.train)} training / {len(f.splits.val)} held-out photos"
                                        for f in folders), flush=True)
    train = [negative_photos(f, f.splits.train, scale=config.scale) for f in folders]
    val = {f.name: negative_photos(f, f.splits.val, scale=config.scale) for f in folders
           if ctx.is_main and f.splits.val}
    return _Negatives(train, val)


def _training_crops(config: TrainConfig, sources: list[Source], train_sets: list[CrackImages],
                    hard_negatives=None, negatives: _Negatives | None = None) -> TrainCrops:
    """The epoch's crops: every source by its share, plus generated crops (``--synth-fraction``), crops
    around the starting model's false positives (``--hard-negative-fraction``, ``hard_negatives``) and crops
    of crack-free photos (``--negatives-fraction``, ``negatives``)."""
    shares = source_shares(parse_source_weights(config.source_weights), {s.name: len(d) for s, d in
                                                                         zip(sources, train_sets, strict=True)})
    photometric = None
    if config.photometric:
        from train.photometric import PhotometricConfig

        try:
            photometric = PhotometricConfig.from_groups(config.photometric)
        except ValueError as exc:
            raise ConfigError(f"--photometric: {exc}") from None
    recipe = CropRecipe(config.size, config.augment_config(), (config.scale_aug_min, config.scale_aug_max),
                        config.small_images, photometric)
    extras = []
    if config.synth_fraction > 0:
        from train.synth import SynthConfig, SynthSource

        synth = SynthConfig(p_structures=config.synth_structures, wide_prob=config.synth_wide,
                            structure_families=config.structure_families())
        extras.append((SynthSource.from_training_images(train_sets, seed=config.seed, config=synth,
                                                        joint_weight=config.joint_weight), config.synth_fraction))
    if config.hard_negative_fraction > 0:
        extras.append((hard_negatives, config.hard_negative_fraction))
    if negatives is not None:
        extras.append((NegativeSource(negatives.train, recipe), config.negatives_fraction))
    return TrainCrops(train_sets, recipe, seed=config.seed, shares=[shares[s.name] for s in sources],
                      n_draws=config.epoch_samples, extras=extras)


def _hard_negatives(config: TrainConfig, model: torch.nn.Module, device: torch.device, sources: list[Source],
                    train_sets: list[CrackImages], out: Path, ctx, progress: bool):
    """The false-positive sites of the starting model on the training images (``--hard-negative-fraction``):
    mined once by rank 0 into ``out/hard_negatives.json`` and read from there by every rank and every resume."""
    from train.hard_negatives import HardNegativeSource, mine, read_sites, write_sites

    path = out / "hard_negatives.json"
    named = [(s.name, d) for s, d in zip(sources, train_sets, strict=True)]
    if ctx.is_main and not path.exists():
        t0 = time.perf_counter()
        was_training = model.training
        model.eval()
        predict = torch_predictor(model, device)
        sites = mine(predict, named, config.hard_negative_threshold,
                     straight_only=config.hard_negative_shape == "straight", progress=(lambda line: print(line, flush=True)) if progress else None)
        model.train(was_training)
        write_sites(path, sites, {"model": config.init, "threshold": config.hard_negative_threshold,
                                  "shape": config.hard_negative_shape,
                                  "images": sum(len(d) for d in train_sets)})
        print(f"hard negatives: {len(sites)} false-positive sites from {sum(len(d) for d in train_sets)} training "
              f"images in {time.perf_counter() - t0:.0f} s -> {path}", flush=True)
    ctx.barrier()
    sites, _ = read_sites(path)
    return HardNegativeSource(named, sites)


def _restore(payload: dict[str, Any] | None, model, optimizer, scaler) -> _Progress:
    """Load a resume checkpoint into the model/optimizer/scaler/RNGs; where training stands."""
    if payload is None:
        return _Progress()
    model.load_state_dict(payload["state_dict"])
    optimizer.load_state_dict(payload["optimizer"])
    if payload.get("scaler"):
        scaler.load_state_dict(payload["scaler"])
    set_rng_state(payload["rng"])
    state = _Progress(epoch=int(payload["epoch"]), step=int(payload.get("step_in_epoch", 0)),
                      loss_sum=float(payload.get("epoch_loss_sum", 0.0)),
                      seconds=float(payload.get("epoch_seconds", 0.0)))
    state.best = payload.get("best", state.best)
    return state


def validate(model, device, amp_dtype, val_sets: dict[str, CrackImages], config: TrainConfig,
             progress: bool, negatives: dict[str, NegativePhotos] | None = None) -> dict[str, Any]:
    """Validation metrics pooled over the sources (each counts equally), with ``sources`` per source, on
    predictions averaged over ``--eval-flips`` mirrorings (``flips``); with more than one pass, ``one_pass``
    holds the single-pass ODS and threshold as well (the threshold ``model.flips = 1`` uses), scored on the
    unmirrored pass the average already ran (N passes per tile in all, not N + 1)."""
    flips = config.eval_flips
    net = unwrap(model)
    single: dict[str, np.ndarray] = {}
    if flips > 1:
        paired = torch_predictor_with_single_pass(net, device, amp_dtype, tile=config.eval_tile, flips=flips)

        def predict(image: np.ndarray) -> np.ndarray:
            averaged, single["prob"] = paired(image)
            return averaged
    else:
        predict = torch_predictor(net, device, amp_dtype, tile=config.eval_tile)
    seen = {"min": math.inf, "max": -math.inf}
    widths = WidthSweep()  # crack pixels of every source pooled
    one_pass = {name: ThresholdSweep(tolerance_px=config.tolerance_px) for name in val_sets}

    def note(name: str, data: CrackImages) -> Callable[[int, np.ndarray], None]:
        def on_prediction(index: int, prob: np.ndarray) -> None:
            seen["min"], seen["max"] = min(seen["min"], float(prob.min())), max(seen["max"], float(prob.max()))
            widths.update(prob, data.masks[index])
            if flips > 1:
                one_pass[name].update(single.pop("prob"), data.masks[index].astype(bool))
        return on_prediction

    passes = f" ({flips} passes)" if flips > 1 else ""
    sweeps = {name: sweep_images(predict, data, tolerance_px=config.tolerance_px, progress=progress,
                                 desc=f"validating {name}{passes}", on_prediction=note(name, data))
              for name, data in val_sets.items()}
    crack_share = float(np.mean([np.mean([m.mean() for m in data.masks]) for data in val_sets.values()]))
    summary = pooled_summary(sweeps)
    at = widths.recall_at(summary["ods_threshold"])
    by_width = {label: (None if math.isnan(r) else float(r)) for label, r in zip(at.labels, at.recall, strict=True)}
    val = {**summary, "prob_min": seen["min"], "prob_max": seen["max"], "crack_share": crack_share,
           "recall_by_width": by_width, "flips": flips}
    if flips > 1:
        one = pooled_summary(one_pass)
        val["one_pass"] = {k: one[k] for k in ("ods_f", "ods_threshold", "ap")}
    if negatives:
        def predict_negative(image: np.ndarray) -> np.ndarray:
            prob = predict(image)
            single.pop("prob", None)  # the unmirrored pass serves the crack sets' single-pass threshold only
            return prob

        val["negatives"] = score_negatives(predict_negative, negatives, float(summary["ods_threshold"]),
                                           config.negatives_min_area_px)
    return val


def best_thresholds(val: dict[str, Any] | None) -> tuple[float, dict[str, Any]]:
    """best.pt's single-pass ``threshold`` and what else it records: ``flip_thresholds`` {passes: threshold}
    where validation averaged several passes (``--eval-flips``)."""
    if val is None:
        return DEFAULT_THRESHOLD, {}
    if int(val.get("flips", 1)) > 1:
        recorded = {"flip_thresholds": {int(val["flips"]): float(val["ods_threshold"])}}
        return float(val["one_pass"]["ods_threshold"]), recorded
    return float(val["ods_threshold"]), {}


def _save_last(out: Path, model, optimizer, scaler, epoch: int, val, state: _Progress, saved: dict[str, Any]) -> None:
    save_checkpoint(out / "last.pt", model, threshold=DEFAULT_THRESHOLD, epoch=epoch, metrics=val, **saved,
                    extra={"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                           "rng": rng_state(), **state.to_dict()})


def _stop_rule(config: TrainConfig, started: float, ctx: distributed.DistContext) -> Callable[[], bool] | None:
    """The wall-clock budget as a per-step question (rank 0 decides, every rank follows: same step counts)."""
    if not config.time_budget_min:
        return None
    deadline = started + 60.0 * config.time_budget_min

    def should_stop() -> bool:
        return bool(ctx.broadcast(time.perf_counter() >= deadline) if ctx.enabled else time.perf_counter() >= deadline)

    return should_stop


def _train_run(config: TrainConfig, out, resume, ctx: distributed.DistContext) -> RunResult:
    started = time.perf_counter()
    # one OpenCV thread, set before any DataLoader worker is forked: OpenCV's pool fights the trainer for
    # the cores, and changing the pool inside a forked worker can wait forever on the parent's lock
    cv2.setNumThreads(1)
    device = distributed.resolve_device(config.device, ctx)
    resume_payload, out = _open_resume(resume, out)
    out = Path(ctx.broadcast(str(out if out else default_out(config))))
    progress = config.progress and ctx.is_main
    seed_everything(config.seed)
    sources, train_sets, val_sets = _open_data(config, out, resume_payload is not None, ctx, device, progress)
    negatives = _open_negatives(config, out, resume_payload is not None, ctx)

    model, optimizer, scaler, amp_dtype, init_note = _build_training(config, device, resume_payload is None)
    state = _restore(resume_payload, model, optimizer, scaler)
    if ctx.is_main:
        if init_note:
            print(init_note, flush=True)
        if resume_payload is not None:
            truncate_history(out / "history.csv", state.epoch)
            truncate_history(out / NEGATIVES_CSV, state.epoch, NEGATIVES_FIELDS)
        else:
            for name in ("history.csv", NEGATIVES_CSV):  # a fresh run in an old folder starts a fresh history
                (out / name).unlink(missing_ok=True)
    mined = (_hard_negatives(config, model, device, sources, train_sets, out, ctx, progress)
             if config.hard_negative_fraction > 0 else None)
    if ctx.enabled:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    dataset = _training_crops(config, sources, train_sets, mined, negatives)
    steps_per_epoch = _steps_per_epoch(len(dataset), config, ctx.world_size)
    loss_fn = _loss(config, steps_per_epoch, state.epoch * steps_per_epoch + state.step, progress)
    saved = dict(size=config.size, train_config=config.to_dict(), data=_data_record(config, sources, "train"))
    should_stop = _stop_rule(config, started, ctx)
    watch = DeadNetworkWatch()
    run = _Run(config=config, model=model, optimizer=optimizer, scaler=scaler, device=device, amp_dtype=amp_dtype,
               val_sets=val_sets, saved=saved, out=out, ctx=ctx, progress=progress,
               negatives=negatives.val if negatives is not None else {})

    try:
        for epoch in range(state.epoch + 1, config.epochs + 1):
            t0 = time.perf_counter()
            epoch_steps = steps_per_epoch
            loader = _epoch_loader(dataset, config, epoch, ctx, device, start_step=state.step)
            first = (epoch - 1) * steps_per_epoch + state.step  # the run's step index of this call's first step
            mean_loss, steps = train_one_epoch(
                model, loader, loss_fn, optimizer, scaler, device, amp_dtype, epoch=epoch,
                max_steps=epoch_steps - state.step, progress=progress, should_stop=should_stop,
                lr_at=lambda i, first=first: config.learning_rate(first + i, config.epochs * steps_per_epoch),
                watch=watch, clip_grad_norm=config.clip_grad_norm)
            state.loss_sum += mean_loss * steps if steps else 0.0
            state.step += steps
            state.seconds += time.perf_counter() - t0
            if state.step < epoch_steps:  # the budget ran out inside the epoch
                return _stop_inside_epoch(out, model, optimizer, scaler, epoch, epoch_steps, state, saved, config, ctx)
            _finish_epoch(run, epoch, state)
            state = _Progress(epoch=epoch, best=state.best)
            if should_stop is not None and epoch < config.epochs and should_stop():
                if ctx.is_main:
                    print(f"time budget of {config.time_budget_min:g} min reached after epoch {epoch}; "
                          f"continue with --resume {out / 'last.pt'}", flush=True)
                ctx.barrier()
                return RunResult(out=out, stopped=True)
    except KeyboardInterrupt:
        if ctx.is_main:
            print(f"\ninterrupted: {out / 'last.pt'} holds the last finished epoch; "
                  f"continue with --resume {out / 'last.pt'}", flush=True)
        raise

    result = RunResult(out=out)
    if ctx.is_main:
        result.metrics = evaluate_best(out, sources, config, device, amp_dtype, started)
        result.best_epoch = int(result.metrics["best_epoch"])
        result.best_val = dict(state.best.get("metrics") or {})
    ctx.barrier()
    return result


def _build_training(config: TrainConfig, device: torch.device, fresh: bool):
    """Model (``--init`` weights on a fresh run), Adam, GradScaler, the autocast dtype, and the line that says
    how ``--init`` was widened to ``--width`` (None if it was not)."""
    model = build_model(config.width, config.head, init=config.model_init).to(device)
    init_note = None
    if config.init and fresh:
        init_note = initial_weights(config.init, model, seed=config.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    amp_dtype = amp_dtype_for(config.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    return model, optimizer, scaler, amp_dtype, init_note


def _stop_inside_epoch(out: Path, model, optimizer, scaler, epoch: int, epoch_steps: int, state: _Progress,
                       saved, config: TrainConfig, ctx) -> RunResult:
    """The budget ran out inside an epoch: last.pt records the step reached; say how to go on."""
    if ctx.is_main:
        _save_last(out, model, optimizer, scaler, epoch - 1, None, state, saved)
        print(f"time budget of {config.time_budget_min:g} min reached at epoch {epoch} step {state.step}"
              f"/{epoch_steps}: continue with --resume {out / 'last.pt'}", flush=True)
    ctx.barrier()
    return RunResult(out=out, stopped=True)


@dataclass
class _Run:
    """What the end of every epoch needs of a run: the network and its optimizer state, how and on
    what it validates, what it writes where."""

    config: TrainConfig
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    device: torch.device
    amp_dtype: torch.dtype | None
    val_sets: dict[str, CrackImages]
    saved: dict[str, Any]  # what every checkpoint records besides the weights
    out: Path
    ctx: distributed.DistContext
    progress: bool
    negatives: dict[str, NegativePhotos] = field(default_factory=dict)  # held-out --negatives photos by folder


def _finish_epoch(run: _Run, epoch: int, state: _Progress) -> None:
    """Validate (when due), append history, write best.pt when validation improved, and last.pt."""
    mean_loss = run.ctx.mean(state.loss_sum / state.step if state.step else float("nan"))
    if run.ctx.is_main:
        val = None
        if run.val_sets and (epoch % run.config.eval_every == 0 or epoch == run.config.epochs):
            val = validate(run.model, run.device, run.amp_dtype, run.val_sets, run.config, run.progress,
                           run.negatives)
        lr = run.optimizer.param_groups[0]["lr"]  # the learning rate of the epoch's last step
        append_history(run.out / "history.csv", history_row(epoch, mean_loss, state.step, lr, state.seconds, val))
        if val is not None and "negatives" in val:
            append_history(run.out / NEGATIVES_CSV, negatives_row(epoch, val["negatives"]), NEGATIVES_FIELDS)
        improved = (val is not None and _score(val, run.config.select) > state.best["score"]) or (
            not run.val_sets and epoch == run.config.epochs
        )
        if improved:
            threshold, recorded = best_thresholds(val)
            state.best = {"epoch": epoch, "score": _score(val, run.config.select) if val else math.nan,
                          "metrics": dict(val or {})}
            save_checkpoint(run.out / "best.pt", run.model, threshold=threshold, epoch=epoch, metrics=val, **run.saved,
                            extra=recorded)
        _save_last(run.out, run.model, run.optimizer, run.scaler, epoch, val, _Progress(best=state.best), run.saved)
        verdict = None if val is None else validation_verdict(val["ap"], val["crack_share"], val["prob_min"],
                                                                  val["prob_max"])
        if verdict is not None:
            print(f"warning: epoch {epoch}: {verdict}. If it stays so for several epochs, the network has "
                  f"saturated to 'no crack': with --loss {run.config.loss} try --bce-warmup-steps N, a lower --lr, "
                  "or --init from a BCE model", flush=True)
        if run.progress:
            shown = ""
            if val:
                recall = " / ".join(f"{label} {r:.3f}" if r is not None else f"{label} -"
                                    for label, r in val["recall_by_width"].items())
                passes = f" ({val['flips']} passes)" if val["flips"] > 1 else ""
                shown = (f" val{passes} {run.config.select} {val[run.config.select]:.4f}, recall {recall} "
                         f"at {float(val['ods_threshold']):.2f}")
                if "negatives" in val:
                    neg = val["negatives"]
                    shown += f", crack-free photos marked {neg['flagged']}/{neg['images']}"
            print(f"epoch {epoch}/{run.config.epochs}: loss {mean_loss:.4f}{shown} ({state.seconds:.1f} s)", flush=True)
    state.best = run.ctx.broadcast(state.best) if run.ctx.enabled else state.best
    run.ctx.barrier()


def evaluate_best(out: Path, sources: list[Source], config: TrainConfig, device: torch.device,
                  amp_dtype: torch.dtype | None, started: float) -> dict[str, Any]:
    """Score ``out/best.pt`` on every source's test images; write metrics.json, pr_curve.*, overlays/."""
    if not (out / "best.pt").exists():
        raise TrainingError(f"{out / 'best.pt'} was never written: no epoch had validation metrics")
    model, payload = load_model(out / "best.pt", device)
    flips = config.eval_flips
    threshold = metadata_from_checkpoint(payload).threshold_for(flips)  # the daemon's reading of best.pt
    load = dict(scale=config.scale, binarize_masks=config.binarize_masks, progress=config.progress)
    sweeps = {}
    for source in sources:
        stems = seeded_subset(source.splits.test, config.test_max_images, config.seed)
        test_data = load_images(source.samples, stems, desc=f"loading {source.name} test", **load)
        wanted = set(range(min(config.overlays, len(test_data))))
        prefix = f"{source.name}_" if len(sources) > 1 else ""

        def keep_overlay(index: int, prob: np.ndarray, data: CrackImages = test_data, wanted=wanted,
                         prefix: str = prefix) -> None:
            if index in wanted:
                write_overlay(out / "overlays", prefix + data.stems[index], data.images[index], prob,
                              data.masks[index], threshold)

        sweeps[source.name] = sweep_images(torch_predictor(model, device, amp_dtype, tile=config.eval_tile,
                                                           flips=flips), test_data,
                                           tolerance_px=config.tolerance_px, progress=config.progress,
                                           desc=f"testing {source.name}", on_prediction=keep_overlay)
    has_val = any(s.splits.val for s in sources)
    passes = f" at {flips} passes" if flips > 1 else ""
    metrics = build_metrics(sweeps, threshold, extra={
        "best_epoch": int(payload["epoch"]),
        "threshold_source": (f"ODS threshold of best.pt on the validation split{passes}" if has_val
                             else f"default {DEFAULT_THRESHOLD} (no validation split)"),
        "flips": flips,
        "val": payload.get("metrics", {}),
        "data": config.data_name, "data_path": ",".join(str(s.root.resolve()) for s in sources), "split": "test",
        "split_source": _split_source(sources), "scale": config.scale,
        "loss": config.loss, "gamma1": config.gamma1, "gamma2": config.gamma2, "head": config.head,
        "width": config.width, "size": config.size, "epochs": config.epochs, "seed": config.seed,
        "checkpoint": str(out / "best.pt"), "device": str(device),
        "seconds": round(time.perf_counter() - started, 2),
        **({"test_max_images": config.test_max_images} if config.test_max_images else {}),
    })
    write_json(out / "metrics.json", metrics)
    pooled = next(iter(sweeps.values())) if len(sweeps) == 1 else merge_sweeps(sweeps.values())
    write_pr_curve(pooled, out, label=f"{config.loss} ({config.head}, w{config.width})",
                   title=f"{config.data_name} test: {config.loss}")
    return metrics


def build_metrics(sweeps: dict[str, ThresholdSweep] | ThresholdSweep, threshold: float,
                  extra: dict[str, Any]) -> dict[str, Any]:
    """The metrics.json dict: summary at 0.5 and the sweep, plus the values at the chosen threshold.

    With several sources: the pooled summary (each source counts equally) on top, and a
    ``sources`` table of each source's own summary and values at the threshold.
    """
    if isinstance(sweeps, ThresholdSweep):
        sweeps = {"data": sweeps}
    if len(sweeps) == 1:
        sweep = next(iter(sweeps.values()))
        return {**sweep.summary(), "threshold": threshold, "at_threshold": metrics_at_threshold(sweep, threshold),
                **extra}
    per_source = {name: {**sw.summary(), "at_threshold": metrics_at_threshold(sw, threshold)}
                  for name, sw in sweeps.items()}
    at = {"threshold": threshold, **mean_metrics_at_threshold(sweeps, threshold)}
    return {**pooled_summary(sweeps), "threshold": threshold, "at_threshold": at,
            **extra, "sources": per_source}


def read_run_metrics(out: str | Path) -> dict[str, Any]:
    import json

    path = Path(out) / "metrics.json"
    if not path.is_file():
        raise TrainingError(f"{path} is missing: the run did not finish")
    return json.loads(path.read_text(encoding="utf-8"))


__all__ = ["RunResult", "TrainingError", "train_run", "default_out", "read_history", "read_run_metrics"]
