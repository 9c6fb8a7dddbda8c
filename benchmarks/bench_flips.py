"""What flip averaging costs: tiles/s of the shipped FP32 and INT8 models at ``model.flips`` 1, 2 and 4.

``python -m benchmarks.bench_flips`` (defaults: edge/assets/demo_model.onnx and demo_model.int8.onnx)

Every variant is a backend from :func:`contract.backends.load_backend` (onnxruntime, CPU) with
``flips`` = 1, 2 or 4 (:mod:`contract.backends.flips`), timed on the same real DeepCrack test tiles
(``contract.image_tiles.draw_tiles``: cut as the daemon cuts frames) in interleaved rounds (:func:`benchmarks.common.interleaved_latencies`),
so the ratios to one pass are measured side by side. Reported: input tiles/s (a tile predicted
``flips`` times counts once), the ratio to the same model's single pass, and full-HD frames/s (a
1920 x 1080 frame is cut into the tiles of :func:`contract.tiling.tile_grid` at the model's tile).
What flip averaging buys is measured by ``bench_joints --flips`` and ``train.evaluate --flips``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from benchmarks.common import (
    DATA_HELP,
    add_results_args,
    command_line,
    dataset,
    interleaved_latencies,
    load_average,
    publish,
    quantile,
    section_header,
)
from contract.backends.flips import FLIP_AXES

REPO = Path(__file__).resolve().parents[1]
FLIPS = tuple(FLIP_AXES)  # 1, 2, 4
ASSETS = REPO / "edge" / "assets"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_flips", description=__doc__.split("\n")[0])
    p.add_argument("--models", type=Path, nargs="+",
                   default=[ASSETS / "demo_model.onnx", ASSETS / "demo_model.int8.onnx"],
                   help="ONNX models timed side by side (default: the shipped FP32 and INT8 models)")
    p.add_argument("--data", type=Path, default=dataset("deepcrack"),
                   help="DeepCrack root whose test images give the tiles (default: " + DATA_HELP.format(name="deepcrack") + ")")
    p.add_argument("--tiles", type=int, default=8, help="real tiles cycled through the timed calls (default: %(default)s)")
    p.add_argument("--batch", type=int, default=4, help="tiles per backend call, the daemon's model.batch_size (default: %(default)s)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="onnxruntime intra-op threads (default: all cores, %(default)s)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved timed rounds (default: %(default)s)")
    p.add_argument("--round-seconds", type=float, default=3.0, help="seconds per variant per round (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_results_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from contract.backends import load_backend
    from contract.backends.flips import with_flips
    from contract.image_tiles import draw_tiles
    from contract.tiling import tile_grid

    for model in args.models:
        if not model.is_file():
            print(f"error: --models: {model} does not exist", file=sys.stderr)
            return 2
    if not (args.data / "splits" / "test.txt").is_file():
        print(f"error: --data {args.data} has no splits/test.txt", file=sys.stderr)
        return 2
    if args.tiles < args.batch or args.batch < 1:
        print(f"error: --tiles ({args.tiles}) must be at least --batch ({args.batch}) >= 1", file=sys.stderr)
        return 2
    variants, labels, per_frame = {}, {}, {}
    for model in args.models:
        single = load_backend(model, "onnxruntime", batch_size=args.batch, intra_op_threads=args.threads,
                              providers=["CPUExecutionProvider"])
        batches = draw_tiles(args.data, single.metadata, max_tiles=args.tiles, split="test", progress=False).tiles
        per_frame[model] = (len(tile_grid(1080, 1920, single.input_shape[2])), batches)
        for flips in FLIPS:
            backend = with_flips(single, flips)  # one session per model, wrapped for each pass count
            state = {"i": 0}

            def call(backend=backend, batches=batches, state=state) -> None:
                i = state["i"]
                backend.infer(batches[i : i + args.batch])
                state["i"] = (i + args.batch) % (len(batches) - args.batch + 1)

            key = f"{model.name} x{flips}"
            variants[key], labels[key] = call, (model, backend.precision, flips)
    timings = interleaved_latencies(variants, rounds=args.rounds, round_seconds=args.round_seconds,
                                    progress=not args.no_progress)
    rows = ["| model | precision | flips | tiles/s | vs one pass | full-HD frames/s | calls |", "|---|---|---:|---:|---:|---:|---:|"]
    single: dict[Path, float] = {}
    for key, (model, precision, flips) in labels.items():
        rate = args.batch / quantile(timings.wall[key], 0.5)
        single.setdefault(model, rate)
        frame_tiles = per_frame[model][0]
        rows.append(f"| {model.name} | {precision} | {flips} | {rate:.2f} | {rate / single[model]:.2f}x | "
                    f"{rate / frame_tiles:.2f} | {len(timings.wall[key])} |")
        print(f"{model.name} flips {flips}: {rate:.2f} tiles/s ({rate / single[model]:.2f}x one pass)", flush=True)
    notes = [
        f"{load_average().capitalize()} at the end. onnxruntime CPU, {args.threads} intra-op threads, "
        f"batch {args.batch}, {args.tiles} real DeepCrack test tiles cycled; median of {args.rounds} interleaved "
        f"rounds of {args.round_seconds:g} s per variant. A full-HD frame is "
        + ", ".join(sorted({f"{n} tiles of {batches.shape[2]} px" for n, batches in per_frame.values()})) + ".",
    ]
    publish(section_header("What flip averaging costs: tiles/s at model.flips 1, 2, 4", command_line(__file__, argv),
                           notes) + "\n".join(rows) + "\n", args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
