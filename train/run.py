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

from contract.backends.flips import FLIP_AXES
from train import distributed
from train.checkpoint import CheckpointError, read_checkpoint
from train.config import (
    AMP_MODES,
    LR_SCHEDULES,
    SELECT_METRICS,
    SMALL_IMAGE_POLICIES,
    ConfigError,
    TrainConfig,
)
from train.data import DatasetError
from train.grid_search import PAPER_GRID, grid_search, parse_grid
from train.health import DeadNetworkError, detection_words
from train.loop import TrainingError, default_out, train_run
from train.losses import LOSS_NAMES
from train.repeats import run_repeats
from train.report import source_table

DEAD_NETWORK_EXIT = 3  # the network died in training (train.health)
T = TypeVar("T")

# flags that may change when resuming (everything else comes from the checkpoint's train_config)
RESUME_OVERRIDES = ("epochs", "device", "workers", "amp", "eval_every", "progress", "time_budget_min")


def add_training_flags(parser: argparse.ArgumentParser, exclude: frozenset[str] = frozenset()) -> None:
    """The flags shared by train.run and train.ablation (everything in TrainConfig but ``exclude``).

    Every default comes from :class:`train.config.TrainConfig`, the one home of the defaults.
    """
    d = TrainConfig.default

    def p(flag: str, **kw: Any) -> None:
        name = kw.get("dest") or flag.lstrip("-").replace("-", "_")
        if name in exclude:
            return
        if kw.get("action") not in ("store_true", "store_false", "append"):
            kw.setdefault("default", d(name))
        parser.add_argument(flag, **kw)

    p("--data", action="append", default=[], metavar="FOLDER",
      help="data set folder with images/ and masks/ (optional splits/*.txt); repeat the flag or comma-separate "
      "for several data sets, each keeping its own split; required unless --resume")
    p("--source-weights", help="share of each data set in an epoch: balanced (equal shares, whatever their sizes), "
      "images (in proportion to image counts) or name=w,name=w (default: %(default)s)")
    p("--epoch-samples", type=int, help="crops per epoch; 0 = every training image of every data set once "
      "(default: %(default)s)")
    p("--val-max-images", type=int, help="validate on at most N images per data set (a seeded subset), 0 = all "
      "(default: %(default)s)")
    p("--eval-tile", type=int, metavar="PX", help="validate and test through the daemon's tiler at PX-px tiles "
      "(e.g. 512, what ships: small images are mirrored up to the tile), 0 = whole images (default: %(default)s)")
    p("--eval-flips", type=int, choices=tuple(FLIP_AXES), metavar="N",
      help="validate and test on predictions averaged over N mirrorings (1 as is; 2 + left-right; 4 + upside-down "
      "and both), as the daemon's model.flips does: epochs are chosen on what ships, and best.pt records the "
      "threshold for N passes beside the single-pass one (read from the unmirrored pass: N passes per validation) (default: %(default)s)")
    p("--test-max-images", type=int, help="score the final test on at most N images per data set (a seeded "
      "subset; quick comparisons only: metrics.json records it), 0 = all (default: %(default)s)")
    p("--small-images", choices=SMALL_IMAGE_POLICIES,
      help="images smaller than --size: mirror (reflect image and mask), pad (black, left out of the loss) or "
      "resize (enlarge; widens cracks) (default: %(default)s)")
    p("--loss", choices=LOSS_NAMES, help="training loss (default: %(default)s)")
    p("--alpha", type=float, help="AELF/Exp alpha, eqs. (6)-(7) (default: %(default)s)")
    p("--beta", type=float, help="AELF/Exp beta, eqs. (6)-(7) (default: %(default)s)")
    p("--gamma1", type=float, help="AELF gamma1, tilt on the false-positive side (default: %(default)s)")
    p("--gamma2", type=float, help="AELF gamma2, tilt on the false-negative side (default: %(default)s)")
    p("--head", choices=("deep", "shallow"), help="prediction head (default: %(default)s, the paper's)")
    p("--width", type=int, help="channels of the first U-Net stage; 64 = the paper (default: %(default)s)")
    p("--size", type=int, help="training crop side in pixels, multiple of 16 (default: %(default)s)")
    p("--epochs", type=int, help="epochs (default: %(default)s)")
    p("--batch", type=int, help="crops per step per process (default: %(default)s)")
    p("--lr", type=float, help="Adam learning rate (default: %(default)s)")
    p("--lr-schedule", choices=LR_SCHEDULES,
      help="constant: --lr throughout; cosine: from --lr down to --lr-min over all steps of --epochs, set every "
           "step (default: %(default)s)")
    p("--lr-min", type=float, help="last learning rate of --lr-schedule cosine (default: %(default)s)")
    p("--seed", type=int, help="seed of init, data order, augmentation and split (default: %(default)s)")
    p("--device", help="auto | cpu | cuda | cuda:N; auto picks CUDA when present (default: %(default)s)")
    p("--workers", type=int, help="DataLoader worker processes, 0 = in the main process (default: %(default)s)")
    p("--amp", choices=AMP_MODES,
      help="mixed precision: auto = bf16 on CUDA GPUs that support it, else fp16 with GradScaler; off on CPU (default: %(default)s)")
    p("--tolerance-px", type=int, help="pixel tolerance of the metrics, e.g. 2 (default: %(default)s)")
    p("--val-fraction", type=float,
      help="fraction of the training images held out for validation when there is no splits/val.txt (default: %(default)s)")
    p("--test-fraction", type=float,
      help="fraction of all images used as test when the data set has no splits/ (default: %(default)s)")
    p("--eval-every", type=int, help="validate every N epochs, and always after the last (default: %(default)s)")
    p("--max-steps-per-epoch", type=int, help="stop an epoch after N steps, 0 = no limit; for smoke runs (default: %(default)s)")
    p("--time-budget-min", type=float,
      help="wall-clock budget in minutes: stop after the step that passes it, save last.pt (mid-epoch too) and "
      "print the --resume command, exit status 75; 0 = none (default: %(default)s)")
    p("--scale", type=float,
      help="resize every image and mask by this factor first (fast CPU runs; changes crack widths in pixels) (default: %(default)s)")
    p("--binarize-masks", action="store_true", help="accept non-0/255 masks (e.g. JPEG), crack where value >= 128")
    p("--select", choices=SELECT_METRICS,
      help="validation metric choosing best.pt: ods_f (F-beta at the best threshold) or f_beta (at 0.5) (default: %(default)s)")
    p("--overlays", type=int, help="test images written as overlays/*.png, per data set (default: %(default)s)")
    p("--no-augment", dest="augment", action="store_false", help="train on plain random crops (no rotation/shift/shear/flip)")
    p("--rotation-deg", type=float, help="random rotation range, +- degrees (default: %(default)s)")
    p("--shift-frac", type=float, help="random shift range, +- fraction of the side (default: %(default)s)")
    p("--shear-deg", type=float, help="random shear range, +- degrees (default: %(default)s)")
    p("--no-flip", dest="flip", action="store_false", help="no random horizontal/vertical flips")
    p("--border", choices=("reflect", "constant"),
      help="fill of areas a rotation uncovers: reflect (labelled) or constant (black, left out of the loss) (default: %(default)s)")
    p("--scale-aug-min", type=float,
      help="random rescale of each training image, lower factor (log-uniform); < 1 makes thin cracks (default: %(default)s)")
    p("--scale-aug-max", type=float, help="random rescale, upper factor (default: %(default)s)")
    p("--photometric", help="camera augmentation groups (train.photometric): all, or a comma list of colour, grey, "
      "shadow, blur, noise, jpeg; group=P sets a group's probability, e.g. all,shadow=0.6; empty = none "
      "(default: %(default)r)")
    p("--synth-fraction", type=float,
      help="share of each epoch made by train.synth: hairline cracks on crack-free surfaces of the training images, "
      "distractors (joints, straight lines, edges, paint) labelled background, plain negatives (default: %(default)s)")
    p("--synth-structures", type=float,
      help="chance that a generated crop carries one straight structure of train.structures (one of "
      "--synth-structure-families; the held-out families never) labelled background (default: %(default)s)")
    p("--synth-structure-families",
      help="comma list of the train.structures families the generator may draw: tile_grid, formwork, chamfer, "
      "paint_line, line_family (periodic lines of any pitch and angle), straight_shadow (shadows of poles, beams, "
      "building edges); held-out families are refused (default: %(default)s)")
    p("--synth-wide", type=float,
      help="chance that a generated crack is wide and deep (4-12 px, an open crack whose inside is labelled crack), "
      "so that dark straight bands labelled background do not teach the model that wide dark cracks are background "
      "(default: %(default)s)")
    p("--hard-negative-fraction", type=float,
      help="share of each epoch cut around the --init model's own false positives on the training images (mined "
      "once at the start into <out>/hard_negatives.json, read again when the run resumes); needs --init (default: %(default)s)")
    p("--hard-negative-threshold", type=float,
      help="probability at which a predicted piece farther than 8 px from every labelled crack counts as a false "
      "positive to mine (default: %(default)s)")
    p("--hard-negative-shape", choices=("straight", "all"),
      help="which false positives to mine: straight = only straight pieces (joints, edges, lines; the data sets leave "
      "many faint cracks unlabelled, and mining those teaches the model to miss hairlines), all = every piece "
      "(default: %(default)s)")
    p("--negatives", action="append", default=[], metavar="FOLDER",
      help="folder of photos with no crack in them (image files in images/ or in the folder itself, no masks): "
      "the joints, tiles, formwork and saw cuts of the structures you inspect, or the survey photos whose alerts "
      "were not cracks; every pixel is background. A seeded --val-fraction of them is held out and scored each "
      "validation (share of photos with a marked piece); repeat or comma-separate for several; python -m "
      "edge.report.negatives fills one from the alerts an inspector judged not to be cracks (docs/TRAIN.md)")
    p("--negatives-fraction", type=float,
      help="share of each epoch cut from the --negatives training photos (default: %(default)s)")
    p("--negatives-min-area-px", type=int,
      help="validation: a held-out negative photo counts as marked when the model marks a connected piece of at "
      "least this many pixels at the epoch's threshold, the daemon's smallest crack (default: %(default)s)")
    p("--bce-warmup-steps", type=int,
      help="train with BCE for the first N optimizer steps, then with --loss: the losses on probabilities "
      "(aelf, exp, l1, l2) can otherwise saturate to 'no crack' from a random start at a high --lr; -1 = auto: "
      "one epoch for those losses at --lr above 1e-4 without --init, 0 otherwise (default: %(default)s)")
    p("--init", metavar="MODEL",
      help="start from the weights of a .pt checkpoint or an exported .onnx model of the same --head and the same "
      "--width or one it divides (fine-tuning, e.g. the shipped model on your own data; a narrower model is widened "
      "to --width computing the same output, train/widen.py); empty = He-normal init (default: %(default)r)")
    p("--model-init", choices=("alive", "he"),
      help="initial weights of a fresh run: alive = He-normal with the head's output at zero, its bias at the crack "
      "prior and its 2-channel gate open (the paper's He-normal alone lets the width-64 network die in its first "
      "steps: docs/TRAIN.md); he = the paper's He-normal everywhere (default: %(default)s)")
    p("--thin-weight", type=float,
      help="loss weight of the crack pixels of cracks thinner than 3 px (those a 3 x 3 opening removes: hairlines), "
      "1 = all crack pixels alike; > 1 asks the network to find hairlines at the price of some thin false "
      "positives (default: %(default)s)")
    p("--joint-weight", type=float,
      help="loss weight of the background pixels where --synth-fraction's generator drew a joint, line, edge or "
      "painted mark (train.synth.drawn_structures), 1 = all background alike; > 1 asks the network harder to leave "
      "joints unmarked (default: %(default)s)")
    p("--cldice-weight", type=float,
      help="add this times soft clDice (Shit et al., CVPR 2021) on the probabilities to the loss: a crack counts by "
      "its length, not its area, so a missed hairline costs as much per pixel of length as a wide crack; 0 = off "
      "(default: %(default)s)")
    p("--clip-grad-norm", type=float,
      help="clip the gradient's global L2 norm to this before every Adam step, 0 = off; keeps one crack-dense crop "
      "from closing the head (default: %(default)s)")
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
    if config.time_budget_min and (grid or repeats > 1):
        raise ConfigError("--time-budget-min stops one run for --resume; it cannot split --grid-search or --repeats "
                          "(run each seed / pair as its own train.run)")
    ctx = distributed.setup(config.device)
    out = Path(ctx.broadcast(str(out or default_out(config))))
    final_out = out
    if grid:
        best = grid_search(config, out, grid_values)
        config = config.with_(loss="aelf", gamma1=best["gamma1"], gamma2=best["gamma2"])
        final_out = out / "final"
    if repeats > 1:
        return run_repeats(config, final_out, repeats)
    return _metrics_or_stop(train_run(config, final_out))


