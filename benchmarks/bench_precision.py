"""FP32 vs INT8 (onnxruntime, CPU), and FP32 vs FP16 (torch, CUDA) where a GPU is present: accuracy and speed.

``python -m benchmarks.bench_precision --checkpoint runs/x/best.pt``

One run, side by side on the same images: the checkpoint is exported (``export.onnx``, parity vs
torch measured), quantized to INT8 QDQ (``calibration.int8``, calibrated on training-split tiles),
then every variant predicts each test image tiled and stitched as the edge daemon does, and
``contract.metrics.ThresholdSweep`` gives F-beta / F1 / IoU at the model's threshold and the ODS F-beta.
Throughput is tiles/s on the same fixed tiles, batch ``--batch``, ``--threads`` intra-op threads,
median of ``--repeats`` interleaved timed passes after a warm-up. The table is printed and appended to
benchmarks/RESULTS.md with the command, machine and date.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import DATA_HELP, add_results_args, command_line, dataset, machine, publish
from calibration.int8 import QuantSettings, quantize
from calibration.threshold import probability_maps
from contract.backends.ort import OnnxRuntimeBackend
from contract.image_tiles import draw_tiles
from contract.metrics import ThresholdSweep, nearest_threshold_index
from contract.onnx_file import read_metadata
from export.onnx import export_checkpoint


def evaluate(backend, data: Path, split: str, max_images: int | None) -> dict:
    """ThresholdSweep metrics of ``backend`` on the labelled images of ``split`` (predicted as the daemon does)."""
    meta = backend.metadata
    sweep = ThresholdSweep()
    for i, (prob, mask) in enumerate(probability_maps(backend, data, split, progress=True)):
        if max_images is not None and i >= max_images:
            break
        sweep.update(prob, mask)
    summary = sweep.summary()
    th = meta.threshold
    index = nearest_threshold_index(sweep.thresholds, th)
    tp, fp, fn = (float(c[index]) for c in sweep.totals())
    from contract.metrics import iou, prf

    return {
        "f_beta": prf(tp, fp, fn)[2], "f1": prf(tp, fp, fn, beta2=1.0)[2], "iou": iou(tp, fp, fn),
        "ods_f": summary["ods_f"], "n_images": sweep.n_images,
    }


def tiles_per_second(backends: dict, tiles: np.ndarray, batch: int, repeats: int) -> dict[str, float]:
    """Median tiles/s per variant over ``repeats`` passes over ``tiles``, after one warm-up pass each.

    Passes are interleaved (fp32, int8, fp32, int8, ...) so that load from other processes on a shared
    machine hits every variant alike instead of biasing the ratio.
    """
    def one_pass(backend) -> float:
        start = time.perf_counter()
        for i in range(0, len(tiles), batch):
            backend.infer(tiles[i : i + batch])
        return len(tiles) / (time.perf_counter() - start)

    for backend in backends.values():
        one_pass(backend)
    speeds: dict[str, list[float]] = {name: [] for name in backends}
    for _ in range(repeats):
        for name, backend in backends.items():
            speeds[name].append(one_pass(backend))
    return {name: statistics.median(values) for name, values in speeds.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_precision", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, type=Path, help="trained checkpoint (best.pt from `python -m train.run`)")
    parser.add_argument("--data", type=Path, default=dataset("deepcrack"),
                        help="data set root with images/, masks/, splits/ (default: " + DATA_HELP.format(name="deepcrack") + ")")
    parser.add_argument("--split", default="test", help="evaluation split (default: %(default)s)")
    parser.add_argument("--calib-split", default="train", help="split the INT8 calibration tiles come from (default: %(default)s)")
    parser.add_argument("--calib-tiles", type=int, default=64, help="INT8 calibration tiles (default: %(default)s)")
    parser.add_argument("--max-images", type=int, default=None, help="evaluate only the first N images of the split (default: all)")
    parser.add_argument("--speed-tiles", type=int, default=32, help="tiles in the throughput measurement (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=4, help="tiles per inference call (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime/torch intra-op threads (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes per variant, interleaved; the median is reported (default: %(default)s)")
    add_results_args(parser)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-precision-") as tmp:
        fp32_path, int8_path = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        summary = export_checkpoint(args.checkpoint, fp32_path, parity_images=None, parity_tiles_n=16)
        meta = read_metadata(fp32_path)
        calib = draw_tiles(args.data, meta, max_tiles=args.calib_tiles, seed=0, split=args.calib_split, progress=False)
        quantize(fp32_path, int8_path, calib.tiles, QuantSettings())
        speed = draw_tiles(args.data, meta, max_tiles=args.speed_tiles, seed=1, split=args.split, progress=False).tiles
        variants: dict[str, object] = {}
        for name, path in (("ORT CPU fp32", fp32_path), ("ORT CPU int8", int8_path)):
            # idle threads spin, as onnxruntime does by default: the runtime's own speed is measured
            variants[name] = OnnxRuntimeBackend(path, providers=["CPUExecutionProvider"], batch_size=args.batch,
                                                intra_op_threads=args.threads, allow_spinning=True, log_severity=3)
        variants.update(cuda_variants(args.checkpoint, args.batch))
        metrics = {name: evaluate(backend, args.data, args.split, args.max_images) for name, backend in variants.items()}
        speeds = tiles_per_second(variants, speed, args.batch, args.repeats)
        rows = [(name, metrics[name], speeds[name]) for name in variants]
        sizes = {"ORT CPU fp32": fp32_path.stat().st_size, "ORT CPU int8": int8_path.stat().st_size}

    table = format_table(rows, sizes)
    header = (
        f"\n## Precision: FP32 vs INT8 (onnxruntime CPU){' and FP16 (torch CUDA)' if len(rows) > 2 else ''} — {dt.date.today()}\n\n"
        f"Command: `{command_line(__file__, argv)}`  \n"
        f"Machine: {machine()}  \n"
        f"Model: width {meta.width}, head {meta.head}, tile {meta.input_size}, threshold {meta.threshold:.2f}, "
        f"trained on {meta.train_data}; data {args.data.name} split {args.split} ({rows[0][1]['n_images']} images); "
        f"{args.threads} threads, batch {args.batch}; INT8 calibrated on {len(calib)} {args.calib_split} tiles.  \n"
        f"ORT FP32 vs torch: max |delta p| = {summary.parity.max_abs_diff:.2e} on {summary.parity.source}.\n\n"
    )
    publish(header + table, args)
    return 0


def cuda_variants(checkpoint: Path, batch: int) -> dict:
    """The torch backend in FP32 and FP16 (autocast) on CUDA when a GPU is present; nothing otherwise."""
    import torch

    if not torch.cuda.is_available():
        return {}
    from train.checkpoint import load_model, metadata_from_checkpoint
    from train.torch_backend import TorchBackend

    unet, payload = load_model(checkpoint, "cuda")
    meta = metadata_from_checkpoint(payload)
    return {
        f"torch CUDA {name}": TorchBackend.from_module(unet, meta, device="cuda", batch_size=batch, amp_dtype=amp)
        for name, amp in (("fp32", None), ("fp16", torch.float16))
    }


def format_table(rows: list, sizes: dict) -> str:
    base = {r[0].rsplit(" ", 1)[0]: r for r in rows if r[0].endswith("fp32")}
    lines = [
        "| variant | F-beta @th | ODS F-beta | F1 @th | IoU @th | tiles/s | speed vs fp32 | dF-beta vs fp32 | model MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m, tps in rows:
        ref = base[name.rsplit(" ", 1)[0]]
        size = f"{sizes[name] / 1e6:.2f}" if name in sizes else "-"
        lines.append(
            f"| {name} | {m['f_beta']:.4f} | {m['ods_f']:.4f} | {m['f1']:.4f} | {m['iou']:.4f} | {tps:.1f} | "
            f"{tps / ref[2]:.2f}x | {m['f_beta'] - ref[1]['f_beta']:+.4f} | {size} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
