"""Inference tiles/s, latency and achieved GFLOP/s of the U-Net per backend and precision, against measured peak.

``python -m benchmarks.bench_inference`` (widths 16, 32, 64, deep head, 512 x 512 tiles)

For every width one model is built (untrained He-initialised weights: weights do not change the
speed of a dense convolution), exported with the project's exporter (``export.onnx.to_onnx``: sigmoid
inside, onnxslim) and quantized to INT8 QDQ with ``calibration.int8.quantize`` on real DeepCrack
training tiles. The variants, each at every batch size:

* CPU: torch eager FP32, onnxruntime FP32, onnxruntime INT8 (QDQ, u8s8), batches 1 and 4;
* CUDA, only where torch sees a GPU: torch eager FP32, torch FP16 autocast, torch FP16 replayed from a
  CUDA graph (``torch.cuda.graph``), onnxruntime CUDA EP FP32 where onnxruntime-gpu is installed;
  batches 1 and 8.

All variants of one width, plus large matmuls in torch (MKL) and onnxruntime (MLAS) -- the attainable
dense FP32 peak on the same threads -- are timed in interleaved rounds (benchmarks/common.py) on the same real DeepCrack test tiles.
Reported per variant: tiles/s (batch / median latency), latency p50/p99 per batch call, the
convolution FLOPs per tile counted from the conv shapes (``common.unet_conv_flops``), achieved GFLOP/s,
the fraction of the measured peak, the same per CPU-second of this process (robust to other jobs), and the speed ratio against torch eager FP32 at the same batch on
the same device. INT8 variants execute the same number of operations as integer ops: their GOP/s are
compared with the FP32 peak (so a fraction above 1 is possible and means the INT8 kernels beat
the FP32 peak). The table is printed and appended to benchmarks/RESULTS.md with command, machine, load.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.common import (
    DATA_HELP,
    Timings,
    add_results_args,
    command_line,
    conv_precision,
    dataset,
    interleaved_latencies,
    load_average,
    matmul_peak,
    ort_matmul_peak,
    publish,
    quantile,
    section_header,
    unet_conv_flops,
)


@dataclass
class Variant:
    """One timed configuration: ``run()`` does one inference call of ``batch`` tiles (synchronised)."""

    width: int
    label: str  # e.g. "ORT CPU int8"
    batch: int
    run: Callable[[], object]
    peak: str  # key of the peak it is compared with
    baseline: str  # label of the variant the speed ratio is taken against (same batch)
    integer_ops: bool = False

    @property
    def key(self) -> str:
        return f"w{self.width} {self.label} b{self.batch}"


@dataclass(frozen=True)
class Row:
    width: int
    label: str
    batch: int
    tiles_per_s: float
    p50_ms: float
    p99_ms: float
    calls: int
    gflop_per_tile: float
    gflops: float
    peak_fraction: float
    gflop_per_cpu_s: float
    cpu_peak_fraction: float
    vs_baseline: float
    integer_ops: bool


def build_models(width: int, head: str, size: int, folder: Path, data: Path, calib_tiles: int):
    """(torch UNet eval, metadata, fp32 .onnx path, int8 .onnx path, test tiles) for one width."""
    import torch

    from calibration.int8 import QuantSettings, quantize
    from contract.image_tiles import draw_tiles
    from contract.onnx_file import save_onnx_atomic
    from export.onnx import to_onnx
    from train.checkpoint import metadata_from_checkpoint
    from train.model import build_model

    torch.manual_seed(width)
    unet = build_model(width, head).eval()
    meta = metadata_from_checkpoint(
        {"model": unet.config.to_dict(), "input": {"size": size}, "data": {"name": "untrained (benchmark)"}}
    )
    fp32 = save_onnx_atomic(to_onnx(unet, meta), folder / f"w{width}.onnx")
    calib = draw_tiles(data, meta, max_tiles=calib_tiles, seed=0, split="train", progress=False)
    int8 = quantize(fp32, folder / f"w{width}.int8.onnx", calib.tiles, QuantSettings())
    return unet, meta, fp32, int8


def cpu_variants(width: int, unet, fp32: Path, int8: Path, tiles: np.ndarray, batches: list[int],
                 threads: int) -> tuple[list[Variant], float]:
    """torch eager FP32, ORT FP32 and ORT INT8 on the CPU; also max |delta p| ORT FP32 vs torch."""
    import torch

    from contract.metadata import INPUT_NAME
    from export.onnx import ProbabilityModel

    net = ProbabilityModel(unet).eval()
    sessions = {"ORT CPU fp32": cpu_session(fp32, threads), "ORT CPU int8": cpu_session(int8, threads)}
    variants: list[Variant] = []
    base = "torch CPU eager fp32"
    parity = 0.0
    for batch in batches:
        x_np = np.ascontiguousarray(tiles[:batch])
        x = torch.from_numpy(x_np)

        def eager(x: torch.Tensor = x) -> torch.Tensor:
            with torch.inference_mode():
                return net(x)

        variants.append(Variant(width, base, batch, eager, "cpu fp32", base))
        for label, session in sessions.items():
            run = (lambda s, a: (lambda: s.run(None, {INPUT_NAME: a})))(session, x_np)
            variants.append(Variant(width, label, batch, run, "cpu fp32", base, integer_ops="int8" in label))
        if batch == batches[0]:
            parity = float(np.abs(sessions["ORT CPU fp32"].run(None, {INPUT_NAME: x_np})[0] - eager().numpy()).max())
    return variants, parity


def cpu_session(path: Path, threads: int):
    """The onnxruntime session of the daemon's backend on the CPU provider, run bare (``session.run``)
    so the table measures the runtime itself; idle threads spin, as onnxruntime does by default."""
    from contract.backends.ort import OnnxRuntimeBackend

    return OnnxRuntimeBackend(path, providers=["CPUExecutionProvider"], intra_op_threads=threads,
                              allow_spinning=True, log_severity=3).session


def on_device(unet, device: str):
    """The probability model over a copy of ``unet`` on ``device``; the caller's module stays where it is
    (the CPU variants keep running it: moving it in place made the CPU eager variant fail on every
    CUDA machine with CPU input and CUDA weights)."""
    from export.onnx import ProbabilityModel

    return ProbabilityModel(copy.deepcopy(unet)).to(device).eval()


def cuda_variants(width: int, unet, fp32: Path, tiles: np.ndarray, batches: list[int]) -> list[Variant]:
    """torch FP32 / FP16 autocast / FP16 CUDA graph and ORT CUDA EP, when a GPU is present; else nothing.

    torch variants read a device-resident batch; the ORT CUDA EP variant is fed numpy, so it includes
    the host-device copies a plain ``session.run`` makes."""
    import torch

    if not torch.cuda.is_available():
        return []
    torch.backends.cudnn.benchmark = True
    net = on_device(unet, "cuda")
    fp32_math = "cuda " + conv_precision("off", "cuda", torch.backends.cudnn.allow_tf32)  # cuDNN: TF32 by default
    base = "torch CUDA eager fp32"
    variants: list[Variant] = []
    ort_cuda = _ort_cuda_session(fp32)
    for batch in batches:
        x = torch.from_numpy(np.ascontiguousarray(tiles[:batch])).to("cuda")

        def eager(x: torch.Tensor = x, half: bool = False) -> None:
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=half):
                net(x)
            torch.cuda.synchronize()

        variants.append(Variant(width, base, batch, eager, fp32_math, base))
        variants.append(Variant(width, "torch CUDA fp16 autocast", batch, lambda x=x: eager(x, True), "cuda fp16", base))
        variants.append(Variant(width, "torch CUDA graph fp16", batch, cuda_graph(net, x), "cuda fp16", base))
        if ort_cuda is not None:
            from contract.metadata import INPUT_NAME

            x_np = np.ascontiguousarray(tiles[:batch])
            variants.append(Variant(width, "ORT CUDA EP fp32", batch,
                                    lambda x_np=x_np: ort_cuda.run(None, {INPUT_NAME: x_np}), "cuda fp32", base))
    return variants


def _ort_cuda_session(path: Path):
    """An onnxruntime session on the CUDA execution provider, or None when onnxruntime-gpu is absent."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        print("onnxruntime has no CUDAExecutionProvider (pip install onnxruntime-gpu): ORT CUDA EP skipped")
        return None
    return ort.InferenceSession(str(path), providers=["CUDAExecutionProvider", "CPUExecutionProvider"])


