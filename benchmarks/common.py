"""Helpers shared by the benchmark programs: machine description, load, interleaved timing, FLOP counts, peak.

Pure parts (FLOP counting, quantiles) have no clocks or files; the rest is the thin shell every
benchmark needs: what machine and load the figures were taken under, and appending a section to
benchmarks/RESULTS.md with the exact command, machine and date beside it (STYLE.md rule 11).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from contract.data_root import data_root

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "RESULTS.md"
STAGES = 5  # train.model.STAGES; repeated here so the FLOP count stays a pure function of the shapes


# ----------------------------------------------------------------------------- machine, load, results


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    """One line naming the machine: host, CPU model, logical CPUs, Python and kernel."""
    return (
        f"{platform.node()}: {cpu_name()}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )


def gpu_name() -> str | None:
    """The CUDA device torch sees (name, memory), or None without one (torch imported lazily)."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    return f"{props.name}, {props.total_memory / 2**30:.0f} GiB"


def load_average() -> str:
    """``uptime``-style 1/5/15-minute load averages: on a shared machine they say how disturbed a run was."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "load average unavailable"
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} on {os.cpu_count()} logical CPUs"


def git_commit() -> str:
    """Short commit hash of the working tree (``unknown`` outside a git checkout)."""
    result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return result.stdout.strip() or "unknown"


def command_line(script: str, argv: Sequence[str] | None) -> str:
    """The command that reproduces this run, e.g. ``python -m benchmarks.bench_x --flag 1``."""
    args = list(argv if argv is not None else sys.argv[1:])
    module = ".".join(Path(os.path.relpath(script, REPO)).with_suffix("").parts)
    return shlex.join(["python", "-m", module, *args])  # quoted: flags may hold spaces (--note, --train-args)


def dataset(name: str) -> Path:
    """The data set ``name`` under the data-set root: ``$CRACK_DATA_ROOT/<name>``, ``../shared/data/<name>``
    when the variable is unset (:func:`contract.data_root.data_root`)."""
    return data_root() / name


DATA_HELP = "$CRACK_DATA_ROOT/{name}, ../shared/data/{name} when unset"


def section_header(title: str, command: str, notes: Sequence[str] = ()) -> str:
    """The Markdown heading every appended section starts with: title, date, command, machine, commit."""
    now = dt.datetime.now(dt.timezone.utc)
    lines = [
        f"\n## {title} — {now:%Y-%m-%d %H:%M} UTC\n",
        f"Command: `{command}`  ",
        f"Machine: {machine()}{'; GPU ' + gpu if (gpu := gpu_name()) else ''}; commit {git_commit()}  ",
        *[f"{note}  " for note in notes],
    ]
    return "\n".join(lines).rstrip() + "\n\n"


def append_results(text: str, path: Path = RESULTS) -> None:
    """Append a finished section to ``path`` (benchmarks/RESULTS.md by default)."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(text.rstrip() + "\n")
    print(f"appended to {path}")


def add_results_args(parser: argparse.ArgumentParser) -> None:
    """``--results FILE`` and ``--no-append``: the same two flags on every benchmark."""
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help="file the table is appended to (default: benchmarks/RESULTS.md)")
    parser.add_argument("--no-append", action="store_true", help="print only, do not append to --results")


def publish(text: str, args: argparse.Namespace) -> None:
    """Print a finished section and, unless ``--no-append``, append it to ``--results``."""
    print(text)
    if not args.no_append:
        append_results(text, args.results)


# ----------------------------------------------------------------------------- FLOP counting (pure)


def conv2d_flops(in_channels: int, out_channels: int, kernel: int, out_h: int, out_w: int) -> int:
    """Floating-point operations of one dense 2-D convolution, counting a multiply-add as 2.

    ``2 * C_in * k^2 * C_out * H_out * W_out`` (bias adds, ReLU, pooling, upsampling and concatenation
    are left out: together they are under 1 % of the convolutions in this U-Net)."""
    return 2 * in_channels * kernel * kernel * out_channels * out_h * out_w


def unet_conv_flops(width: int, head: str, size: int, in_channels: int = 3) -> int:
    """Convolution FLOPs of one ``size`` x ``size`` tile through ``train.model.UNet`` (eqs. 1-4).

    Encoder stage ``i`` (channels ``width * 2**i``) runs two 3x3 convs at ``size / 2**i``; decoder
    stage ``i`` fuses ``channels[i] + channels[i+1]`` inputs into ``channels[i]`` with two 3x3 convs at
    the same resolution; the deep head is 3x3 convs (width, width, width, 2) and a 1x1 conv to 1, the
    shallow head one 1x1 conv. Checked against ``torch.utils.flop_counter`` in tests/test_benchmarks.py.
    """
    if head not in ("deep", "shallow"):
        raise ValueError(f"head must be 'deep' or 'shallow', got {head!r}")
    if size % 2 ** (STAGES - 1):
        raise ValueError(f"tile size must be a multiple of {2 ** (STAGES - 1)}, got {size}")
    channels = [width * 2**i for i in range(STAGES)]
    total, prev = 0, in_channels
    for i, ch in enumerate(channels):
        side = size >> i
        total += conv2d_flops(prev, ch, 3, side, side) + conv2d_flops(ch, ch, 3, side, side)
        prev = ch
    for i in range(STAGES - 1):
        side = size >> i
        total += conv2d_flops(channels[i] + channels[i + 1], channels[i], 3, side, side)
        total += conv2d_flops(channels[i], channels[i], 3, side, side)
    if head == "deep":
        for cin, cout in ((channels[0], width), (width, width), (width, width), (width, 2)):
            total += conv2d_flops(cin, cout, 3, size, size)
        total += conv2d_flops(2, 1, 1, size, size)
    else:
        total += conv2d_flops(channels[0], 1, 1, size, size)
    return total


