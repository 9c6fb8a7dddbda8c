"""Generalization across crack data sets: leave-one-source-out training, and one model scored per source.

``python -m benchmarks.bench_generalization --loso [--train-args "..."] [--work DIR]``
    For each source S of ``--sources``: train on all the other sources (``python -m train.run``, each
    source with its own splits) and score on S's test split (held-out); plus one model trained on all
    sources and scored on each one's test split (in-source). Table: source | in-source ODS/OIS/AP |
    held-out ODS/OIS/AP, at every ``--tolerances`` (default 0 and 2 px). Resumable: each training
    run lives in ``--work/<name>``; a run with metrics.json is done and skipped, one with last.pt only
    is continued with ``train.run --resume``; ``--time-budget-min`` caps this invocation's training
    time (passed on to train.run, which stops cleanly after a whole step), so the whole benchmark runs
    in pieces: it exits with status 3 while runs are left; run the same command again until it
    publishes (status 0). Scores are cached per run and source.

``python -m benchmarks.bench_generalization --model runs/x/best.pt`` (or ``model.onnx``)
    One trained model on every source's test split: ODS/OIS/AP at each tolerance, recall at the
    model's threshold by crack width (<= 2, 2-5, > 5 px, widths from the masks' distance transform,
    ``benchmarks.generalization``), and the alert-level figures: on crack-free tiles cut from the test
    images (and the same tiles with distractors drawn in by ``train.synth.render_distractors``: straight
    dark lines, joint grids, edges, paint), the fraction on which the edge daemon would raise an
    alert, and the fraction of crack-holding tiles on which it does.

How an alert is decided: exactly as the daemon (``edge.pipeline``) does for a frame: the probability
map at the model's threshold (or ``model.threshold`` of ``--edge-config``) is measured by
``edge.measure.measure_cracks`` (min_area_px, open/close, severity rules from the edge config), and a
fresh ``edge.alerts.AlertPolicy`` (min_severity, min_coverage) decides; each tile is a new frame
of its own source, so the cool-downs never suppress an alert. Tiles are sized as documented in
``benchmarks.generalization``: with the public sets' small crops a crack-free 512 x 512 tile rarely exists,
so each tile is the largest crack-free square of its image, capped at ``--tile``; the table says at
what side the rates were measured.

Which images: as ``python -m train.evaluate`` (``train.sources.source_splits``): each data set's own
``splits/test.txt``; for a data set without splits/ (CrackForest) the split the checkpoint's run folder
recorded for it, else the seeded split with the seed and fractions stored in the model. Predictions come from ``train.evaluate.load_predictor``: whole
images for a checkpoint, the daemon's tiling for a fixed-tile ONNX model.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import (
    add_results_args,
    command_line,
    data_root,
    machine,
    publish,
    section_header,
)
from benchmarks.generalization import (
    DEFAULT_WIDTH_EDGES_PX,
    WidthRecall,
    crack_free_tiles,
    crack_tiles,
    recall_by_width,
    side_summary,
    width_bins_of_mask,
)
from contract.backends.flips import FLIP_AXES

REPO = Path(__file__).resolve().parents[1]

SOURCES = ("deepcrack", "crackforest_cfd", "crack500", "gaps384", "aiglern_trimm", "shadowcrack")
DEFAULT_WORK = REPO / "runs" / "generalization"
# The reduced-size recipe every leave-one-out model is trained with unless --train-args says otherwise:
# width 16, 128-px crops, BCE at lr 1e-3, 4 epochs of 1,800 crops balanced over the sources.
DEFAULT_TRAIN_ARGS = (
    "--width 16 --size 128 --epochs 4 --batch 4 --lr 1e-3 --loss bce --epoch-samples 1800 "
    "--val-max-images 50 --workers 0 --no-progress"
)
ALL_SOURCES_RUN = "all"
BUDGET_STOPPED = 75  # train.run's exit status when --time-budget-min ended the run (EX_TEMPFAIL)
UNFINISHED = 3  # this benchmark's exit status when runs are left for the next invocation


class BenchError(RuntimeError):
    """The benchmark cannot go on (missing data, a failed training run); the message says what to do."""


# ----------------------------------------------------------------------------- images of one source


def load_source_split(data: Path, split: str, train_config: dict[str, Any], max_images: int | None,
                      run_folder: Path | None = None):
    """The labelled images of ``split`` of the data set ``data`` (train.sources.source_splits precedence:
    its own splits/, else the split ``run_folder`` recorded for it, else the model's seed and fractions)."""
    from train.config import TrainConfig
    from train.data import list_samples, load_images
    from train.sources import source_splits

    if not data.is_dir():
        raise BenchError(f"data set {data} does not exist (see --data-root and --sources)")
    samples = list_samples(data)
    splits = source_splits(
        data, samples, seed=int(train_config.get("seed", TrainConfig.default("seed"))),
        val_fraction=float(train_config.get("val_fraction", TrainConfig.default("val_fraction"))),
        test_fraction=float(train_config.get("test_fraction", TrainConfig.default("test_fraction"))),
        run_folder=run_folder,
    )
    stems = splits.get(split)
    if max_images is not None:
        stems = stems[:max_images]
    if not stems:
        raise BenchError(f"split {split!r} of {data} is empty ({splits.source})")
    return load_images(samples, stems, scale=float(train_config.get("scale", 1.0)))


# ----------------------------------------------------------------------------- the daemon's alert decision


@dataclass(frozen=True)
class AlertDecider:
    """Would the edge daemon raise an alert for this probability map as a frame? (edge.measure + edge.alerts)"""

    threshold: float
    config: Any  # edge.config.EdgeConfig

    @classmethod
    def from_config(cls, model_threshold: float, edge_config: Path | None) -> AlertDecider:
        from edge.config import load_config

        return cls.of(model_threshold, load_config(edge_config))

    @classmethod
    def of(cls, model_threshold: float, config: Any) -> AlertDecider:
        """The decider of an :class:`edge.config.EdgeConfig` already read (its threshold, else the model's)."""
        return cls(float(config.model.threshold or model_threshold), config)

    def with_measure(self, **changes: Any) -> AlertDecider:
        """The same decider with some ``measure`` settings changed (e.g. ``straight_min_length_px=120``)."""
        measure = self.config.measure.model_copy(update=changes)
        return AlertDecider(self.threshold, self.config.model_copy(update={"measure": measure}))

    def measure(self, prob: np.ndarray):
        """The daemon's :class:`edge.measure.FrameMeasurement` of this probability map."""
        from edge.measure import measure_cracks

        measure = self.config.measure
        return measure_cracks(prob, self.threshold, gsd_mm_per_px=self.config.tiling.gsd_mm_per_px,
                              rules=measure.severity.rules(), **measure.cleanup())

    def decides(self, measurement) -> bool:
        from edge.alerts import AlertPolicy

        return AlertPolicy(self.config.alerts).decide(measurement, now_s=0.0, source="tile")

    def fires(self, prob: np.ndarray) -> bool:
        return self.decides(self.measure(prob))

    def describe(self) -> str:
        m, a = self.config.measure, self.config.alerts
        straight = (f"straight_min_length_px {m.straight_min_length_px:g} (share {m.straight_min_share:g}, "
                    f"support ratio {m.straight_support_ratio:g}, smooth lines {m.smooth_line_tolerance_px:g} px, "
                    f"grid segments {m.straight_grid_segment_px:g} px), "
                    if m.straight_min_length_px else "")
        return (f"threshold {self.threshold:.2f}, min_area_px {m.min_area_px}, min_length_px {m.min_length_px:g}, "
                f"link_gap_px {m.link_gap_px}, {straight}open/close {m.open_px}/{m.close_px} px, "
                f"min_severity {a.min_severity}, min_coverage {a.min_coverage}")


@dataclass
class AlertRate:
    """Tiles seen, tiles that would raise an alert, and their sides (pixels): all, and those that fired."""

    sides: list[int] = field(default_factory=list)
    fired_sides: list[int] = field(default_factory=list)

    def add(self, fired: bool, side: int) -> None:
        self.sides.append(int(side))
        if fired:
            self.fired_sides.append(int(side))

    def by_side(self, low: int, high: float) -> AlertRate:
        """The tiles with ``low <= side < high``."""
        return AlertRate([v for v in self.sides if low <= v < high], [v for v in self.fired_sides if low <= v < high])

    @property
    def fired(self) -> int:
        return len(self.fired_sides)

    @property
    def tiles(self) -> int:
        return len(self.sides)

    @property
    def rate(self) -> float:
        return self.fired / self.tiles if self.tiles else math.nan

    def merged(self, other: AlertRate) -> AlertRate:
        return AlertRate(self.sides + other.sides, self.fired_sides + other.fired_sides)

    def to_json(self) -> dict[str, Any]:
        return {"fired": self.fired, "tiles": self.tiles, "rate": None if not self.tiles else self.rate,
                "sides": side_summary(self.sides)}


def distractor_renderer(seed: int) -> Callable[[np.ndarray], np.ndarray] | None:
    """``train.synth.render_distractors`` with its default config and a seeded generator, or None without it."""
    try:
        from train.synth import SynthConfig, render_distractors
    except ImportError:
        return None
    rng, config = np.random.default_rng(seed), SynthConfig()
    return lambda image: render_distractors(np.ascontiguousarray(image), rng, config)


@dataclass(frozen=True)
class TileSettings:
    tile: int = 512
    margin_px: int = 8
    min_side_px: int = 64
    min_crack_px: int = 64


# ----------------------------------------------------------------------------- scoring one source


@dataclass
class SourceScore:
    """One model on one source: threshold-sweep metrics per tolerance, and optional width/alert figures."""

    name: str
    n_images: int
    metrics: dict[int, dict[str, float]]  # tolerance px -> ODS/OIS/AP/P/R... (ThresholdSweep.summary + at threshold)
    width: dict[int, WidthRecall] | None = None
    alerts: dict[str, AlertRate] | None = None  # crack_free, distractor, crack

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "n_images": self.n_images,
                               "metrics": {str(t): m for t, m in self.metrics.items()}}
        if self.width is not None:
            out["recall_by_width"] = {
                str(t): {"edges_px": list(w.edges), "labels": w.labels, "found": w.found.tolist(),
                         "total": w.total.tolist(), "recall": [None if math.isnan(r) else r for r in w.recall]}
                for t, w in self.width.items()
            }
        if self.alerts is not None:
            out["alerts"] = {k: v.to_json() for k, v in self.alerts.items()}
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SourceScore:
        return cls(data["name"], int(data["n_images"]), {int(t): m for t, m in data["metrics"].items()})