def _metrics_or_stop(result: Any) -> dict[str, Any]:
    """The run's test metrics, or ``{"stopped": True}`` when the time budget ended it early."""
    return {"stopped": True, "out": str(result.out)} if result.stopped else result.metrics


def run_cli_job(job: Callable[[], T]) -> tuple[int, T | None]:
    """Run a training CLI's work: (0, result), or (2, None) after one ``error:`` line for bad input,
    (3, None) after one ``error:`` line when the network died in training, (130, None) on Ctrl-C; the process group (under torchrun) is torn down either way."""
    try:
        return 0, job()
    except DeadNetworkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return DEAD_NETWORK_EXIT, None
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
            return _metrics_or_stop(train_run(resume_config(args, parser), args.out, resume=args.resume))
        return run_experiment(config_from_args(args), args.out, grid=args.grid_search,
                              grid_values=parse_grid(args.grid), repeats=args.repeats)

    code, result = run_cli_job(job)
    if result and result.get("stopped"):
        return 75  # EX_TEMPFAIL: the time budget ended the run; --resume continues it
    if result and distributed.rank() == 0:
        _print_result(result)
    return code


def _print_result(result: dict[str, Any]) -> None:
    if "metrics" in result and "seeds" in result:
        for key, stat in result["metrics"].items():
            print(f"{key}: {stat['mean']:.4f} ± {stat['std']:.4f} (n={stat['n']})")
        return
    keys = ("precision", "recall", "f_beta", "f1", "iou", "ods_f", "ods_threshold", "ois_f", "ap", "threshold")
    if "sources" in result:
        print(source_table(result, title="test split, per data set:"))
    print("test: " + ", ".join(f"{k} {result[k]:.4f}" for k in keys if k in result))
    said = [detection_words(result["precision"], result["recall"], 0.5)] if "recall" in result else []
    if "at_threshold" in result:
        said.append(detection_words(result["at_threshold"]["precision"], result["at_threshold"]["recall"],
                                    result["threshold"]))
    for words in dict.fromkeys(w for w in said if w):
        print(f"test: {words}")
    print(f"outputs in {Path(result['checkpoint']).parent}")


if __name__ == "__main__":
    sys.exit(main())