def cuda_graph(net, x) -> Callable[[], None]:
    """One FP16-autocast forward of ``net`` on ``x`` captured in a CUDA graph; returns its replay.

    Warm-up on a side stream before capture, as the torch.cuda.graph documentation requires; the
    autocast weight cache is off because cached casts made during capture would be freed after it."""
    import torch

    static_in = x.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side), torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, cache_enabled=False):
        for _ in range(3):
            net(static_in)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, cache_enabled=False), torch.cuda.graph(graph):
        net(static_in)

    def replay() -> None:
        graph.replay()
        torch.cuda.synchronize()

    return replay


@dataclass(frozen=True)
class Peak:
    """A matmul timed among the variants; the best of a ``group`` is that group's peak."""

    name: str  # e.g. "torch.matmul 2048x2048 fp32"
    group: str  # "cpu fp32", "cuda fp32", "cuda tf32", "cuda fp16": what Variant.peak refers to
    run: Callable[[], object]
    flops: int


def peak_variants(cpu_n: int, cuda_n: int, threads: int) -> list[Peak]:
    """The matmuls whose GFLOP/s are the peaks: on the CPU torch.matmul (MKL) and onnxruntime's MatMul
    (MLAS), the better of the two being the peak; on CUDA torch FP32 (TF32 off: the ORT CUDA EP
    row's group), TF32 (torch's FP32 convolutions, cuDNN's default) and FP16."""
    import torch

    peaks = [
        Peak(f"torch.matmul {cpu_n}x{cpu_n} fp32", "cpu fp32", *matmul_peak(cpu_n, "cpu", "fp32")),
        Peak(f"onnxruntime MatMul {cpu_n}x{cpu_n} fp32", "cpu fp32", *ort_matmul_peak(cpu_n, threads)),
    ]
    if torch.cuda.is_available():  # one peak per precision a CUDA variant runs in (conv_precision)
        for precision in ("fp32", "tf32", "fp16"):
            peaks.append(Peak(f"torch.matmul {cuda_n}x{cuda_n} {precision}", f"cuda {precision}",
                              *matmul_peak(cuda_n, "cuda", precision)))
    return peaks