def score_source(
    predict: Callable[[np.ndarray], np.ndarray],
    images,
    name: str,
    *,
    threshold: float,
    tolerances: Sequence[int] = (0, 2),
    width_edges: Sequence[float] | None = None,
    decider: AlertDecider | None = None,
    tiles: TileSettings = TileSettings(),  # noqa: B008 - frozen
    distract: Callable[[np.ndarray], np.ndarray] | None = None,
    progress: bool = False,
) -> SourceScore:
    """Predict every image of ``images`` (train.data.CrackImages) once and accumulate every figure.

    ``width_edges``: also recall at ``threshold`` by crack width; ``decider``: also the alert rates
    (each tile predicted on its own, as a frame of its own).
    """
    from contract.metrics import ThresholdSweep, iou, nearest_threshold_index, prf

    sweeps = {t: ThresholdSweep(tolerance_px=t) for t in tolerances}
    width = {t: WidthRecall(tuple(width_edges)) for t in tolerances} if width_edges else None
    alerts = {"crack_free": AlertRate(), "distractor": AlertRate(), "crack": AlertRate()} if decider else None
    indices: Any = range(len(images))
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc=name, unit="img", leave=False)
    for i in indices:
        image, mask = images.images[i], images.masks[i].astype(bool)
        prob = predict(image)
        if prob.shape != mask.shape:
            raise BenchError(f"{name}/{images.stems[i]}: prediction {prob.shape} differs from its mask {mask.shape}")
        for sweep in sweeps.values():
            sweep.update(prob, mask)
        if width is not None:
            bins = width_bins_of_mask(mask, width.get(tolerances[0]).edges)
            for t in tolerances:
                width[t] = width[t] + recall_by_width(prob >= threshold, mask, width[t].edges, t, bins)
        if decider is not None and alerts is not None:
            for tile in crack_free_tiles(image, mask, tiles.tile, tiles.margin_px, tiles.min_side_px):
                alerts["crack_free"].add(decider.fires(predict(np.ascontiguousarray(tile.image))), tile.side)
                if distract is not None:
                    alerts["distractor"].add(decider.fires(predict(distract(tile.image))), tile.side)
            for tile in crack_tiles(image, mask, tiles.tile, tiles.min_crack_px):
                whole = tile.side == image.shape[0] == image.shape[1]
                tile_prob = prob if whole else predict(np.ascontiguousarray(tile.image))
                alerts["crack"].add(decider.fires(tile_prob), tile.side)
    metrics: dict[int, dict[str, float]] = {}
    for t, sweep in sweeps.items():
        summary = sweep.summary()
        k = nearest_threshold_index(sweep.thresholds, threshold)
        tp, fp, fn = (float(c[k]) for c in sweep.totals())
        p, r, f = prf(tp, fp, fn)
        summary.update({"threshold": float(threshold), "precision_at_threshold": p, "recall_at_threshold": r,
                        "f_beta_at_threshold": f, "iou_at_threshold": iou(tp, fp, fn)})
        metrics[t] = summary
    return SourceScore(name, len(images), metrics, width, alerts)


