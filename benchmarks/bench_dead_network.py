"""Does the paper's network learn? Seeds of the width-64 U-Net at the paper's settings, two initialisations.

``python -m benchmarks.bench_dead_network`` (5 seeds x 3 variants x 100 steps, 128-px crops, DeepCrack, CPU)

Each seed trains the paper's network (width 64, deep head, AELF, Adam lr 1e-4, batch 1) through
``train.loop.train_run`` three times, in one run of this program:

* **paper init**: He-normal everywhere, no gradient clipping (``--model-init he --clip-grad-norm 0``);
* **alive init without clipping**: ``--model-init alive --clip-grad-norm 0`` (the init's share of the fix);
* **shipped defaults**: ``--model-init alive --clip-grad-norm 1`` (train.model.init_head_alive).

A run **dies** when the dead-network watch stopped it (train.health: no gradient below the head for
20 steps in a row) or its validation prediction is one constant; it **learns** when it did not die and
its validation AP is above chance (more than 1.5 x the crack share of the validation images). A run
that is alive but not yet above chance says so. Every row prints as soon as its run ends, and the
table is appended to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import (
    DATA_HELP,
    add_results_args,
    command_line,
    dataset,
    load_average,
    publish,
    section_header,
)

VARIANTS = {"paper init": {"model_init": "he", "clip_grad_norm": 0.0},
            "alive init without clipping": {"model_init": "alive", "clip_grad_norm": 0.0},
            "shipped defaults": {"model_init": "alive", "clip_grad_norm": 1.0}}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_dead_network", description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=None, help=f"data set folder (default: {DATA_HELP.format(name='deepcrack')})")
    p.add_argument("--seeds", type=int, default=5, help="seeds 0 .. N-1 (default: %(default)s)")
    p.add_argument("--steps", type=int, default=100, help="optimizer steps per run (default: %(default)s)")
    p.add_argument("--size", type=int, default=128, help="training crop side, px (default: %(default)s)")
    p.add_argument("--width", type=int, default=64, help="U-Net width; 64 = the paper (default: %(default)s)")
    p.add_argument("--loss", default="aelf", help="training loss (default: %(default)s, the paper's)")
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (default: %(default)s, the paper's)")
    p.add_argument("--val-images", type=int, default=8, help="validation images per run (default: %(default)s)")
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help=f"comma list of {', '.join(VARIANTS)} (default: all)")
    add_results_args(p)
    return p


def run_one(data: Path, seed: int, variant: dict, args: argparse.Namespace, out: Path) -> dict:
    """Train one seed of one variant; what happened (learned, died at step, validation AP, crack share)."""
    from train.config import TrainConfig
    from train.health import CHANCE_AP_RATIO, DeadNetworkError, constant_prediction, validation_verdict
    from train.loop import train_run

    half = max(1, args.steps // 2)
    config = TrainConfig(data=str(data), width=args.width, size=args.size, batch=1, lr=args.lr, loss=args.loss,
                         epochs=2, max_steps_per_epoch=half, val_max_images=args.val_images,
                         test_max_images=args.val_images, overlays=0, seed=seed, device="cpu", workers=0,
                         progress=False, **variant)
    started = time.perf_counter()
    try:
        result = train_run(config, out)
    except DeadNetworkError as exc:
        return {"learned": False, "died": str(exc), "seconds": time.perf_counter() - started}
    val = result.best_val
    verdict = validation_verdict(val["ap"], val["crack_share"], val["prob_min"], val["prob_max"])
    constant = constant_prediction(val["prob_min"], val["prob_max"])
    return {"learned": verdict is None, "died": "constant validation prediction" if constant else "",
            "val_ap": val["ap"], "crack_share": val["crack_share"], "ods_f": val["ods_f"],
            "chance": CHANCE_AP_RATIO * val["crack_share"], "verdict": verdict or "",
            "seconds": time.perf_counter() - started}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    data = args.data or dataset("deepcrack")
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        print(f"error: --variants: unknown {unknown}; expected {', '.join(VARIANTS)}", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    load_before = load_average()
    rows = ["| variant | seed | died | learned | outcome | val AP | crack share | val ODS F | s |",
            "|---|---|---|---|---|---|---|---|---|"]
    learned = {n: 0 for n in names}
    died = {n: 0 for n in names}
    with tempfile.TemporaryDirectory(prefix="dead-network-") as tmp:
        for seed in range(args.seeds):
            for name in names:
                r = run_one(data, seed, VARIANTS[name], args, Path(tmp) / f"{name.replace(' ', '_')}-{seed}")
                learned[name] += r["learned"]
                died[name] += bool(r["died"])
                outcome = ("died: " + r["died"].split(":")[0].replace("the network died at ", "")) if r["died"] else (
                    "learns" if r["learned"] else "not dead, " + r["verdict"])
                row = (f"| {name} | {seed} | {'yes' if r['died'] else 'no'} | {'yes' if r['learned'] else 'no'} | {outcome} | "
                       f"{r.get('val_ap', float('nan')):.3f} | {r.get('crack_share', float('nan')):.3f} | "
                       f"{r.get('ods_f', float('nan')):.3f} | {r['seconds']:.0f} |")
                rows.append(row)
                print(row, flush=True)
    summary = ", ".join(f"{name}: {died[name]} of {args.seeds} seeds die, {learned[name]} learn (above chance "
                        f"after {args.steps} steps)" for name in names)
    print(summary, flush=True)
    notes = [f"Load: {load_before} before, {load_average()} after.",
             f"Protocol: width {args.width}, deep head, {args.loss}, Adam lr {args.lr:g}, batch 1, {args.size}-px "
             f"augmented crops of {data.name}, {args.steps} steps, validation on {args.val_images} images (whole images).",
             f"Headline: {summary}."]
    publish(section_header("Dead-network check: the paper's network at its settings, per seed",
                           command_line(__file__, argv), notes) + "\n".join(rows) + "\n", args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