def peak_rates(peaks: list[Peak], timings: Timings) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    """(GFLOP/s of each peak matmul, best wall GFLOP/s per group, best GFLOP per CPU-second per group)."""
    each = {p.name: p.flops / quantile(timings.wall[p.name], 0.5) / 1e9 for p in peaks}
    wall: dict[str, float] = {}
    cpu: dict[str, float] = {}
    for p in peaks:
        wall[p.group] = max(wall.get(p.group, 0.0), each[p.name])
        cpu_s = quantile(timings.cpu[p.name], 0.5)
        cpu[p.group] = max(cpu.get(p.group, 0.0), p.flops / cpu_s / 1e9 if cpu_s > 0 else 0.0)
    return each, wall, cpu


def summarise(variants: list[Variant], timings: Timings, peak_wall: dict[str, float], peak_cpu: dict[str, float],
              flops_per_tile: dict[int, int]) -> list[Row]:
    """Rows of the table from the timed calls (tiles/s from the median latency: robust to load)."""
    p50 = {v.key: quantile(timings.wall[v.key], 0.5) for v in variants}
    rows = []
    for v in variants:
        flops = flops_per_tile[v.width]
        tiles_per_s = v.batch / p50[v.key]
        gflops = flops * tiles_per_s / 1e9
        cpu_s = quantile(timings.cpu[v.key], 0.5)
        on_cpu = v.peak.startswith("cpu") and cpu_s > 0
        gflop_per_cpu_s = flops * v.batch / cpu_s / 1e9 if on_cpu else float("nan")
        base = p50[f"w{v.width} {v.baseline} b{v.batch}"]
        rows.append(Row(
            v.width, v.label, v.batch, tiles_per_s, p50[v.key] * 1e3, quantile(timings.wall[v.key], 0.99) * 1e3,
            len(timings.wall[v.key]), flops / 1e9, gflops, gflops / peak_wall[v.peak],
            gflop_per_cpu_s, gflop_per_cpu_s / peak_cpu[v.peak] if on_cpu else float("nan"),
            base / p50[v.key], v.integer_ops,
        ))
    return rows