def score_model(
    model: Path, sources: Sequence[Path], *, split: str = "test", max_images: int | None = None,
    tolerances: Sequence[int] = (0, 2), device: str = "auto", threshold: float | None = None,
    width_edges: Sequence[float] | None = None, edge_config: Path | None = None, alerts: bool = False,
    tiles: TileSettings = TileSettings(), distractor_seed: int | None = 0, progress: bool = False,  # noqa: B008
    upsample: float = 1.0, flips: int | None = None,
) -> tuple[list[SourceScore], dict[str, Any]]:
    """Every source's :class:`SourceScore` for one model file, and the model's info (threshold, kind, ...);
    ``upsample`` > 1 predicts every image enlarged that many times (``train.inference.upsampled_predictor``);
    ``flips`` mirrored passes averaged per image (default: the daemon config's ``model.flips``)."""
    from edge.config import load_config
    from train.evaluate import load_predictor
    from train.inference import upsampled_predictor

    edge = load_config(edge_config)
    if flips is None:
        flips = edge.model.flips
    predict, info = load_predictor(model, device, flips)
    predict = upsampled_predictor(predict, upsample)
    chosen = float(info["threshold"] if threshold is None else threshold)
    decider = AlertDecider.of(chosen, edge) if alerts else None
    if decider is not None:
        chosen = decider.threshold  # the daemon's threshold, for recall by width too
    distract = distractor_renderer(distractor_seed) if alerts and distractor_seed is not None else None
    scores = []
    for data in sources:
        run_folder = model.parent if info.get("kind") == "checkpoint" else None
        images = load_source_split(data, split, info.get("train_config") or {}, max_images, run_folder)
        scores.append(score_source(predict, images, data.name, threshold=chosen, tolerances=tolerances,
                                   width_edges=width_edges, decider=decider, tiles=tiles, distract=distract,
                                   progress=progress))
    info = {**info, "threshold_used": chosen, "decider": decider.describe() if decider else None,
            "distractors": distract is not None}
    return scores, info


