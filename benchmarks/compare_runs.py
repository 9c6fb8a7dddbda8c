"""Side-by-side table of finished training runs: per-source test ODS Fβ, pooled, mean ± std over seeds.

``python -m benchmarks.compare_runs --run base=runs/gen/recipe-base --run "aelf=runs/gen/loss-aelf-s*"``

Each ``--run LABEL=PATTERN`` names one row; the pattern (a folder or a glob) may match several run
folders (seeds): the row then shows mean ± std over them and the number of runs. A run folder is
read from its ``metrics.json`` (written by ``python -m train.run`` or ``python -m train.evaluate``);
with several data sets it holds a per-source table under ``sources``. Columns: each source's ODS Fβ
(or ``--metric``), the pooled score (every source counting equally, one shared threshold), and the
mean over the sources of their own ODS. The table is appended to ``benchmarks/RESULTS.md`` with the
command, unless ``--no-append``.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import sys
from pathlib import Path

from benchmarks.common import add_results_args, command_line, publish, section_header


def parse_run(text: str) -> tuple[str, list[Path]]:
    """``LABEL=PATTERN`` -> (label, run folders holding a metrics.json); SystemExit naming a bad item."""
    label, sep, pattern = text.rpartition("=")  # a label may hold "=" (γ=0), a path seldom does
    if not sep or not label or not pattern:
        raise SystemExit(f"error: --run must be LABEL=FOLDER_OR_GLOB, got {text!r}")
    folders = sorted(Path(p) for p in glob.glob(pattern) if (Path(p) / "metrics.json").is_file())
    if not folders:
        raise SystemExit(f"error: --run {text!r}: no folder matching {pattern!r} holds a metrics.json (did the run finish?)")
    return label, folders


def source_scores(metrics: dict, metric: str) -> dict[str, float]:
    """Per-source values of ``metric`` (one data set: its name -> its value) plus ``pooled`` / ``mean``."""
    sources = metrics.get("sources") or {metrics.get("data", "data"): metrics}
    scores = {name: float(m[metric]) for name, m in sources.items()}
    scores["pooled"] = float(metrics[metric])
    scores["mean"] = sum(scores[n] for n in sources) / len(sources)
    return scores


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return f"{mean:.3f} ± {std:.3f}"


def table(rows: list[tuple[str, list[Path]]], metric: str) -> str:
    scored = [(label, [source_scores(json.loads((f / "metrics.json").read_text()), metric) for f in folders])
              for label, folders in rows]
    columns: list[str] = []
    for _, runs in scored:
        for run in runs:
            columns += [c for c in run if c not in columns and c not in ("pooled", "mean")]
    columns += ["pooled", "mean"]
    lines = ["| run | n | " + " | ".join(columns) + " |", "|---|---:|" + "---:|" * len(columns)]
    for label, runs in scored:
        cells = [mean_std([r[c] for r in runs if c in r]) if any(c in r for r in runs) else "–" for c in columns]
        lines.append(f"| {label} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.compare_runs",
        description="Per-source test scores of finished runs side by side (mean ± std over the runs of a label); "
        "appends the table to benchmarks/RESULTS.md.")
    parser.add_argument("--run", action="append", required=True, metavar="LABEL=PATTERN",
                        help="a row: label and a run folder or glob of run folders (seeds); repeat for more rows")
    parser.add_argument("--metric", default="ods_f", help="metrics.json key to show (default: %(default)s)")
    parser.add_argument("--title", default="Training runs compared", help="section title (default: %(default)s)")
    parser.add_argument("--note", action="append", default=[], help="a line under the title (repeatable)")
    add_results_args(parser)
    args = parser.parse_args(argv)
    rows = [parse_run(text) for text in args.run]
    header = section_header(args.title, command_line(__file__, argv), args.note)
    publish(header + f"\nTest-split {args.metric} per data set; `pooled`: every data set counting equally at one "
            "shared threshold; `mean`: mean of the data sets' own values.\n\n" + table(rows, args.metric) + "\n", args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