def format_table(rows: list[Row], peak_lines: list[str]) -> str:
    lines = [
        "| width | variant | batch | tiles/s | p50 ms/batch | p99 ms/batch | calls | GFLOP/tile | GFLOP/s | of peak "
        "| GFLOP/CPU-s | of peak (CPU time) | vs torch eager fp32 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        unit = " GOP/s (int8)" if r.integer_ops else ""
        cpu = "-" if math.isnan(r.gflop_per_cpu_s) else f"{r.gflop_per_cpu_s:.1f}"  # GPU rows: no CPU figure
        cpu_fraction = "-" if math.isnan(r.cpu_peak_fraction) else f"{r.cpu_peak_fraction:.0%}"
        lines.append(
            f"| {r.width} | {r.label} | {r.batch} | {r.tiles_per_s:.2f} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | {r.calls} | "
            f"{r.gflop_per_tile:.1f} | {r.gflops:.1f}{unit} | {r.peak_fraction:.0%} | {cpu} | {cpu_fraction} | "
            f"{r.vs_baseline:.2f}x |"
        )
    return "\n".join(lines + [""] + peak_lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_inference",
        description="Inference tiles/s, latency p50/p99 and achieved GFLOP/s vs the measured matmul peak, per "
        "backend and precision (torch eager, onnxruntime FP32/INT8; on CUDA: FP16, CUDA graphs, ORT CUDA EP), "
        "interleaved in one run; appends the table to benchmarks/RESULTS.md.",
    )
    p.add_argument("--widths", type=int, nargs="+", default=[16, 32, 64], help="model widths (channels of stage 1; 64 = paper) (default: 16 32 64)")
    p.add_argument("--head", choices=("deep", "shallow"), default="deep", help="prediction head (default: %(default)s)")
    p.add_argument("--size", type=int, default=512, help="tile side, px, multiple of 16 (default: %(default)s)")
    p.add_argument("--cpu-batches", type=int, nargs="+", default=[1, 4], help="tiles per call for CPU variants (default: 1 4)")
    p.add_argument("--gpu-batches", type=int, nargs="+", default=[1, 8], help="tiles per call for CUDA variants (default: 1 8)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="torch and onnxruntime intra-op threads, also used by the peak matmul (default: all logical CPUs, %(default)s)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved timed rounds (default: %(default)s)")
    p.add_argument("--wide-rounds", type=int, default=3,
                   help="timed rounds for widths >= 64, slow on CPUs (default: %(default)s)")
    p.add_argument("--round-seconds", type=float, default=2.0,
                   help="target seconds per variant per round; at least one call (default: %(default)s s)")
    p.add_argument("--calib-tiles", type=int, default=8,
                   help="DeepCrack train tiles calibrating INT8 (speed only; bench_precision.py measures accuracy) (default: %(default)s)")
    p.add_argument("--peak-n", type=int, default=2048, help="side of the CPU peak matmul (default: %(default)s)")
    p.add_argument("--gpu-peak-n", type=int, default=8192, help="side of the CUDA peak matmuls (default: %(default)s)")
    p.add_argument("--data", type=Path, default=dataset("deepcrack"),
      help="DeepCrack root with images/ and splits/ (default: " + DATA_HELP.format(name="deepcrack") + ")")
    add_results_args(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.size % 16:
        parser.error(f"--size must be a multiple of 16, got {args.size}")
    if not (args.data / "images").is_dir():
        parser.error(f"--data {args.data} has no images/ folder (DeepCrack tiles calibrate INT8 and feed the timing)")
    import torch

    from contract.image_tiles import draw_tiles

    torch.set_num_threads(args.threads)
    load_before = load_average()
    all_rows: list[Row] = []
    peak_lines: list[str] = []
    parities: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-inference-") as tmp:
        for width in args.widths:
            print(f"width {width}: exporting and quantizing ...", flush=True)
            unet, meta, fp32, int8 = build_models(width, args.head, args.size, Path(tmp), args.data, args.calib_tiles)
            n_tiles = max([*args.cpu_batches, *args.gpu_batches])
            tiles = draw_tiles(args.data, meta, max_tiles=n_tiles, seed=1, split="test", progress=False).tiles
            variants, parity = cpu_variants(width, unet, fp32, int8, tiles, args.cpu_batches, args.threads)
            parities.append(f"w{width} {parity:.1e}")
            variants += cuda_variants(width, unet, fp32, tiles, args.gpu_batches)
            peaks = peak_variants(args.peak_n, args.gpu_peak_n, args.threads)
            timed = {v.key: v.run for v in variants} | {p.name: p.run for p in peaks}
            rounds = args.wide_rounds if width >= 64 else args.rounds
            timings = interleaved_latencies(timed, rounds=rounds, round_seconds=args.round_seconds,
                                            progress=not args.no_progress)
            each, peak_wall, peak_cpu = peak_rates(peaks, timings)
            rows = summarise(variants, timings, peak_wall, peak_cpu, {width: unet_conv_flops(width, args.head, args.size)})
            width_peaks = [f"Peak during width {width}: " + ", ".join(f"{name} {value:.1f} GFLOP/s" for name, value in each.items())
                           + "; per CPU-second: " + ", ".join(f"{g} {v:.1f}" for g, v in peak_cpu.items()) + ".  "]
            print(format_table(rows, width_peaks))
            all_rows += rows
            peak_lines += width_peaks
            del unet, variants, timed
    gpu = "" if any("cuda" in line for line in peak_lines) else (
        " No CUDA device: the GPU variants (FP16, CUDA graphs, ORT CUDA EP) were not run.")
    notes = [
        f"Load: {load_before} before, {load_average()} after.",
        f"Tiles {args.size}×{args.size} from DeepCrack test images, head {args.head}, untrained (He-initialised) "
        f"weights (weights do not change dense conv speed); {args.threads} intra-op threads for torch, onnxruntime "
        f"and the peak matmuls; {args.rounds} interleaved rounds ({args.wide_rounds} for widths >= 64) of "
        f"~{args.round_seconds:g} s per variant per width (each width's variants and its peak matmuls interleaved).",
        "tiles/s = batch / median wall latency; GFLOP/tile = convolution FLOPs (2 per multiply-add) counted from "
        "the conv shapes; of peak = GFLOP/s / the best peak matmul of that width's rounds (CPU: the better of "
        "torch.matmul and onnxruntime MatMul); GFLOP/CPU-s and its fraction use this process's CPU time per call "
        "instead of wall time (less disturbed by other jobs on a shared machine). INT8 rows: the same operation "
        "count as integer ops (GOP/s) against the FP32 peak. INT8 = calibration.int8 defaults (QDQ, per-channel, "
        f"u8s8, MinMax on {args.calib_tiles} DeepCrack train tiles).",
        f"ORT FP32 vs torch max |delta p| on the timed tiles: {', '.join(parities)}.{gpu}",
    ]
    header = section_header(f"Inference throughput per backend and precision ({args.size}×{args.size} tiles)",
                            command_line(__file__, argv), notes)
    text = header + format_table(all_rows, peak_lines)
    publish(text, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