# ----------------------------------------------------------------------------- leave-one-source-out plan


@dataclass(frozen=True)
class TrainJob:
    """One training run of the leave-one-out design: its folder name and the sources it trains on."""

    name: str
    train_sources: tuple[str, ...]


def loso_jobs(sources: Sequence[str]) -> list[TrainJob]:
    """One job per source trained on all the others (``without-<S>``), then one on all (``all``)."""
    if len(set(sources)) != len(sources) or len(sources) < 2:
        raise BenchError(f"--sources needs at least two distinct data sets, got {list(sources)}")
    jobs = [TrainJob(f"without-{s}", tuple(o for o in sources if o != s)) for s in sources]
    return jobs + [TrainJob(ALL_SOURCES_RUN, tuple(sources))]


def train_command(job: TrainJob, data_root: Path, run_dir: Path, train_args: Sequence[str],
                  budget_min: float | None) -> list[str]:
    """The ``python -m train.run`` command that starts or (with last.pt present) continues ``job``."""
    budget = ["--time-budget-min", f"{budget_min:.2f}"] if budget_min is not None else []
    if (run_dir / "last.pt").is_file():
        return [sys.executable, "-m", "train.run", "--resume", str(run_dir / "last.pt"), "--out", str(run_dir), *budget]
    data = [arg for s in job.train_sources for arg in ("--data", str(data_root / s))]
    return [sys.executable, "-m", "train.run", *data, "--out", str(run_dir), *train_args, *budget]


