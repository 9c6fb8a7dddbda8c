"""``python -m train.run``: train the AELF U-Net (Liu et al. 2022) and evaluate it on the test split.

Thin CLI: flags -> :class:`train.config.TrainConfig` -> :func:`run_experiment`. The same command runs
under ``torchrun --nproc-per-node N -m train.run ...`` (DDP). See docs/TRAIN.md for the outputs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from train import distributed
from train.checkpoint import CheckpointError, read_checkpoint
from train.config import AMP_MODES, SELECT_METRICS, ConfigError, TrainConfig
from train.data import DatasetError
from train.grid_search import PAPER_GRID, grid_search, parse_grid
from train.loop import TrainingError, default_out, train_run
from train.losses import LOSS_NAMES
from train.repeats import run_repeats

T = TypeVar("T")

# flags that may change when resuming (everything else comes from the checkpoint's train_config)
RESUME_OVERRIDES = ("epochs", "device", "workers", "amp", "eval_every", "progress")


def add_training_flags(parser: argparse.ArgumentParser, exclude: frozenset[str] = frozenset()) -> None:
    """The flags shared by train.run and train.ablation (everything in TrainConfig but ``exclude``)."""
    d = TrainConfig.__dataclass_fields__

    def p(flag: str, **kw: Any) -> None:
        if flag.lstrip("-").replace("-", "_") not in exclude:
            parser.add_argument(flag, **kw)

    p("--data", default="", help="data set folder with images/ and masks/ (optional splits/*.txt); "
      "required unless --resume")
    p("--loss", default=d["loss"].default, choices=LOSS_NAMES, help="training loss (default: %(default)s)")
    p("--alpha", type=float, default=1.0, help="AELF/Exp alpha, eqs. (6)-(7) (default: %(default)s)")
    p("--beta", type=float, default=0.7, help="AELF/Exp beta, eqs. (6)-(7) (default: %(default)s)")
    p("--gamma1", type=float, default=0.0, help="AELF gamma1, tilt on the false-positive side (default: %(default)s)")
    p("--gamma2", type=float, default=0.0, help="AELF gamma2, tilt on the false-negative side (default: %(default)s)")
    p("--head", default="deep", choices=("deep", "shallow"), help="prediction head (default: %(default)s, the paper's)")
    p("--width", type=int, default=64, help="channels of the first U-Net stage; 64 = the paper (default: %(default)s)")
    p("--size", type=int, default=512, help="training crop side in pixels, multiple of 16 (default: %(default)s)")
    p("--epochs", type=int, default=30, help="epochs (default: %(default)s)")
    p("--batch", type=int, default=1, help="crops per step per process (default: %(default)s)")
    p("--lr", type=float, default=1e-4, help="Adam learning rate (default: %(default)s)")
    p("--seed", type=int, default=0, help="seed of init, data order, augmentation and split (default: %(default)s)")
    p("--device", default="auto", help="auto | cpu | cuda | cuda:N; auto picks CUDA when present (default: %(default)s)")
    p("--workers", type=int, default=2, help="DataLoader worker processes, 0 = in the main process (default: %(default)s)")
    p("--amp", default="auto", choices=AMP_MODES,
      help="mixed precision: auto = bf16 on CUDA GPUs that support it, else fp16 with GradScaler; off on CPU (default: %(default)s)")
    p("--tolerance-px", type=int, default=0, help="pixel tolerance of the metrics, e.g. 2 (default: %(default)s)")
    p("--val-fraction", type=float, default=0.1,
      help="fraction of the training images held out for validation when there is no splits/val.txt (default: %(default)s)")
    p("--test-fraction", type=float, default=0.2,
      help="fraction of all images used as test when the data set has no splits/ (default: %(default)s)")
    p("--eval-every", type=int, default=1, help="validate every N epochs, and always after the last (default: %(default)s)")
    p("--max-steps-per-epoch", type=int, default=0, help="stop an epoch after N steps, 0 = no limit; for smoke runs (default: %(default)s)")
    p("--scale", type=float, default=1.0,
      help="resize every image and mask by this factor first (fast CPU runs; changes crack widths in pixels) (default: %(default)s)")
    p("--binarize-masks", action="store_true", help="accept non-0/255 masks (e.g. JPEG), crack where value >= 128")
    p("--select", default="ods_f", choices=SELECT_METRICS,
      help="validation metric choosing best.pt: ods_f (F-beta at the best threshold) or f_beta (at 0.5) (default: %(default)s)")
    p("--overlays", type=int, default=4, help="test images written as overlays/*.png (default: %(default)s)")
    p("--no-augment", dest="augment", action="store_false", help="train on plain random crops (no rotation/shift/shear/flip)")
    p("--rotation-deg", type=float, default=90.0, help="random rotation range, +- degrees (default: %(default)s)")
    p("--shift-frac", type=float, default=0.1, help="random shift range, +- fraction of the side (default: %(default)s)")
    p("--shear-deg", type=float, default=10.0, help="random shear range, +- degrees (default: %(default)s)")
    p("--no-flip", dest="flip", action="store_false", help="no random horizontal/vertical flips")
    p("--border", default="reflect", choices=("reflect", "constant"),
      help="fill of areas a rotation uncovers: reflect (labelled) or constant (black, left out of the loss) (default: %(default)s)")
    p("--no-progress", dest="progress", action="store_false", help="no progress bars or per-epoch lines")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m train.run",
        description="Train the AELF U-Net on a crack data set folder, select the best epoch on validation, "
        "evaluate it on the test split. Paper protocol: --width 64 --size 512 --epochs 30 --batch 1 --lr 1e-4.",
    )
    add_training_flags(parser)
    parser.add_argument("--out", type=Path, default=None, help="run folder (default: runs/<YYYYmmdd-HHMMSS>-<loss>)")
    parser.add_argument("--resume", type=Path, default=None,
                        help="continue from a last.pt (or its run folder); options come from the checkpoint, "
                        f"except {', '.join('--' + k.replace('_', '-') for k in RESUME_OVERRIDES)} when given")
    parser.add_argument("--grid-search", action="store_true",
                        help="choose AELF gamma1, gamma2 on validation over --grid, then retrain with the best pair")
    parser.add_argument("--grid", default=",".join(f"{g:g}" for g in PAPER_GRID),
                        help="comma-separated gamma values of the grid search (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=1, help="train N seeds (seed, seed+1, ...) and report mean ± std (default: %(default)s)")
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    names = TrainConfig.__dataclass_fields__
    return TrainConfig(**{k: v for k, v in vars(args).items() if k in names})


def resume_config(args: argparse.Namespace, parser: argparse.ArgumentParser) -> TrainConfig:
    """The checkpoint's config, with the flags of RESUME_OVERRIDES that differ from their defaults."""
    path = args.resume / "last.pt" if args.resume.is_dir() else args.resume
    stored = read_checkpoint(path).get("train_config") or {}
    if not stored:
        raise CheckpointError(f"{path} holds no train_config to resume from")
    changes = {k: getattr(args, k) for k in RESUME_OVERRIDES if getattr(args, k) != parser.get_default(k)}
    return TrainConfig.from_dict({**stored, **changes})


