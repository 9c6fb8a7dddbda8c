"""Is model B's test ODS really below (or above) model A's? A paired bootstrap over the test images.

``python -m benchmarks.paired_bootstrap --a runs/paired/shipped --b runs/paired/u3``
``python -m benchmarks.paired_bootstrap --a runs/paired/shipped --b runs/paired/u3 --at used``

Reads the ``counts.npz`` that ``python -m train.evaluate`` writes beside each data set's ``metrics.json``
(every image's tp / fp / fn at every sweep threshold). Both evaluations must hold the same images (stems)
of each data set; the images are matched by stem. For each data set present in both: ODS Fβ of A and of B
(each at its own best threshold, as ``train.evaluate`` reports it), the difference B − A, its 95 % interval
over ``--resamples`` paired resamples of the images (the same draw for both models,
:func:`contract.metrics.paired_bootstrap_f`) and the share of resamples in which B is below A. A
difference whose interval holds 0 is one that another draw of test images of the same kind could reverse.

``--at used`` scores each model instead at the threshold its evaluation decided at (``threshold`` in each data
set's ``metrics.json``: the model's calibrated threshold, the one the daemon uses): per-set ODS credits every data
set with its own best threshold, which no deployment has, so a model can lose a set's ODS while the daemon's output
on that set improves, and the reverse.
The table is appended to ``benchmarks/RESULTS.md`` unless ``--no-append``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks.common import add_results_args, command_line, publish, section_header
from contract.metrics import nearest_threshold_index, paired_bootstrap_f


class PairingError(ValueError):
    """The two evaluations cannot be paired (missing counts, other images, other thresholds)."""


def used_threshold_index(thresholds: np.ndarray, metrics: Path) -> int:
    """Index in ``thresholds`` of the threshold the evaluation decided at (``threshold`` in its ``metrics.json``;
    the nearest grid threshold, as ``train.evaluate`` scores it)."""
    try:
        used = float(json.loads(metrics.read_text())["threshold"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PairingError(f"{metrics}: no readable 'threshold' ({type(exc).__name__}: {exc}); --at used needs the "
                           "metrics.json that python -m train.evaluate writes beside counts.npz") from exc
    return nearest_threshold_index(thresholds, used)


def _read(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, Path]]:
    """Per data set (by name): (stems, counts images x 3 x thresholds, thresholds, its metrics.json) from an
    evaluation folder (one data set: ``folder/counts.npz``; several: ``folder/<data set>/counts.npz``)."""
    files = [folder / "counts.npz"] if (folder / "counts.npz").is_file() else sorted(folder.glob("*/counts.npz"))
    if not files:
        raise PairingError(f"{folder}: no counts.npz (written by python -m train.evaluate; evaluate the model again)")
    out = {}
    for path in files:
        with np.load(path) as data:
            out[str(data["data"])] = (data["stems"].astype(str), data["counts"], data["thresholds"],
                                      path.parent / "metrics.json")
    return out


def paired(a: tuple[np.ndarray, np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray, np.ndarray],
           name: str) -> tuple[np.ndarray, np.ndarray]:
    """A's and B's counts on the same images in the same order (matched by stem)."""
    (stems_a, counts_a, th_a), (stems_b, counts_b, th_b) = a, b
    if th_a.shape != th_b.shape or not np.allclose(th_a, th_b):
        raise PairingError(f"{name}: the two evaluations used different threshold grids")
    if set(stems_a) != set(stems_b) or len(stems_a) != len(stems_b):
        raise PairingError(f"{name}: the two evaluations hold different images ({len(stems_a)} and {len(stems_b)}; "
                           f"{len(set(stems_a) ^ set(stems_b))} in one only): evaluate both on the same split")
    order = {stem: i for i, stem in enumerate(stems_b)}
    return counts_a, counts_b[[order[stem] for stem in stems_a]]


def comparison_table(a: Path, b: Path, resamples: int, seed: int, at: str = "best") -> str:
    found_a, found_b = _read(a), _read(b)
    names = [name for name in found_a if name in found_b]
    if not names:
        raise PairingError(f"{a} and {b} share no data set")
    if at == "best":
        rows = ["| data set | images | ODS A | ODS B | B − A | 95 % interval of B − A | "
                "share of resamples with B below A |", "|---|---:|---:|---:|---:|---|---:|"]
    else:
        rows = ["| data set | images | threshold A / B | F A | F B | B − A | 95 % interval of B − A | "
                "share of resamples with B below A |", "|---|---:|---|---:|---:|---:|---|---:|"]
    for name in names:
        *evaluation_a, metrics_a = found_a[name]
        *evaluation_b, metrics_b = found_b[name]
        ca, cb = paired(evaluation_a, evaluation_b, name)  # also checks that both used the same threshold grid
        thresholds = evaluation_a[2]
        at_a = at_b = None
        if at == "used":
            at_a, at_b = used_threshold_index(thresholds, metrics_a), used_threshold_index(thresholds, metrics_b)
        r = paired_bootstrap_f(ca, cb, at_a=at_a, at_b=at_b, resamples=resamples, seed=seed)
        used = "" if at == "best" else f" {thresholds[at_a]:.2f} / {thresholds[at_b]:.2f} |"
        rows.append(f"| {name} | {ca.shape[0]} |{used} {r['f_a']:.4f} | {r['f_b']:.4f} | {r['diff']:+.4f} | "
                    f"[{r['ci_low']:+.4f}, {r['ci_high']:+.4f}] | {r['p_b_below']:.3f} |")
        print(f"{name}: B - A {r['diff']:+.4f} [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]", file=sys.stderr, flush=True)
    return "\n".join(rows) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.paired_bootstrap", description=__doc__.split("\n")[0])
    p.add_argument("--a", type=Path, required=True, help="evaluation folder of model A (train.evaluate --out)")
    p.add_argument("--b", type=Path, required=True, help="evaluation folder of model B, same split")
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the resampling (default: %(default)s)")
    p.add_argument("--at", choices=("best", "used"), default="best",
                   help="score each model at its own best threshold per data set (best: ODS, as train.evaluate "
                        "reports it) or at the threshold its evaluation decided at (used: the model's calibrated "
                        "threshold, what the daemon runs) (default: %(default)s)")
    add_results_args(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.resamples < 100:
        print(f"error: --resamples must be at least 100 for a 95 % interval, got {args.resamples}", file=sys.stderr)
        return 2
    try:
        table = comparison_table(args.a, args.b, args.resamples, args.seed, args.at)
    except PairingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    scored = ("ODS Fβ (β² = 0.3), 0 px, each model at its own best threshold" if args.at == "best" else
              "Fβ (β² = 0.3), 0 px, each model at the threshold its evaluation decided at (its calibrated threshold)")
    title = "Paired bootstrap of test ODS: is B below A?" if args.at == "best" else \
        "Paired bootstrap of test F at the thresholds used: is B below A?"
    text = (section_header(title, command_line(__file__, argv),
                           [f"A: {args.a}; B: {args.b}; {args.resamples} paired resamples of each data set's images, "
                            f"seed {args.seed}; {scored}."])
            + "\n" + table)
    publish(text, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