def run_is_finished(run_dir: Path) -> bool:
    return (run_dir / "metrics.json").is_file() and (run_dir / "best.pt").is_file()


def _log(line: str) -> None:
    print(line, flush=True)  # before the training subprocess writes to the same terminal


def train_all(jobs: Sequence[TrainJob], *, data_root: Path, work: Path, train_args: Sequence[str],
              budget_min: float | None, log: Callable[[str], None] = _log) -> list[str]:
    """Train (or continue) every unfinished job within the budget; returns the names still unfinished."""
    started = time.monotonic()
    for job in jobs:
        run_dir = work / job.name
        if run_is_finished(run_dir):
            log(f"{job.name}: finished earlier, skipped")
            continue
        left = None
        if budget_min is not None:
            left = budget_min - (time.monotonic() - started) / 60.0
            if left < 0.5:
                break
        command = train_command(job, data_root, run_dir, train_args, left)
        log(f"{job.name}: {shlex.join(command)}")
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(command, cwd=REPO)
        if result.returncode == BUDGET_STOPPED:
            break  # last.pt written; the next invocation resumes it
        if result.returncode != 0:
            raise BenchError(f"training {job.name} failed (exit {result.returncode}): {shlex.join(command)}")
    return [job.name for job in jobs if not run_is_finished(work / job.name)]


def cached_score(run_dir: Path, data: Path, *, split: str, max_images: int | None, tolerances: Sequence[int],
                 device: str, progress: bool) -> SourceScore:
    """The run's best.pt scored on ``data`` (cached in the run folder, keyed by split, image cap and tolerances),
    one pass per image: the leave-one-out study compares networks, not the daemon's flip averaging."""
    key = f"{data.name}-{split}-{'all' if max_images is None else max_images}-t{'_'.join(map(str, tolerances))}"
    cache = run_dir / "generalization" / f"{key}.json"
    if cache.is_file():
        return SourceScore.from_json(json.loads(cache.read_text(encoding="utf-8")))
    scores, _ = score_model(run_dir / "best.pt", [data], split=split, max_images=max_images,
                            tolerances=tolerances, device=device, progress=progress, flips=1)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(scores[0].to_json(), indent=2) + "\n", encoding="utf-8")
    return scores[0]


# ----------------------------------------------------------------------------- tables (pure)


