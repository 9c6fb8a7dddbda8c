"""Merge the per-row run folders of ``benchmarks/run_ablation.sh`` into one Table-6 report and figures.

``run_ablation.sh`` trains each row of the paper's ablation (Liu et al. 2022, Table 6) with its own
``python -m train.run`` so that two rows can train side by side on a 2-core CPU; ``train.ablation``
would train them one after another. This program reads those folders back and writes what
``train.ablation`` writes (``ablation.json``, ``ablation.md``, same format, rendered by
``train.ablation.ablation_markdown``) plus figures:

* ``<name>_pr.png``: test precision-recall curves, one per row, precision and recall averaged over
  seeds at each threshold (pooled pixel counts per seed, as ``contract.metrics.ThresholdSweep``);
* ``<name>_val_curves.png``: validation ODS F-beta per epoch of every row (seed 0): did it converge?
* ``<name>_grid.png``: the gamma grid heat-map (validation ODS F-beta), when ``--runs`` has ``grid/``.

A row folder holds ``summary.json`` + ``seed-<s>/`` (``--repeats``), one run (``metrics.json``), or
only ``seed-<s>/`` run folders, each from its own ``train.run --seed s`` (seeds added to a row after the
fact, as run_ablation.sh does on DeepCrack); the grid folder ``grid/`` holds ``grid.json`` (``--grid-search``).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from train.ablation import TABLE_COLUMNS, ablation_markdown, paper_rows
from train.losses import LOSS_NAMES
from train.report import (
    plot_grid_heatmap,
    plot_pr_curves,
    pm,
    read_history,
    summarize,
    write_json,
    write_text_atomic,
)

REPO = Path(__file__).resolve().parents[1]

ROW_LABELS = {row.key: row.label for row in paper_rows(tuple(LOSS_NAMES))}  # Table 6 order, then baselines
ROW_ORDER = list(ROW_LABELS)


class SummaryError(Exception):
    """A run folder lacks the files a finished ``train.run`` writes."""


def load_row(folder: Path) -> dict[str, Any]:
    """One row: its config, per-seed run folders and metric summary (mean, std, min, max, n)."""
    summary_path, metrics_path = folder / "summary.json", folder / "metrics.json"
    if summary_path.exists():
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        runs = [folder / Path(r).name for r in summary["runs"]]
        return {"config": summary["config"], "seeds": summary["seeds"], "runs": runs, "metrics": summary["metrics"]}
    if metrics_path.exists():
        metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        config = config.get("train_config", config)
        return {"config": config, "seeds": [config["seed"]], "runs": [folder], "metrics": summarize([metrics])}
    seed_runs = sorted((d for d in folder.glob("seed-*") if (d / "metrics.json").exists()),
                       key=lambda d: int(d.name.split("-", 1)[1]))
    if seed_runs:  # seeds trained by separate `train.run --seed s --out <row>/seed-<s>` calls
        rows = [load_row(run) for run in seed_runs]
        metrics = [json.loads((run / "metrics.json").read_text(encoding="utf-8")) for run in seed_runs]
        return {"config": rows[0]["config"], "seeds": [r["seeds"][0] for r in rows], "runs": seed_runs,
                "metrics": summarize(metrics)}
    raise SummaryError(f"{folder}: neither summary.json (--repeats), metrics.json (one run) nor "
                       "seed-<s>/metrics.json (one run per seed); did its train.run finish? (see the .log next to it)")


def mean_pr_curve(runs: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall at each threshold of the runs' pr_curve.csv, averaged over runs."""
    precisions, recalls = [], []
    for run in runs:
        path = run / "pr_curve.csv"
        if not path.exists():
            raise SummaryError(f"{path} missing: the run did not reach its test evaluation")
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        precisions.append([float(r["precision"]) for r in rows])
        recalls.append([float(r["recall"]) for r in rows])
    return np.mean(precisions, axis=0), np.mean(recalls, axis=0)


def best_f1(run: Path) -> float:
    """F1 (beta = 1) at the best single threshold of a run's test PR curve: ODS-F1, the "best F-score"
    crack papers such as DeepCrack (Liu et al. 2019) report, while our tables use F-beta (beta^2 = 0.3)."""
    precision, recall = mean_pr_curve([run])
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    return float(f1.max())


