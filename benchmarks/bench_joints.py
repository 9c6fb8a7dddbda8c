"""Joints are not cracks: alert rates on straight structures of real surfaces, and what the straight check costs.

``python -m benchmarks.bench_joints`` (the shipped model, the six visible sets' test splits, 20 images each;
``--split val`` to choose settings on validation images)

For every image the cracks are inpainted away (``train.synth.crack_free_background``) and the
centre square of side min(512, H, W) is kept: a real crack-free surface. Into it each structure family
of ``train.structures`` is drawn once (its own seeded generator), and the tile is predicted as the
daemon predicts a frame. Each tile is decided twice, side by side: by the daemon's alert decision with
the straight check of ``edge.measure.drop_straight`` off, and with it on (``--straight-min-length-px``,
``--straight-min-share``, ``--straight-support-ratio``, ``--smooth-line-tolerance-px``,
``--straight-grid-segment-px``; the daemon's defaults unless given): what the model does
alone, and what the check adds. The real crack tiles of the same images
(``benchmarks.generalization.crack_tiles``) are decided both ways too, and the crack pixels kept by
each decision's cleaned mask give recall by crack width at 0 px tolerance.

Which figures mean what: the **held-out** families (``train.structures.HELD_OUT_FAMILIES``) are never
drawn in training by default, so their rate is the one that says how a model does on joints it has
not seen; the **training** families' rate is what a model trained with ``train.synth`` works toward.
For a model trained before those families existed both are unseen. "none" is the
inpainted surface alone: the control.

**Real straight structures**: each test image is also predicted whole, and the straight pieces of the
prediction that lie more than 8 px from every labelled pixel (``train.hard_negatives.false_positive_sites``
with ``straight_only``: at least 24 px long, at most 2 px RMS off their axis) are counted — kerbs, lane
and joint edges, formwork and tile lines, image borders of the real photographs — and how many of them
are still in the daemon's crack mask with the check off and on. A data set's labels may leave a straight
crack out, so the count is an upper bound on joints marked as cracks.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from benchmarks.bench_generalization import SOURCES, AlertDecider, load_source_split
from benchmarks.common import add_results_args, command_line, data_root, publish, section_header
from benchmarks.generalization import WidthRecall, crack_tiles, recall_by_width, width_bins_of_mask
from contract.backends.flips import FLIP_AXES

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO / "edge" / "assets" / "demo_model.onnx"
WIDTH_EDGES_PX = (2.0, 5.0)  # recall <= 2 px (hairlines), 2-5 px, > 5 px
NONE = "none"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_joints", description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="ONNX model or checkpoint (default: the shipped model)")
    p.add_argument("--data-root", type=Path, default=None, help="folder holding the data sets (default: ../shared/data)")
    p.add_argument("--sources", nargs="+", default=list(SOURCES), help="data sets (default: all six)")
    p.add_argument("--split", choices=("train", "val", "test"), default="test",
                   help="split whose images are used (default: %(default)s; choose settings on val, report test)")
    p.add_argument("--max-images", type=int, default=20, help="images per source (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the structures drawn (default: %(default)s)")
    p.add_argument("--skip-families", default="",
                   help="comma-separated structure families not drawn or reported, e.g. a held-out family kept blind "
                   "while settings are chosen on validation; the others keep their draws (default: none skipped)")
    p.add_argument("--straight-min-length-px", type=float, default=None,
                   help="the straight check's minimum line length, px (default: the daemon's, measure.straight_min_length_px)")
    p.add_argument("--straight-min-share", type=float, default=None,
                   help="share of a piece on such lines that makes it a joint (default: the daemon's)")
    p.add_argument("--straight-support-ratio", type=float, default=None,
                   help="the straight check's faint-line ratio, 1 = each piece alone (default: the daemon's)")
    p.add_argument("--smooth-line-tolerance-px", type=float, default=None,
                   help="the straight check's smooth-line tolerance, 0 = straight segments only (default: the daemon's)")
    p.add_argument("--straight-grid-segment-px", type=float, default=None,
                   help="the straight check's joint-grid segment length, 0 = long lines only (default: the daemon's)")
    p.add_argument("--edge-config", type=Path, default=None, help="daemon config whose alert decision is used "
                   "(default: the built-in defaults)")
    p.add_argument("--upsample", type=float, default=1.0,
                   help="predict each tile enlarged this many times (bilinear, as the daemon enlarges frames whose GSD "
                   "is coarser than tiling.target_gsd_mm_per_px), decided at its own size (default: %(default)s)")
    p.add_argument("--flips", type=int, choices=tuple(FLIP_AXES), default=None,
                   help="passes per image, mirrored and averaged, as the daemon's model.flips (default: the daemon "
                   "config's, --edge-config or the built-in default)")
    p.add_argument("--device", default="auto", help="torch device for a checkpoint (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no per-source progress lines")
    add_results_args(p)
    return p


class Counts:
    """Alerts raised per decision (off / on) over the tiles of one kind."""

    def __init__(self) -> None:
        self.tiles = 0
        self.fired = {"off": 0, "on": 0}

    def add(self, off: bool, on: bool) -> None:
        self.tiles += 1
        self.fired["off"] += int(off)
        self.fired["on"] += int(on)

    def __iadd__(self, other: Counts) -> Counts:
        self.tiles += other.tiles
        for k in self.fired:
            self.fired[k] += other.fired[k]
        return self

    def rate(self, which: str) -> str:
        return f"{self.fired[which] / self.tiles:.3f} ({self.fired[which]}/{self.tiles})" if self.tiles else "-"


def centre_square(image: np.ndarray, side: int) -> np.ndarray:
    h, w = image.shape[:2]
    y, x = (h - side) // 2, (w - side) // 2
    return np.ascontiguousarray(image[y : y + side, x : x + side])


def score_source(predict, images, source_index: int, deciders: dict[str, AlertDecider], seed: int,
                 families: list[str], not_drawn: frozenset[str] = frozenset()
                 ) -> tuple[dict[str, Counts], Counts, dict[str, WidthRecall], int, Counts]:
    """Alert counts per family, on crack tiles, crack recall by width per decision, images skipped, and the
    real straight false-positive pieces of the whole test images (``tiles`` = pieces the model marks,
    ``fired`` = those still in each decision's crack mask). A family in ``not_drawn`` is neither drawn nor
    predicted; each family's generator is seeded by its place in ``families``, so skipping one leaves the
    others' draws as they are."""
    from train.hard_negatives import false_positive_sites
    from train.structures import render_structure
    from train.synth import crack_free_background

    per_family = {name: Counts() for name in [NONE, *families] if name not in not_drawn}
    cracks = Counts()
    real = Counts()
    recall = {k: WidthRecall(WIDTH_EDGES_PX) for k in deciders}
    skipped = 0
    for i in range(len(images)):
        image, mask = images.images[i], images.masks[i].astype(bool)
        whole = predict(image)
        sites = false_positive_sites(whole, mask, deciders["off"].threshold, straight_only=True)
        if sites:
            kept = {k: decider.measure(whole).mask for k, decider in deciders.items()}
            for y, x, _ in sites:
                real.add(bool(kept["off"][y, x]), bool(kept["on"][y, x]))
        surface = crack_free_background(image, mask.astype(np.uint8))
        if surface is None:
            skipped += 1
        else:
            square = centre_square(surface, min(512, *surface.shape[:2]))
            for f, name in enumerate([NONE, *families]):
                if name in not_drawn:
                    continue
                rng = np.random.default_rng([seed, source_index, i, f])
                tile = square if name == NONE else render_structure(square, rng, name)
                prob = predict(tile)
                per_family[name].add(*(deciders[k].fires(prob) for k in ("off", "on")))
        for tile in crack_tiles(image, mask, 512, 64):
            prob = predict(np.ascontiguousarray(tile.image))
            truth = mask[tile.y : tile.y + tile.side, tile.x : tile.x + tile.side]
            bins = width_bins_of_mask(truth, WIDTH_EDGES_PX)
            fired = {}
            for k, decider in deciders.items():
                measurement = decider.measure(prob)
                fired[k] = decider.decides(measurement)
                recall[k] = recall[k] + recall_by_width(measurement.mask, truth, WIDTH_EDGES_PX, 0, bins)
            cracks.add(fired["off"], fired["on"])
    return per_family, cracks, recall, skipped, real


def real_table(real: dict[str, Counts], images: dict[str, int], split: str = "test") -> str:
    """Per data set: straight false-positive pieces per 100 images, the model's and each decision's."""
    rows = ["", f"Real straight structures of the {split} images (straight pieces of the prediction > 8 px from every label):",
            "", "| data set | images | pieces the model marks | kept, straight check off | kept, straight check on |",
            "|---|---:|---:|---:|---:|"]
    def row(name: str, counts: Counts, count: int) -> str:
        return (f"| {name} | {count} | {counts.tiles} ({100.0 * counts.tiles / max(count, 1):.0f} per 100 images) | "
                f"{counts.fired['off']} | {counts.fired['on']} |")

    pooled = Counts()
    for name, counts in real.items():
        rows.append(row(name, counts, images[name]))
        pooled += counts
    rows.append(row("**pooled**", pooled, sum(images.values())))
    return "\n".join(rows) + "\n"


def tables(per_family: dict[str, Counts], cracks: Counts, recall: dict[str, WidthRecall],
           training: tuple[str, ...], held_out: tuple[str, ...]) -> str:
    def pooled(names: tuple[str, ...]) -> Counts:
        total = Counts()
        for n in names:
            total += per_family[n]
        return total

    rows = ["| tiles | family split | alert rate, straight check off | alert rate, straight check on |",
            "|---|---|---|---|"]
    for name in [NONE, *training, *held_out]:
        split = "control" if name == NONE else ("training" if name in training else "held out")
        rows.append(f"| {name} | {split} | {per_family[name].rate('off')} | {per_family[name].rate('on')} |")
    for label, names in (("**training families, pooled**", training), ("**held-out families, pooled**", held_out)):
        total = pooled(names)
        rows.append(f"| {label} | | {total.rate('off')} | {total.rate('on')} |")
    rows.append(f"| **real crack tiles** | | {cracks.rate('off')} | {cracks.rate('on')} |")
    labels = recall["off"].labels
    rows += ["", "Recall of labelled crack pixels in the crack tiles, by width, 0 px tolerance (the cleaned mask):", "",
             "| decision | " + " | ".join(f"recall {lab}" for lab in labels) + " |",
             "|---|" + "---|" * len(labels)]
    for k, name in (("off", "straight check off"), ("on", "straight check on")):
        r = recall[k]
        rows.append(f"| {name} | " + " | ".join(f"{v:.3f} ({t:,} px)" for v, t in zip(r.recall, r.total, strict=True)) + " |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from edge.config import load_config
    from train.evaluate import load_predictor
    from train.inference import upsampled_predictor
    from train.structures import FAMILIES, HELD_OUT_FAMILIES, TRAINING_FAMILIES, check_families

    if not args.model.is_file():
        print(f"error: --model {args.model} does not exist", file=sys.stderr)
        return 2
    try:
        not_drawn = frozenset(check_families([n.strip() for n in args.skip_families.split(",") if n.strip()]))
    except ValueError as exc:
        print(f"error: --skip-families: {exc}", file=sys.stderr)
        return 2
    training = tuple(n for n in TRAINING_FAMILIES if n not in not_drawn)
    held_out = tuple(n for n in HELD_OUT_FAMILIES if n not in not_drawn)
    if args.max_images < 1:
        print(f"error: --max-images must be at least 1, got {args.max_images}", file=sys.stderr)
        return 2
    root = args.data_root or data_root()
    edge = load_config(args.edge_config)
    flips = args.flips or edge.model.flips
    predict, info = load_predictor(args.model, args.device, flips)
    try:
        predict = upsampled_predictor(predict, args.upsample)
    except ValueError as exc:
        print(f"error: --upsample: {exc}", file=sys.stderr)
        return 2
    daemon = AlertDecider.of(float(info["threshold"]), edge)
    off = daemon.with_measure(straight_min_length_px=0.0)
    given = {"straight_min_length_px": args.straight_min_length_px, "straight_min_share": args.straight_min_share,
             "straight_support_ratio": args.straight_support_ratio,
             "smooth_line_tolerance_px": args.smooth_line_tolerance_px,
             "straight_grid_segment_px": args.straight_grid_segment_px}
    on = daemon.with_measure(**{k: v for k, v in given.items() if v is not None})  # the rest: the daemon's
    deciders = {"off": off, "on": on}
    families = list(FAMILIES)
    per_family: dict[str, Counts] = defaultdict(Counts)
    cracks = Counts()
    recall = {k: WidthRecall(WIDTH_EDGES_PX) for k in deciders}
    skipped: dict[str, int] = {}
    real: dict[str, Counts] = {}
    n_images: dict[str, int] = {}
    run_folder = args.model.parent if info.get("kind") == "checkpoint" else None  # as bench_generalization
    for s, name in enumerate(args.sources):
        images = load_source_split(root / name, args.split, info.get("train_config") or {}, args.max_images, run_folder)
        fam, crk, rec, skip, real[name] = score_source(predict, images, s, deciders, args.seed, families, not_drawn)
        n_images[name] = len(images)
        for key, counts in fam.items():
            per_family[key] += counts
        cracks += crk
        for k in deciders:
            recall[k] = recall[k] + rec[k]
        skipped[name] = skip
        if not args.no_progress:
            held = sum(fam[n].fired["off"] for n in held_out), sum(fam[n].fired["on"] for n in held_out)
            tiles = sum(fam[n].tiles for n in held_out)
            print(f"{name}: held-out structures alerted {held[0]}/{tiles} (check on: {held[1]}/{tiles}); "
                  f"crack tiles {crk.fired['off']}/{crk.tiles} (check on: {crk.fired['on']}/{crk.tiles})", flush=True)
    text = tables(per_family, cracks, recall, training, held_out) + real_table(real, n_images, args.split)
    notes = [
        f"Model: {args.model.relative_to(REPO) if args.model.is_relative_to(REPO) else args.model} "
        f"(threshold {off.threshold:.2f}); {args.split} split of {', '.join(args.sources)} (first {args.max_images} images each)."
        + (f" Every tile predicted enlarged x{args.upsample:g} (bilinear), decided at its own size."
           if args.upsample != 1.0 else "")
        + (f" Every tile predicted {flips} times, mirrored, and averaged (model.flips {flips})." if flips > 1 else ""),
        f"Straight check off: {off.describe()}. Straight check on: {on.describe()}.",
        "Structure tiles: each image's cracks inpainted (train.synth.crack_free_background; images whose cracks are "
        "too wide or too many to inpaint are skipped: " + ", ".join(f"{k} {v}" for k, v in skipped.items()) + "), "
        f"centre square of side min(512, H, W), one structure per family drawn with seed {args.seed}. "
        f"Held-out families: {', '.join(held_out)}; training families: {', '.join(training)}."
        + (f" Not drawn (--skip-families): {', '.join(sorted(not_drawn))}." if not_drawn else ""),
    ]
    publish(section_header("Joints are not cracks: straight structures and the straight check",
                           command_line(__file__, argv), notes) + text, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