def _f(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def loso_table(in_source: dict[str, SourceScore], held_out: dict[str, SourceScore], tolerances: Sequence[int]) -> str:
    """source | tolerance | in-source ODS/OIS/AP | held-out ODS/OIS/AP | held-out - in-source ODS, and the means."""
    lines = [
        "| source | test images | tolerance | in-source ODS | in-source OIS | in-source AP | "
        "held-out ODS | held-out OIS | held-out AP | held-out − in-source ODS |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    keys = ("ods_f", "ois_f", "ap")
    for t in tolerances:
        sums = {("in", k): [] for k in keys} | {("out", k): [] for k in keys}
        for name in held_out:
            ins, out = in_source[name].metrics[t], held_out[name].metrics[t]
            for k in keys:
                sums[("in", k)].append(ins[k])
                sums[("out", k)].append(out[k])
            lines.append(f"| {name} | {held_out[name].n_images} | {t} px | " + " | ".join(_f(ins[k]) for k in keys)
                         + " | " + " | ".join(_f(out[k]) for k in keys) + f" | {out['ods_f'] - ins['ods_f']:+.3f} |")
        mean = {key: float(np.mean(v)) for key, v in sums.items()}
        lines.append(f"| **mean of {len(held_out)}** | | {t} px | " + " | ".join(_f(mean[('in', k)]) for k in keys)
                     + " | " + " | ".join(_f(mean[('out', k)]) for k in keys)
                     + f" | {mean[('out', 'ods_f')] - mean[('in', 'ods_f')]:+.3f} |")
    return "\n".join(lines) + "\n"


def source_table(scores: Sequence[SourceScore], tolerances: Sequence[int]) -> str:
    """source | images | ODS/OIS/AP at each tolerance | P, R, F-beta at the threshold (0 px)."""
    head = "| source | test images | " + " | ".join(f"ODS {t} px | OIS {t} px | AP {t} px" for t in tolerances)
    head += " | P at threshold | R at threshold | Fβ at threshold |"
    lines = [head, "|" + "---|" * (5 + 3 * len(tolerances))]
    t0 = tolerances[0]
    for s in scores:
        cells = [f"{_f(s.metrics[t]['ods_f'])} | {_f(s.metrics[t]['ois_f'])} | {_f(s.metrics[t]['ap'])}" for t in tolerances]
        at = s.metrics[t0]
        lines.append(f"| {s.name} | {s.n_images} | " + " | ".join(cells) + f" | {_f(at['precision_at_threshold'])} | "
                     f"{_f(at['recall_at_threshold'])} | {_f(at['f_beta_at_threshold'])} |")
    return "\n".join(lines) + "\n"


def _rate(rate: AlertRate) -> str:
    if not rate.tiles:
        return "n/a (0 tiles)"
    return f"{rate.rate:.3f} ({rate.fired}/{rate.tiles})"


SIDE_BINS_PX: tuple[tuple[int, float], ...] = ((0, 128), (128, 256), (256, math.inf))


def alert_table(scores: Sequence[SourceScore]) -> str:
    """Per source and pooled: alert rate on crack-free, distractor and crack tiles, with the tile sides."""
    lines = [
        "| source | crack-free tiles: alert rate | distractor tiles: alert rate | crack tiles: alert rate | "
        "crack-free tile side | crack tile side |",
        "|---|---|---|---|---|---|",
    ]
    pooled = {k: AlertRate() for k in ("crack_free", "distractor", "crack")}
    for s in scores:
        assert s.alerts is not None
        for k in pooled:
            pooled[k] = pooled[k].merged(s.alerts[k])
        a = s.alerts
        lines.append(f"| {s.name} | {_rate(a['crack_free'])} | {_rate(a['distractor'])} | {_rate(a['crack'])} | "
                     f"{side_summary(a['crack_free'].sides)} | {side_summary(a['crack'].sides)} |")
    lines.append(f"| **pooled** | {_rate(pooled['crack_free'])} | {_rate(pooled['distractor'])} | "
                 f"{_rate(pooled['crack'])} | {side_summary(pooled['crack_free'].sides)} | "
                 f"{side_summary(pooled['crack'].sides)} |")
    lines += ["", "Pooled, by tile side (a straight line inside a tile shorter than the straight check's length cannot "
              "be judged straight):", "", "| tile side | crack-free tiles | distractor tiles | crack tiles |", "|---|---|---|---|"]
    for low, high in SIDE_BINS_PX:
        name = f"{low}-{int(high) - 1} px" if high != math.inf else f">= {low} px"
        lines.append(f"| {name} | " + " | ".join(_rate(pooled[k].by_side(low, high))
                                                 for k in ("crack_free", "distractor", "crack")) + " |")
    return "\n".join(lines) + "\n"


def width_table(scores: Sequence[SourceScore], tolerances: Sequence[int]) -> str:
    """Per source and pooled: recall at the threshold per crack-width bin (found / crack pixels), per tolerance."""
    first = next(iter(scores[0].width.values()))  # type: ignore[union-attr]
    labels = first.labels
    lines = ["| source | tolerance | " + " | ".join(f"recall {lab}" for lab in labels) + " |",
             "|" + "---|" * (2 + len(labels))]
    for t in tolerances:
        pooled = WidthRecall(first.edges)
        for s in scores:
            w = s.width[t]  # type: ignore[index]
            pooled = pooled + w
            lines.append(f"| {s.name} | {t} px | " + " | ".join(_width_cell(w, b) for b in range(len(labels))) + " |")
        lines.append(f"| **pooled** | {t} px | " + " | ".join(_width_cell(pooled, b) for b in range(len(labels))) + " |")
    return "\n".join(lines) + "\n"


def _width_cell(w: WidthRecall, b: int) -> str:
    if not w.total[b]:
        return "n/a (0 px)"
    return f"{w.recall[b]:.3f} ({w.total[b]:,} px)"


# ----------------------------------------------------------------------------- CLI


def _tolerances(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole pixel tolerances like 0,2, got {text!r}") from None
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"tolerances must be >= 0 pixels, got {text!r}")
    return values


def _edges(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected increasing widths in px like 2,5, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_generalization",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--loso", action="store_true", help="leave-one-source-out training and scoring")
    mode.add_argument("--model", type=Path, help="score this trained model (.pt from train.run or .onnx from export.onnx)")
    p = parser.add_argument
    p("--sources", default=",".join(SOURCES), help="comma list of data set folders under --data-root (default: %(default)s)")
    p("--data-root", type=Path, default=None,
      help="folder holding the data sets (default: $CRACK_DATA_ROOT, ../shared/data when unset)")
    p("--split", default="test", choices=("train", "val", "test"), help="split scored (default: %(default)s)")
    p("--max-images", type=int, default=None, help="score only the first N images of each source's split (default: all)")
    p("--tolerances", type=_tolerances, default=(0, 2), help="pixel tolerances of the metrics, comma list (default: 0,2)")
    p("--device", default="auto", help="auto | cpu | cuda for predicting (default: %(default)s)")
    p("--no-progress", dest="progress", action="store_false", help="no progress bars")
    loso = parser.add_argument_group("--loso")
    loso.add_argument("--work", type=Path, default=DEFAULT_WORK,
                      help="folder of the training runs, one per name (default: runs/generalization)")
    loso.add_argument("--train-args", default=DEFAULT_TRAIN_ARGS,
                      help="flags passed to every `python -m train.run` (default: %(default)r)")
    loso.add_argument("--time-budget-min", type=float, default=None,
                      help="stop training after this many minutes of this invocation (passed on to train.run); "
                      "run the same command again to continue (default: no limit)")
    model = parser.add_argument_group("--model")
    model.add_argument("--threshold", type=float, default=None, help="decision threshold (default: the model's)")
    model.add_argument("--width-edges", type=_edges, default=DEFAULT_WIDTH_EDGES_PX,
                       help="crack-width bin edges in px, comma list (default: 2,5 -> <=2, 2-5, >5 px)")
    model.add_argument("--edge-config", type=Path, default=None,
                       help="edge daemon TOML whose measure/alerts sections decide an alert (default: the daemon's defaults)")
    model.add_argument("--tile", type=int, default=512, help="largest tile side, px (default: %(default)s)")
    model.add_argument("--margin-px", type=int, default=8,
                       help="crack-free tiles keep this far from any labelled crack pixel, px (default: %(default)s)")
    model.add_argument("--min-side-px", type=int, default=64,
                       help="no crack-free tile smaller than this, px (default: %(default)s)")
    model.add_argument("--min-crack-px", type=int, default=64,
                       help="a crack tile holds at least this many crack pixels (default: %(default)s)")
    model.add_argument("--distractor-seed", type=int, default=0, help="seed of the distractor generator (default: %(default)s)")
    model.add_argument("--no-distractors", action="store_true", help="skip the distractor tiles")
    model.add_argument("--upsample", type=float, default=1.0,
                       help="predict each image enlarged this many times (bilinear, as the daemon enlarges frames "
                       "whose GSD is coarser than tiling.target_gsd_mm_per_px), scored at its own size: what "
                       "enlarging does to thin cracks and distractors (default: %(default)s)")
    model.add_argument("--flips", type=int, choices=tuple(FLIP_AXES), default=None,
                       help="passes per image, mirrored and averaged, as the daemon's model.flips (default: the "
                       "--edge-config's, else the built-in default)")
    model.add_argument("--json", type=Path, default=None, help="also write every figure to this JSON file")
    add_results_args(parser)
    return parser


def _source_paths(args: argparse.Namespace) -> list[Path]:
    if args.data_root is None:
        args.data_root = data_root()
    names = [s.strip() for s in args.sources.split(",") if s.strip()]
    missing = [n for n in names if not (args.data_root / n).is_dir()]
    if missing:
        raise BenchError(f"data set(s) {', '.join(missing)} not found under {args.data_root} (see --data-root)")
    return [args.data_root / n for n in names]


def _command(argv: Sequence[str] | None) -> str:
    """The reproducing command, each argument shell-quoted (--train-args holds spaces)."""
    return command_line(__file__, [shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])])


