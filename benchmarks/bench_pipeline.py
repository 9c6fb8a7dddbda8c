"""Edge pipeline overhead and memory: the daemon's end-to-end tiles/s vs the bare backend's, side by side.

1. Builds an MJPG video from real DeepCrack test images (cv2.VideoWriter, in a temp dir).
2. Bare backend: the same tiles (tiled + preprocessed up front, outside the timing) through
   ``backend.infer`` in batches of ``--batch``: tiles/s of inference alone.
3. Daemon: ``edge.pipeline.Pipeline`` on the video file (decode, tile, preprocess, infer, stitch,
   measure, alert policy, LogPublisher to /dev/null): tiles/s end to end. Bare and daemon runs
   alternate ``--repeats`` times; the median of each is compared. Target: ratio >= 0.9.
4. Memory: resident set size (/proc/self/statm) sampled while the daemon runs ``--frames`` frames
   of the looping video; after a 10 % warm-up, max and min must stay within ±5 % of their mean.

Appends a table with the command, machine and date to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from benchmarks.common import DATA_HELP, add_results_args, command_line, dataset, machine, publish
from contract.backends import load_backend
from contract.preprocess import to_model_input
from contract.tiling import extract_tiles, tile_grid
from edge.config import SourceConfig, load_config
from edge.pipeline import Pipeline
from edge.publish import LogPublisher
from edge.sources import open_source

REPO = Path(__file__).resolve().parents[1]


def rss_mb() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def make_video(folder: Path, data: Path, n_images: int) -> tuple[Path, int]:
    stems = (data / "splits" / "test.txt").read_text().split()[:n_images]
    frames = [cv2.imread(str(data / "images" / f"{s}.jpg")) for s in stems]
    frames = [f for f in frames if f is not None and f.shape[:2] == frames[0].shape[:2]]
    h, w = frames[0].shape[:2]
    path = folder / "deepcrack.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (w, h))
    for f in frames:
        writer.write(f)
    writer.release()
    return path, len(frames)


def config_for(args: argparse.Namespace, video: Path, tmp: Path, loop: bool = False):
    return load_config(None, [
        f"source.uri='{video}'", f"model.path='{args.model}'", f"model.batch_size={args.batch}",
        f"model.intra_op_threads={args.threads}", f"tiling.overlap={args.overlap}", f"source.loop={str(loop).lower()}",
        "alerts.snapshot_dir=''", "alerts.cooldown_s=3600", f"alerts.state_path='{tmp / 'state.json'}'",
        "stats_interval_s=3600", "device_id=bench",
    ])


def bare_tiles_per_s(backend, video: Path, meta, tile: int, overlap: int, batch: int) -> tuple[float, int]:
    source = open_source(SourceConfig(uri=str(video)))
    inputs = []
    for frame in source:
        grid = tile_grid(*frame.image.shape[:2], tile, overlap)
        inputs.append(to_model_input(extract_tiles(frame.image, grid), meta))
    x = np.concatenate(inputs)
    t0 = time.perf_counter()
    for i in range(0, len(x), batch):
        backend.infer(x[i : i + batch])
    return len(x) / (time.perf_counter() - t0), len(x)


def daemon_tiles_per_s(backend, config) -> tuple[float, int]:
    source = open_source(config.source)
    with open(os.devnull, "w") as devnull:
        pipeline = Pipeline(config, source=source, backend=backend, publisher=LogPublisher(stream=devnull))
        t0 = time.perf_counter()
        pipeline.run()
        elapsed = time.perf_counter() - t0
    return pipeline.stats.tiles / elapsed, pipeline.stats.tiles


def memory_run(backend, config, frames: int) -> list[tuple[int, float]]:
    source = open_source(config.source.model_copy(update={"loop": True}))
    stop = threading.Event()
    samples: list[tuple[int, float]] = []
    every = max(1, frames // 50)
    bar = tqdm(total=frames, desc="memory run", unit="frame")

    def on_frame(outcome) -> None:
        bar.update(1)
        if outcome.frame.index % every == 0:
            samples.append((outcome.frame.index, rss_mb()))
        if outcome.frame.index + 1 >= frames:
            stop.set()

    with open(os.devnull, "w") as devnull:
        pipeline = Pipeline(config, source=source, backend=backend, publisher=LogPublisher(stream=devnull),
                            on_frame=on_frame)
        pipeline.run(stop)
    bar.close()
    return samples


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_pipeline", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=REPO / "edge" / "assets" / "demo_model.onnx",
                   help="ONNX model (default: edge/assets/demo_model.onnx)")
    p.add_argument("--data", type=Path, default=dataset("deepcrack"),
                   help="DeepCrack root whose test images make the video (default: " + DATA_HELP.format(name="deepcrack") + ")")
    p.add_argument("--images", type=int, default=100,
                   help="DeepCrack test images in the video; short passes (24 images = 144 tiles, ~3 s) are dominated "
                        "by the daemon's fixed start/drain time and read ~0.88 (default: %(default)s)")
    p.add_argument("--batch", type=int, default=4, help="tiles per backend call (default: %(default)s)")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads, 0 = all (default: %(default)s)")
    p.add_argument("--ort-allow-spinning", action="store_true",
                   help="let onnxruntime threads busy-wait (the daemon's model.ort_allow_spinning; default: off)")
    p.add_argument("--overlap", type=int, default=64, help="tile overlap, px (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=3, help="alternating bare/daemon runs (default: %(default)s)")
    p.add_argument("--frames", type=int, default=10_000, help="frames of the memory run (default: %(default)s)")
    add_results_args(p)
    args = p.parse_args(argv)
    if not (args.data / "splits" / "test.txt").is_file():
        p.error(f"--data {args.data} has no splits/test.txt (DeepCrack test images make the benchmark video)")
    if not args.model.is_file():
        p.error(f"--model {args.model} not found")
    backend = load_backend(args.model, batch_size=args.batch, intra_op_threads=args.threads or None,
                           allow_spinning=args.ort_allow_spinning)
    tile = backend.input_shape[2]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        video, n_frames = make_video(tmp, args.data, args.images)
        config = config_for(args, video, tmp)
        bare, daemon = [], []
        for _ in tqdm(range(args.repeats), desc="bare vs daemon", unit="round"):
            rate, n_tiles = bare_tiles_per_s(backend, video, backend.metadata, tile, args.overlap, args.batch)
            bare.append(rate)
            rate, _ = daemon_tiles_per_s(backend, config)
            daemon.append(rate)
        samples = memory_run(backend, config_for(args, video, tmp, loop=True), args.frames)
    bare_med, daemon_med = statistics.median(bare), statistics.median(daemon)
    ratio = daemon_med / bare_med
    warm = [mb for i, mb in samples if i >= args.frames // 10] or [mb for _, mb in samples]
    mean = statistics.mean(warm)
    spread = max(abs(max(warm) - mean), abs(min(warm) - mean)) / mean * 100
    command = command_line(__file__, argv)
    meta = backend.metadata
    table = (
        f"\n\n## Edge pipeline overhead and memory (onnxruntime CPU) — {date.today().isoformat()}\n\n"
        f"Command: `{command}`  \nMachine: {machine()}  \n"
        f"Model: {args.model.name} (width {meta.width}, {meta.precision}, tile {tile}); video: {n_frames} DeepCrack "
        f"test frames 544×384, MJPG; {n_tiles} tiles per pass (overlap {args.overlap}), batch {args.batch}; "
        f"median of {args.repeats} alternating runs.\n\n"
        "| measure | value |\n|---|---|\n"
        f"| bare backend tiles/s | {bare_med:.1f} (runs: {', '.join(f'{r:.1f}' for r in bare)}) |\n"
        f"| daemon end-to-end tiles/s | {daemon_med:.1f} (runs: {', '.join(f'{r:.1f}' for r in daemon)}) |\n"
        f"| ratio daemon / bare (target >= 0.9) | {ratio:.3f} |\n"
        f"| RSS over {args.frames} frames after 10 % warm-up: min / mean / max MB | "
        f"{min(warm):.1f} / {mean:.1f} / {max(warm):.1f} |\n"
        f"| RSS deviation from mean (target <= 5 %) | {spread:.2f} % |\n"
    )
    publish(table, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