def plot_val_curves(rows: dict[str, dict[str, Any]], path: Path, title: str) -> Path:
    """Validation ODS F-beta per epoch of each row's first seed (convergence check)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 4.2), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for key, row in rows.items():
        history = [h for h in read_history(row["runs"][0] / "history.csv") if h.get("val_ods_f")]
        ax.plot([int(h["epoch"]) for h in history], [float(h["val_ods_f"]) for h in history],
                label=ROW_LABELS.get(key, key))
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation ODS F-beta (beta^2 = 0.3)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def summarize_ablation(runs_dir: Path, out: Path, figures: Path, name: str, title: str,
                       gamma_source: str) -> dict[str, Any]:
    """Read every row folder under ``runs_dir``; write ablation.json/.md into ``out`` and PNGs into ``figures``."""
    if not runs_dir.is_dir():
        raise SummaryError(f"--runs {runs_dir}: no such folder")
    found = {p.name: p for p in runs_dir.iterdir() if p.is_dir() and p.name in ROW_LABELS}
    if not found:
        raise SummaryError(f"--runs {runs_dir}: no row folders; expected some of {', '.join(ROW_ORDER)}")
    rows = {key: load_row(found[key]) for key in ROW_ORDER if key in found}
    first = next(iter(rows.values()))
    report: dict[str, Any] = {
        "data": Path(first["config"]["data"]).name,
        "repeats": max(len(r["seeds"]) for r in rows.values()),
        "seeds": sorted({s for r in rows.values() for s in r["seeds"]}),
        "gamma_source": gamma_source,
        "config": first["config"],
        "rows": [{"row": ROW_LABELS[key], "key": key, "head": r["config"]["head"], "loss": r["config"]["loss"],
                  "gamma1": r["config"]["gamma1"], "gamma2": r["config"]["gamma2"], "seeds": r["seeds"],
                  "epochs": r["config"]["epochs"], "metrics": r["metrics"],
                  "ods_f1": summarize([{"ods_f1": best_f1(run)} for run in r["runs"]], keys=("ods_f1",))["ods_f1"]}
                 for key, r in rows.items()],
    }
    grid_json = runs_dir / "grid" / "grid.json"
    if grid_json.exists():
        grid = json.loads(grid_json.read_text(encoding="utf-8"))
        report["grid"] = grid
        plot_grid_heatmap(np.asarray(grid["scores"], float), grid["grid"], grid["grid"], figures / f"{name}_grid.png",
                          title=f"{title}: validation {grid['select']}")
    curves = {f"{ROW_LABELS[key]} (n={len(r['runs'])})": mean_pr_curve(r["runs"]) for key, r in rows.items()}
    plot_pr_curves(curves, figures / f"{name}_pr.png", title=f"{title}: test PR curves (mean over seeds)")
    plot_val_curves(rows, figures / f"{name}_val_curves.png", title=f"{title}: validation ODS F-beta, seed 0")
    write_json(out / "ablation.json", report)
    write_text_atomic(out / "ablation.md", table_markdown(report) + "\n" + extra_markdown(report))
    return report


def fmt(stat: dict[str, float] | None) -> str:
    """'mean ± std' over seeds, or 'value (1 seed)' where one run gives no spread to report."""
    if stat and stat.get("n") == 1:
        return f"{stat['mean']:.4f} (1 seed)"
    return pm(stat)


def table_markdown(report: dict[str, Any]) -> str:
    """train.ablation's table (same header and columns), with single-seed rows marked instead of '± 0'."""
    text = ablation_markdown(report)
    head = text[: text.index("| model |")]
    lines = ["| model | " + " | ".join(title for _, title in TABLE_COLUMNS) + " |", "|---|" + "---|" * len(TABLE_COLUMNS)]
    for row in report["rows"]:
        label = row["row"] + (f" (γ₁={row['gamma1']:g}, γ₂={row['gamma2']:g})" if row["loss"] == "aelf" else "")
        lines.append(f"| {label} | " + " | ".join(fmt(row["metrics"].get(k)) for k, _ in TABLE_COLUMNS) + " |")
    return head + "\n".join(lines) + "\n"


def extra_markdown(report: dict[str, Any]) -> str:
    """Columns for comparing with crack papers: P, R at 0.5, ODS-F1 (beta = 1), AP; seeds and epochs per row."""
    lines = ["| model | P@0.5 | R@0.5 | ODS F1 (β=1) | AP | seeds | epochs |", "|---|---|---|---|---|---|---|"]
    for row in report["rows"]:
        m = row["metrics"]
        lines.append(f"| {row['row']} | {fmt(m.get('precision'))} | {fmt(m.get('recall'))} | {fmt(row['ods_f1'])} | "
                     f"{fmt(m.get('ap'))} | {', '.join(str(s) for s in row['seeds'])} | {row['epochs']} |")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.summarize_ablation",
        description="Merge the row folders written by benchmarks/run_ablation.sh into ablation.json/.md "
        "(train.ablation's format) and PR-curve, validation-curve and gamma-grid PNGs.",
    )
    parser.add_argument("--runs", type=Path, required=True,
                        help="folder holding one sub-folder per row (shallow-bce, deep-bce, deep-exp, deep-aelf, "
                        "deep-<loss>) and optionally grid/ (required)")
    parser.add_argument("--out", type=Path, default=None,
                        help="where ablation.json/.md go (default: <runs>-summary)")
    parser.add_argument("--figures", type=Path, default=REPO / "benchmarks" / "figures",
                        help="folder of the PNGs (default: benchmarks/figures)")
    parser.add_argument("--name", default=None, help="file-name prefix of the PNGs (default: ablation_<runs name>)")
    parser.add_argument("--title", default=None, help="figure/table title (default: the data set folder name)")
    parser.add_argument("--gamma-source", default="the grid/ search in --runs, or as given to train.run",
                        help="text for the table header saying where AELF's gamma came from (default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = args.out or args.runs.with_name(args.runs.name + "-summary")
    try:
        report = summarize_ablation(args.runs, out, args.figures, args.name or f"ablation_{args.runs.name}",
                                    args.title or args.runs.name, args.gamma_source)
    except SummaryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(table_markdown(report) + "\n" + extra_markdown(report))
    print(f"written to {out / 'ablation.md'} and {args.figures}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