def run_loso(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    sources = _source_paths(args)
    names = [s.name for s in sources]
    jobs = loso_jobs(names)
    unfinished = train_all(jobs, data_root=args.data_root, work=args.work, train_args=shlex.split(args.train_args),
                           budget_min=args.time_budget_min)
    if unfinished:
        print(f"not finished within the budget: {', '.join(unfinished)}; run the same command again to continue")
        return UNFINISHED
    score = dict(split=args.split, max_images=args.max_images, tolerances=args.tolerances, device=args.device,
                 progress=args.progress)
    held_out = {s.name: cached_score(args.work / f"without-{s.name}", s, **score) for s in sources}
    in_source = {s.name: cached_score(args.work / ALL_SOURCES_RUN, s, **score) for s in sources}
    notes = [
        f"Training (every model): `python -m train.run --data <sources> {args.train_args}`; runs in {args.work}.",
        f"Held-out: trained on the other {len(names) - 1} sources; in-source: one model trained on all {len(names)}. "
        f"Scored on each source's {args.split} split"
        + (f" (first {args.max_images} images)" if args.max_images else "") + ", ODS/OIS/AP with β² = 0.3.",
    ]
    text = section_header("Generalization: leave-one-source-out", _command(argv), notes)
    publish(text + loso_table(in_source, held_out, args.tolerances), args)
    return 0


def run_model(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    sources = _source_paths(args)
    tiles = TileSettings(args.tile, args.margin_px, args.min_side_px, args.min_crack_px)
    scores, info = score_model(
        args.model, sources, split=args.split, max_images=args.max_images, tolerances=args.tolerances,
        device=args.device, threshold=args.threshold, width_edges=args.width_edges, edge_config=args.edge_config,
        alerts=True, tiles=tiles, distractor_seed=None if args.no_distractors else args.distractor_seed,
        progress=args.progress, upsample=args.upsample, flips=args.flips,
    )
    trained_on = (info.get("train_config") or {}).get("data") or (info.get("metadata") or {}).get("train_data", "?")
    if isinstance(trained_on, (list, tuple)):
        trained_on = ", ".join(Path(d).name for d in trained_on)
    notes = [
        f"Model: {args.model} ({info['kind']}), trained on {trained_on}; threshold {info['threshold_used']:.2f}. "
        f"{args.split} split of each source" + (f" (first {args.max_images} images)" if args.max_images else "") + "."
        + (f" Every image predicted enlarged x{args.upsample:g} (bilinear) and scored at its own size."
           if args.upsample != 1.0 else "")
        + (f" Every image predicted {info['flips']} times, mirrored, and averaged (model.flips)."
           if info["flips"] > 1 else ""),
        f"Alert decision (edge.measure + edge.alerts, each tile a new frame): {info['decider']}. Crack-free tiles: "
        f"the largest square of each test image at least {args.margin_px} px from any labelled crack pixel, capped "
        f"at {args.tile} px, none under {args.min_side_px} px; crack tiles: min({args.tile}, H, W) squares holding "
        f">= {args.min_crack_px} crack pixels. Distractor tiles: the crack-free tiles with "
        + ("train.synth.render_distractors drawn in (seed " + str(args.distractor_seed) + ")."
           if info["distractors"] else "none (train.synth not available or --no-distractors)."),
        "Recall by width: crack pixels binned by local width (2 d - 1 of the widest inscribed disc covering the "
        "pixel, d = distance transform), found when the prediction at the threshold lies within the tolerance.",
    ]
    text = section_header("Generalization: one model across sources", _command(argv), notes)
    text += "Per source:\n\n" + source_table(scores, args.tolerances)
    text += "\nAlert level (would the daemon raise an alert on this tile?):\n\n" + alert_table(scores)
    text += "\nRecall at the threshold by crack width:\n\n" + width_table(scores, args.tolerances)
    publish(text, args)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"model": str(args.model), "threshold": info["threshold_used"], "decider": info["decider"],
                   "machine": machine(), "sources": [s.to_json() for s in scores]}
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return run_loso(args, argv) if args.loso else run_model(args, argv)
    except (BenchError, ValueError, RuntimeError, OSError) as exc:  # DatasetError, EvaluateError, ConfigError too
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
