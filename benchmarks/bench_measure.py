"""What the crack measurement costs per frame, and what its straight check and faint-line support add.

``python -m benchmarks.bench_measure`` (the shipped model, DeepCrack and Crack500 test images, 20 each)

The model's probability maps of real test images are computed first (through the daemon's tiler, not
timed). Then ``edge.measure.measure_cracks`` runs on every map in five variants, timed side by side in
interleaved rounds (``benchmarks.common.interleaved_latencies``): the daemon's defaults (straight check with
its faint-line support and its smooth-line part), the check without the smooth-line part
(``smooth_line_tolerance_px = 0``: straight segments only), the check without its joint-grid part
(``straight_grid_segment_px = 0``), the straight check judging each piece alone (``straight_support_ratio = 1``: no
second, fainter mask to label and skeletonize), and no straight check (``straight_min_length_px = 0``). The
same variants run on full-HD frames (1920 x 1080, a vehicle camera's frame) tiled from those maps (cracks all over the
frame: the worst case) and on full-HD frames holding one map each in a corner (a few cracks in a large frame).
Reports milliseconds per frame (wall and CPU time of this process) and each variant's ratio to the one
without the check.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from benchmarks.bench_generalization import load_source_split
from benchmarks.common import (
    add_results_args,
    command_line,
    data_root,
    interleaved_latencies,
    publish,
    section_header,
)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO / "edge" / "assets" / "demo_model.onnx"
FULL_HD = (1080, 1920)
VARIANTS = {  # name -> measure_cracks keyword overrides of the daemon's defaults
    "daemon defaults (check + faint-line support + smooth lines)": {},
    "straight lines only (no smooth-line part)": {"smooth_line_tolerance_px": 0.0},
    "no joint-grid part": {"straight_grid_segment_px": 0.0},
    "check, each piece alone (support ratio 1)": {"straight_support_ratio": 1.0},
    "no straight check": {"straight_min_length_px": 0.0},
}
BASELINE = "no straight check"


def mosaic(maps: Sequence[np.ndarray], shape: tuple[int, int] = FULL_HD, *, fill: bool = True) -> np.ndarray:
    """A frame of ``shape`` filled row by row with the given maps (cycled, each cut to fit); ``fill=False``:
    only the first map, in the top-left corner, the rest of the frame 0."""
    if not maps:
        raise ValueError("mosaic needs at least one probability map")
    out = np.zeros(shape, np.float32)
    if not fill:
        h, w = min(maps[0].shape[0], shape[0]), min(maps[0].shape[1], shape[1])
        out[:h, :w] = maps[0][:h, :w]
        return out
    y, x, row_h, i = 0, 0, 0, 0
    while y < shape[0]:
        m = maps[i % len(maps)]
        i += 1
        h, w = min(m.shape[0], shape[0] - y), min(m.shape[1], shape[1] - x)
        out[y : y + h, x : x + w] = m[:h, :w]
        row_h = max(row_h, h)
        x += w
        if x >= shape[1]:
            x, y, row_h = 0, y + row_h, 0
    return out


def variant_calls(frames: Sequence[np.ndarray], threshold: float) -> dict[str, Callable[[], object]]:
    """One callable per variant that measures every frame once."""
    from edge.measure import measure_cracks

    def call(overrides: dict) -> Callable[[], object]:
        return lambda: [measure_cracks(f, threshold, **overrides) for f in frames]

    return {name: call(overrides) for name, overrides in VARIANTS.items()}


def table(rows: dict[str, tuple[int, dict[str, list[float]], dict[str, list[float]]]]) -> str:
    """Markdown: ms per frame (median over calls, wall / CPU) and the ratio to no check, per frame set."""
    lines = ["| frames | variant | ms per frame, wall | ms per frame, CPU | wall vs no check |", "|---|---|---:|---:|---:|"]
    for label, (n, wall, cpu) in rows.items():
        base = statistics.median(wall[BASELINE])
        for name in VARIANTS:
            w, c = statistics.median(wall[name]), statistics.median(cpu[name])
            lines.append(f"| {label} | {name} | {1e3 * w / n:.1f} | {1e3 * c / n:.1f} | {w / base:.2f} |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_measure", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    p = parser.add_argument
    p("--model", type=Path, default=DEFAULT_MODEL, help="model whose probability maps are measured (default: the shipped one)")
    p("--sources", default="deepcrack,crack500", help="comma list of data sets under --data-root (default: %(default)s)")
    p("--data-root", type=Path, default=None, help="folder of the data sets (default: $CRACK_DATA_ROOT, ../shared/data)")
    p("--max-images", type=int, default=20, help="test images per data set (default: %(default)s)")
    p("--rounds", type=int, default=5, help="interleaved timing rounds (default: %(default)s)")
    p("--round-seconds", type=float, default=2.0, help="seconds of calls per variant per round (default: %(default)s)")
    p("--no-progress", dest="progress", action="store_false", help="no progress bars")
    add_results_args(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.max_images < 1 or args.rounds < 1 or args.round_seconds <= 0:
        print("bench_measure: --max-images and --rounds must be >= 1, --round-seconds > 0", file=sys.stderr)
        return 2
    from train.evaluate import EvaluateError, load_predictor

    root = args.data_root or data_root()
    try:
        predict, info = load_predictor(args.model)
    except (EvaluateError, FileNotFoundError, ValueError) as exc:
        print(f"bench_measure: cannot load --model {args.model}: {exc}", file=sys.stderr)
        return 2
    threshold = float(info["threshold"])
    maps = []
    for name in [s.strip() for s in args.sources.split(",") if s.strip()]:
        folder = root / name
        if not (folder / "images").is_dir():
            print(f"bench_measure: {folder}/images not found (set --data-root)", file=sys.stderr)
            return 2
        loaded = load_source_split(folder, "test", info.get("train_config") or {}, args.max_images)
        maps += [predict(image) for image in loaded.images]
    print(f"{len(maps)} probability maps, threshold {threshold:.2f}", flush=True)
    frame_sets = {
        f"{len(maps)} test images (own size)": maps,
        "6 full-HD frames tiled from them (cracks everywhere)": [mosaic(maps[i:] + maps[:i]) for i in range(0, 42, 7)],
        "6 full-HD frames, one test image's map each (the rest crack-free)": [
            mosaic([maps[i % len(maps)]], fill=False) for i in range(0, 42, 7)],
    }
    rows = {}
    for label, frames in frame_sets.items():
        timings = interleaved_latencies(variant_calls(frames, threshold), rounds=args.rounds,
                                        round_seconds=args.round_seconds, progress=args.progress)
        rows[label] = (len(frames), timings.wall, timings.cpu)
        print(table({label: rows[label]}), flush=True)  # each frame set's figures as soon as they are known
    command = command_line(__file__, argv)
    text = section_header("Crack measurement per frame: the straight check and its faint-line support", command,
                          [f"Model: {args.model.name}, threshold {threshold:.2f}; sources {args.sources}, "
                           f"first {args.max_images} test images each; {args.rounds} interleaved rounds."])
    publish(text + table(rows) + "\n", args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
