"""Training throughput of the real training step at the paper's protocol, and the projected time of a full run.

``python -m benchmarks.bench_train`` (widths 8, 16, 64; batch 1, 512 x 512 crops, Adam, AELF)

Each variant (a width, and on CUDA an AMP mode) is the project's own training step:
``train.loop.train_one_epoch`` over ``train.data.TrainCrops`` of real DeepCrack training images
(augmented random crops, as ``python -m train.run``), ``train.losses.build_loss`` (AELF, eqs. 6-9),
``torch.optim.Adam`` and the GradScaler the loop uses. After ``--warmup-steps`` untimed steps per
variant, ``--rounds`` rounds run ``--steps`` steps of every variant in turn (the order rotating each
round, so load from other processes falls on all variants alike), with a large ``torch.matmul``
(and, on the CPU, an onnxruntime MatMul) timed in the same rounds as the machine's attainable peak in
the precision each variant's convolutions run in (FP32; on CUDA TF32, bf16 or fp16: common.conv_precision).
Reported: images/s (median over
rounds), seconds per step, seconds per epoch of the training split, the projected time of
``--epochs`` epochs (training steps only: per-epoch validation and the final test are extra), an
estimate of achieved GFLOP/s (3 x the forward convolution FLOPs per image: forward, input gradients,
weight gradients) and its fraction of that peak (on the CPU the better of torch.matmul and onnxruntime MatMul),
the same per CPU-second of this process (less disturbed by other jobs on a shared machine), and each
variant's speed against the first.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import (
    DATA_HELP,
    add_results_args,
    command_line,
    conv_precision,
    dataset,
    load_average,
    matmul_peak,
    ort_matmul_peak,
    publish,
    quantile,
    section_header,
    time_call,
    unet_conv_flops,
)

TRAIN_FLOPS_PER_FORWARD = 3  # forward + gradient w.r.t. inputs + gradient w.r.t. weights, each ~ one forward


@dataclass
class TrainVariant:
    """One model being trained: its own weights, Adam state and GradScaler (so variants do not interact)."""

    width: int
    amp: str  # "off", "bf16", "fp16"
    model: object
    optimizer: object
    scaler: object
    amp_dtype: object
    steps: int
    seconds_per_image: list[float]
    cpu_seconds_per_image: list[float]

    @property
    def label(self) -> str:
        return f"w{self.width} {'fp32' if self.amp == 'off' else 'AMP ' + self.amp}"


def build_variant(width: int, amp: str, args: argparse.Namespace, device) -> TrainVariant:
    """A fresh model, Adam and GradScaler exactly as ``train.loop`` builds them for ``width`` / ``amp``."""
    import torch

    from train.loop import amp_dtype_for
    from train.model import build_model

    torch.manual_seed(0)
    model = build_model(width, args.head).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    amp_dtype = amp_dtype_for(amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    steps = args.wide_steps if width >= 64 else args.steps
    return TrainVariant(width, amp, model, optimizer, scaler, amp_dtype, steps, [], [])


def make_loader(dataset, batch: int, workers: int, seed: int, device):
    """The loader ``train.loop`` makes for one epoch on one process: random order from a seeded generator."""
    import torch
    from torch.utils.data import DataLoader, RandomSampler

    from train.data import seed_worker

    sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))
    return DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=workers,
                      pin_memory=device.type == "cuda", worker_init_fn=seed_worker)


def train_steps(variant: TrainVariant, dataset, loss_fn, args: argparse.Namespace, device, epoch: int,
                steps: int) -> tuple[float, float]:
    """Run ``steps`` real training steps (``train.loop.train_one_epoch``); returns (wall s, this process's CPU s)."""
    import torch

    from train.loop import train_one_epoch

    dataset.set_epoch(epoch)
    loader = make_loader(dataset, args.batch, args.workers, 1000 * epoch + variant.width, device)
    start, cpu_start = time.perf_counter(), time.process_time()
    _, done = train_one_epoch(variant.model, loader, loss_fn, variant.optimizer, variant.scaler, device,
                              variant.amp_dtype, epoch=epoch, max_steps=steps)
    if device.type == "cuda":
        torch.cuda.synchronize()
    if done != steps:
        raise RuntimeError(f"ran {done} steps, expected {steps}: load at least {steps * args.batch} images (--images)")
    return time.perf_counter() - start, time.process_time() - cpu_start


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_train",
        description="Training images/s, s/epoch and projected full-run time of the real training step "
        "(TrainCrops + AELF + Adam via train.loop.train_one_epoch) per width (and AMP mode on CUDA), "
        "interleaved in one run with the matmul peak; appends the table to benchmarks/RESULTS.md.",
    )
    p.add_argument("--widths", type=int, nargs="+", default=[8, 16, 64], help="model widths (64 = paper) (default: 8 16 64)")
    p.add_argument("--head", choices=("deep", "shallow"), default="deep", help="prediction head (default: %(default)s)")
    p.add_argument("--size", type=int, default=512, help="training crop side, px, multiple of 16 (default: %(default)s, the paper's)")
    p.add_argument("--batch", type=int, default=1, help="images per step (default: %(default)s, the paper's)")
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (default: %(default)g, the paper's)")
    p.add_argument("--loss", default="aelf", help="loss name from train.losses (default: %(default)s)")
    p.add_argument("--gamma1", type=float, default=0.0, help="AELF gamma1 (speed does not depend on it) (default: %(default)s)")
    p.add_argument("--gamma2", type=float, default=0.0, help="AELF gamma2 (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N (default: %(default)s)")
    p.add_argument("--amp", nargs="+", default=None, choices=("off", "bf16", "fp16"),
                   help="AMP modes to compare (default: off on the CPU; off bf16 fp16 on CUDA)")
    p.add_argument("--steps", type=int, default=8, help="timed steps per variant per round (default: %(default)s)")
    p.add_argument("--wide-steps", type=int, default=2, help="timed steps per round for widths >= 64 (default: %(default)s)")
    p.add_argument("--warmup-steps", type=int, default=2, help="untimed steps per variant first (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=4, help="interleaved timed rounds (default: %(default)s)")
    p.add_argument("--images", type=int, default=16, help="DeepCrack training images loaded for the crops (default: %(default)s)")
    p.add_argument("--workers", type=int, default=0,
                   help="DataLoader worker processes (default: %(default)s: on a 2-core CPU workers take cores from the step)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="torch intra-op threads, also the peak matmul's (default: all logical CPUs, %(default)s)")
    p.add_argument("--epochs", type=int, default=30, help="epochs of the projected run (default: %(default)s, the paper's)")
    p.add_argument("--epoch-images", type=int, default=None,
                   help="training images per epoch for the projection (default: the lines of <data>/splits/train.txt, 300 for DeepCrack)")
    p.add_argument("--peak-n", type=int, default=2048, help="side of the peak matmul (default: %(default)s; 8192 on CUDA)")
    p.add_argument("--data", type=Path, default=dataset("deepcrack"),
      help="data set root with images/, masks/, splits/train.txt (default: " + DATA_HELP.format(name="deepcrack") + ")")
    add_results_args(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def train_peaks(precisions: list[str], n: int, device: str, threads: int) -> dict[str, tuple]:
    """The matmuls timed as peaks, name -> (call, FLOPs, precision): one torch.matmul per precision the
    variants' convolutions run in, and on the CPU also onnxruntime's FP32 MatMul (MKL's path on AMD
    CPUs is narrower than MLAS's: the better of the two is the FP32 peak, common.ort_matmul_peak)."""
    peaks = {f"torch.matmul {n}x{n} {p}": (*matmul_peak(n, device, p), p) for p in precisions}
    if device == "cpu" and "fp32" in precisions:
        peaks[f"onnxruntime MatMul {n}x{n} fp32"] = (*ort_matmul_peak(n, threads), "fp32")
    return peaks


def best_per_precision(peaks: dict[str, tuple], rates: dict[str, float]) -> dict[str, float]:
    """The best rate among the peaks of each precision."""
    best: dict[str, float] = {}
    for name, (_, _, precision) in peaks.items():
        best[precision] = max(best.get(precision, 0.0), rates[name])
    return best


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.size % 16:
        parser.error(f"--size must be a multiple of 16, got {args.size}")
    split_file = args.data / "splits" / "train.txt"
    if not split_file.is_file():
        parser.error(f"--data {args.data} has no splits/train.txt (the training images come from it)")
    import torch
    from tqdm import tqdm

    from train.config import TrainConfig
    from train.data import TrainCrops, list_samples, load_images, read_split_file
    from train.losses import build_loss

    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    amps = args.amp or (["off", "bf16", "fp16"] if device.type == "cuda" else ["off"])
    config = TrainConfig(data=str(args.data), loss=args.loss, gamma1=args.gamma1, gamma2=args.gamma2, size=args.size,
                         batch=args.batch, lr=args.lr, workers=args.workers)  # validates the options like train.run
    samples = list_samples(args.data)
    stems = read_split_file(split_file, samples)
    epoch_images = args.epoch_images or len(stems)
    data = load_images(samples, stems[: args.images], progress=not args.no_progress, desc="loading train images")
    dataset = TrainCrops(data, args.size, config.augment_config(), seed=config.seed)
    loss_fn = build_loss(config.loss, **config.loss_kwargs())
    load_before = load_average()

    variants = [build_variant(w, amp, args, device) for w in args.widths for amp in amps]
    peak_n = args.peak_n if device.type == "cpu" else max(args.peak_n, 8192)
    precision = {v.label: conv_precision(v.amp, device.type, torch.backends.cudnn.allow_tf32) for v in variants}
    peaks = train_peaks(sorted(set(precision.values())), peak_n, str(device), args.threads)
    peak_wall: dict[str, list[float]] = {name: [] for name in peaks}
    peak_cpu: dict[str, list[float]] = {name: [] for name in peaks}
    for v in tqdm(variants, desc="warm-up", unit="variant", disable=args.no_progress, leave=False):
        train_steps(v, dataset, loss_fn, args, device, epoch=0, steps=args.warmup_steps)
    for run, _, _ in peaks.values():
        time_call(run)
    for r in tqdm(range(args.rounds), desc="timed rounds", unit="round", disable=args.no_progress, leave=False):
        shift = r % len(variants)
        for v in variants[shift:] + variants[:shift]:
            wall, cpu = train_steps(v, dataset, loss_fn, args, device, epoch=r + 1, steps=v.steps)
            v.seconds_per_image.append(wall / (v.steps * args.batch))
            v.cpu_seconds_per_image.append(cpu / (v.steps * args.batch))
        for name, (run, _, _) in peaks.items():
            deadline = time.perf_counter() + 0.5
            while time.perf_counter() < deadline:  # ~0.5 s of each peak matmul per round, among the training steps
                cpu_start = time.process_time()
                peak_wall[name].append(time_call(run))
                peak_cpu[name].append(time.process_time() - cpu_start)
    each = {name: flops / quantile(peak_wall[name], 0.5) / 1e9 for name, (_, flops, _) in peaks.items()}
    peak_of = best_per_precision(peaks, each)
    peak_per_cpu_s = best_per_precision(
        peaks, {name: flops / max(quantile(peak_cpu[name], 0.5), 1e-9) / 1e9 for name, (_, flops, _) in peaks.items()})

    lines = [
        "| variant | device | images/s | s/step (batch " + str(args.batch) + ") | s/epoch "
        f"({epoch_images} images) | {args.epochs} epochs (h) | timed steps | est. train GFLOP/s | of peak "
        f"| images/CPU-s | of peak (CPU time) | vs {variants[0].label} |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    first_rate = 1.0 / statistics.median(variants[0].seconds_per_image)
    for v in variants:
        rate = 1.0 / statistics.median(v.seconds_per_image)
        flops = TRAIN_FLOPS_PER_FORWARD * unet_conv_flops(v.width, args.head, args.size)
        gflops = flops * rate / 1e9
        cpu_rate = 1.0 / max(statistics.median(v.cpu_seconds_per_image), 1e-9)
        prec = precision[v.label]
        cpu_cols = (f"{cpu_rate:.3f} | {flops * cpu_rate / 1e9 / peak_per_cpu_s[prec]:.0%}" if device.type == "cpu"
                    else "- | -")
        epoch_s = epoch_images / rate
        lines.append(
            f"| {v.label} | {device.type} | {rate:.3f} | {args.batch / rate:.2f} | {epoch_s:.0f} | "
            f"{args.epochs * epoch_s / 3600:.1f} | {v.steps * args.rounds} | {gflops:.1f} | {gflops / peak_of[prec]:.0%} {prec} | "
            f"{cpu_cols} | {rate / first_rate:.2f}x |"
        )
    lines.append("\nPeak " + ", ".join(f"{name} {value:.1f} GFLOP/s" for name, value in each.items())
                 + " (medians of calls interleaved with the training rounds); per CPU-second "
                 + ", ".join(f"{p} {value:.1f}" for p, value in peak_per_cpu_s.items()) + ". Each variant's "
                 "'of peak' is against the best matmul of the precision its convolutions run in (conv_precision).")
    notes = [
        f"Load: {load_before} before, {load_average()} after.",
        f"Protocol: {args.size}×{args.size} augmented crops (TrainCrops) of {len(data)} DeepCrack train images, "
        f"batch {args.batch}, Adam lr {args.lr:g}, loss {args.loss} (gamma1 {args.gamma1:g}, gamma2 {args.gamma2:g}), "
        f"head {args.head}, {args.threads} torch threads, {args.workers} loader workers; {args.warmup_steps} warm-up steps, "
        f"then {args.rounds} interleaved rounds of {args.steps} steps ({args.wide_steps} for widths >= 64); images/s = median over rounds.",
        f"Projection: s/epoch = {epoch_images} images / images/s; {args.epochs} epochs = training steps only "
        "(per-epoch validation and the final test evaluation come on top). GFLOP/s estimated as "
        f"{TRAIN_FLOPS_PER_FORWARD} x forward convolution FLOPs per image (common.unet_conv_flops).",
    ]
    if device.type == "cpu":
        notes.append("No CUDA device: AMP bf16/fp16 variants were not run.")
    text = section_header(f"Training throughput, paper protocol ({device.type})", command_line(__file__, argv), notes)
    text += "\n".join(lines) + "\n"
    publish(text, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