# ----------------------------------------------------------------------------- timing


def quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) with linear interpolation between order statistics (numpy's default)."""
    if not values:
        raise ValueError("quantile of no values")
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def time_call(fn: Callable[[], object]) -> float:
    """Seconds one call of ``fn`` takes (``fn`` must synchronise its device itself)."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@dataclass
class Timings:
    """Per-call seconds of every variant: wall clock, and CPU time of this process (all its threads).

    On a machine shared with other jobs the wall time stretches with their load; the CPU time (what
    the call itself executed) is much less disturbed, so both are reported."""

    wall: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)


def interleaved_latencies(
    variants: Mapping[str, Callable[[], object]],
    *,
    rounds: int,
    round_seconds: float,
    warmup_calls: int = 1,
    progress: bool = True,
) -> Timings:
    """Per-call wall and CPU seconds of every variant, timed in interleaved rounds.

    Each variant is first called ``warmup_calls`` times (untimed, except that the last warm-up sets how
    many calls fit in ``round_seconds``). Then, ``rounds`` times, every variant runs its calls back to
    back, the order rotating each round, so load from other processes on a shared machine falls on all
    variants alike instead of biasing their ratio.
    """
    from tqdm import tqdm

    calls: dict[str, int] = {}
    for name, fn in tqdm(variants.items(), desc="warm-up", unit="variant", disable=not progress, leave=False):
        seconds = 0.0
        for _ in range(max(warmup_calls, 1)):
            seconds = time_call(fn)
        calls[name] = max(1, int(round_seconds / max(seconds, 1e-9)))
    names = list(variants)
    timings = Timings({name: [] for name in names}, {name: [] for name in names})
    for r in tqdm(range(rounds), desc="timed rounds", unit="round", disable=not progress, leave=False):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            for _ in range(calls[name]):
                cpu_start = time.process_time()
                timings.wall[name].append(time_call(variants[name]))
                timings.cpu[name].append(time.process_time() - cpu_start)
    return timings


PEAK_DTYPES = {"fp32": "float32", "tf32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def conv_precision(amp: str, device_type: str, cudnn_allow_tf32: bool) -> str:
    """The arithmetic a step's convolutions run in: ``fp32``, ``tf32``, ``bf16`` or ``fp16``.

    Under autocast (``amp`` bf16/fp16) that precision; without it FP32, except on CUDA where cuDNN
    runs FP32 convolutions as TF32 while ``torch.backends.cudnn.allow_tf32`` holds (its default).
    A throughput is compared with the peak of this precision, never of another (TF32 convolutions
    against a true-FP32 matmul read 152 % of peak on an H200)."""
    if amp in ("bf16", "fp16"):
        return amp
    if amp not in ("off", "fp32"):
        raise ValueError(f"amp must be off, bf16 or fp16, got {amp!r}")
    return "tf32" if device_type == "cuda" and cudnn_allow_tf32 else "fp32"


def matmul_peak(n: int, device: str = "cpu", precision: str = "fp32") -> tuple[Callable[[], object], int]:
    """(one call, its FLOPs): an ``n`` x ``n`` torch.matmul, the machine's attainable dense peak.

    Timed among the other variants with the same thread count, it gives the peak the achieved GFLOP/s
    are compared with. ``precision`` is one of :data:`PEAK_DTYPES`; on CUDA each call sets TF32 for
    matmuls on (``tf32``) or off (every other) and restores the setting, so peaks of different
    precisions timed in one run do not change each other or the variants.
    """
    import torch

    if precision not in PEAK_DTYPES:
        raise ValueError(f"peak precision must be one of {', '.join(PEAK_DTYPES)}, got {precision!r}")
    dtype = getattr(torch, PEAK_DTYPES[precision])
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=generator).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=generator).to(device=device, dtype=dtype)
    if device.startswith("cuda"):
        tf32 = precision == "tf32"

        def run() -> None:
            before = torch.backends.cuda.matmul.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = tf32
            try:
                torch.matmul(a, b)
                torch.cuda.synchronize()
            finally:
                torch.backends.cuda.matmul.allow_tf32 = before
    else:

        def run() -> None:
            torch.matmul(a, b)

    return run, 2 * n**3


def ort_matmul_peak(n: int, threads: int) -> tuple[Callable[[], object], int]:
    """(one call, its FLOPs): an ``n`` x ``n`` MatMul in onnxruntime (MLAS SGEMM) on ``threads`` threads.

    A second FP32 peak beside torch.matmul's: torch's CPU build multiplies with MKL, which on AMD CPUs
    takes a narrower code path than MLAS, so on those machines onnxruntime's own kernels go faster
    than the torch "peak" (measured: docs/BENCHMARKS.md)."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from contract.onnx_file import pin_ir_version

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])], "matmul_peak",
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [n, n]) for x in ("a", "b")],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])],
    )
    model = pin_ir_version(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {x: rng.standard_normal((n, n), dtype=np.float32) for x in ("a", "b")}
    return (lambda: session.run(None, feeds)), 2 * n**3