def run_experiment(config: TrainConfig, out: Path | None = None, *, grid: bool = False,
                   grid_values: tuple[float, ...] = PAPER_GRID, repeats: int = 1) -> dict[str, Any]:
    """Grid search (optional), then one run or ``repeats`` seeds; returns the final metrics or summary."""
    ctx = distributed.setup(config.device)
    out = Path(ctx.broadcast(str(out or default_out(config))))
    final_out = out
    if grid:
        best = grid_search(config, out, grid_values)
        config = config.with_(loss="aelf", gamma1=best["gamma1"], gamma2=best["gamma2"])
        final_out = out / "final"
    if repeats > 1:
        return run_repeats(config, final_out, repeats)
    return train_run(config, final_out).metrics


def run_cli_job(job: Callable[[], T]) -> tuple[int, T | None]:
    """Run a training CLI's work: (0, result), or (2, None) after one ``error:`` line for bad input,
    (130, None) on Ctrl-C; the process group (under torchrun) is torn down either way."""
    try:
        return 0, job()
    except (ConfigError, DatasetError, CheckpointError, TrainingError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2, None
    except KeyboardInterrupt:
        return 130, None
    finally:
        distributed.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    def job() -> dict[str, Any]:
        if args.resume is not None:
            return train_run(resume_config(args, parser), args.out, resume=args.resume).metrics
        return run_experiment(config_from_args(args), args.out, grid=args.grid_search,
                              grid_values=parse_grid(args.grid), repeats=args.repeats)

    code, result = run_cli_job(job)
    if result and distributed.rank() == 0:
        _print_result(result)
    return code


def _print_result(result: dict[str, Any]) -> None:
    if "metrics" in result and "seeds" in result:
        for key, stat in result["metrics"].items():
            print(f"{key}: {stat['mean']:.4f} ± {stat['std']:.4f} (n={stat['n']})")
        return
    keys = ("precision", "recall", "f_beta", "f1", "iou", "ods_f", "ods_threshold", "ois_f", "ap", "threshold")
    print("test: " + ", ".join(f"{k} {result[k]:.4f}" for k in keys if k in result))
    print(f"outputs in {Path(result['checkpoint']).parent}")


if __name__ == "__main__":
    sys.exit(main())
