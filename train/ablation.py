"""``python -m train.ablation``: the paper's Table 6 on a given data set, as a markdown table.

Rows (the paper's ablation, Liu et al. 2022, Table 6):

=====================  ======  ===================================================================
row                    head    loss
=====================  ======  ===================================================================
shallow head           1x1     BCE (the paper's rows without its loss use a standard baseline loss;
                               it does not name it, we take BCE, the usual U-Net loss)
deep head              deep    BCE
deep + Exp (γ=0)       deep    Exp, eq. (6) with α, β (AELF with γ₁ = γ₂ = 0)
deep + AELF            deep    AELF, eq. (7) with --gamma1/--gamma2, or the pair --grid-search picks
deep + <baseline>      deep    each of --baselines (l1, l2, bce, wbce, dice, focal, tversky), optional
=====================  ======  ===================================================================

Every row is trained ``--repeats`` times (seeds seed, seed+1, ...) with the same flags and data
split; ``ablation.md`` shows mean ± std of F-beta@0.5, ODS, OIS, F1 and IoU on the test split,
``ablation.json`` every number, and each row's runs stay in ``<out>/<row>/seed-<s>/``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from train import distributed
from train.config import TrainConfig
from train.grid_search import PAPER_GRID, grid_search, parse_grid
from train.losses import LOSS_NAMES
from train.repeats import run_repeats
from train.report import pm, write_json, write_text_atomic

TABLE_COLUMNS = (("f_beta", "Fβ@0.5"), ("ods_f", "ODS Fβ"), ("ois_f", "OIS Fβ"), ("f1", "F1@0.5"), ("iou", "IoU@0.5"))


@dataclass(frozen=True)
class AblationRow:
    key: str  # folder name
    label: str  # table row
    head: str
    loss: str


def paper_rows(baselines: tuple[str, ...] = ()) -> list[AblationRow]:
    """Table 6's four rows, then one deep-head row per extra baseline loss."""
    rows = [
        AblationRow("shallow-bce", "shallow head (BCE)", "shallow", "bce"),
        AblationRow("deep-bce", "deep head (BCE)", "deep", "bce"),
        AblationRow("deep-exp", "deep head + Exp (γ=0)", "deep", "exp"),
        AblationRow("deep-aelf", "deep head + AELF", "deep", "aelf"),
    ]
    for name in baselines:
        if name not in LOSS_NAMES:
            raise ValueError(f"--baselines: unknown loss {name!r}; valid: {', '.join(LOSS_NAMES)}")
        if name in ("bce", "exp", "aelf"):
            continue  # already a row of the table
        rows.append(AblationRow(f"deep-{name}", f"deep head + {name}", "deep", name))
    return rows


def run_ablation(config: TrainConfig, out: str | Path, *, rows: list[AblationRow], repeats: int = 1,
                 grid: tuple[float, ...] | None = None) -> dict[str, Any]:
    """Train every row ``repeats`` times; write ablation.json and ablation.md into ``out``."""
    out = Path(out)
    gamma1, gamma2 = config.gamma1, config.gamma2
    if grid is not None:
        best = grid_search(config, out / "grid-search", grid)
        gamma1, gamma2 = best["gamma1"], best["gamma2"]
    results = []
    for row in rows:
        row_config = config.with_(head=row.head, loss=row.loss,
                                  gamma1=gamma1 if row.loss == "aelf" else 0.0,
                                  gamma2=gamma2 if row.loss == "aelf" else 0.0)
        summary = run_repeats(row_config, out / row.key, repeats)
        results.append({"row": row.label, "key": row.key, "head": row.head, "loss": row.loss,
                        "gamma1": row_config.gamma1, "gamma2": row_config.gamma2, "metrics": summary["metrics"]})
    report = {"data": config.data_name, "repeats": repeats, "seeds": [config.seed + i for i in range(repeats)],
              "gamma_source": "grid search on validation" if grid is not None else "--gamma1/--gamma2",
              "config": config.to_dict(), "rows": results}
    if distributed.rank() == 0:
        write_json(out / "ablation.json", report)
        write_text_atomic(out / "ablation.md", ablation_markdown(report))
    return report


def ablation_markdown(report: dict[str, Any]) -> str:
    """The Table 6 markdown: one row per model, mean ± std over seeds of each test metric."""
    c = report["config"]
    lines = [
        f"# Ablation on {report['data']} (test split)",
        "",
        f"width {c['width']}, crop {c['size']}, {c['epochs']} epochs, batch {c['batch']}, lr {c['lr']:g}, "
        f"scale {c['scale']:g}; mean ± std over {report['repeats']} seed(s) {report['seeds']}; "
        f"Fβ with β² = 0.3; AELF γ from {report['gamma_source']}.",
        "",
        "| model | " + " | ".join(title for _, title in TABLE_COLUMNS) + " |",
        "|---|" + "---|" * len(TABLE_COLUMNS),
    ]
    for row in report["rows"]:
        label = row["row"] + (f" (γ₁={row['gamma1']:g}, γ₂={row['gamma2']:g})" if row["loss"] == "aelf" else "")
        lines.append(f"| {label} | " + " | ".join(pm(row["metrics"].get(k)) for k, _ in TABLE_COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    from train.run import add_training_flags

    parser = argparse.ArgumentParser(
        prog="python -m train.ablation",
        description="Train the paper's Table 6 rows (shallow head, deep head, deep + Exp, deep + AELF; BCE for "
        "the rows without the paper's loss) on one data set and write ablation.md / ablation.json.",
    )
    # --time-budget-min stops one run for train.run --resume; an ablation is many runs and has no --resume.
    add_training_flags(parser, exclude=frozenset({"loss", "head", "time_budget_min"}))
    for action in parser._actions:  # the shared --data help speaks of train.run's --resume
        if action.dest == "data":
            action.help = action.help.replace("; required unless --resume", " (required)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: runs/ablation-<YYYYmmdd-HHMMSS>)")
    parser.add_argument("--repeats", type=int, default=1, help="seeds per row, mean ± std (paper: 5) (default: %(default)s)")
    parser.add_argument("--baselines", default="", help="extra deep-head rows, comma-separated losses, e.g. "
                        "l1,l2,dice,focal (default: none)")
    parser.add_argument("--grid-search", action="store_true", help="choose AELF's gamma1, gamma2 on validation first")
    parser.add_argument("--grid", default=",".join(f"{g:g}" for g in PAPER_GRID),
                        help="gamma values of the grid search (default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    from train.run import config_from_args, run_cli_job

    args = build_parser().parse_args(argv)

    def job() -> tuple[Path, dict[str, Any]]:
        config = config_from_args(args)
        baselines = tuple(b.strip() for b in args.baselines.split(",") if b.strip())
        ctx = distributed.setup(config.device)
        out = Path(ctx.broadcast(str(args.out or Path("runs") / f"ablation-{datetime.now():%Y%m%d-%H%M%S}")))
        return out, run_ablation(config, out, rows=paper_rows(baselines), repeats=args.repeats,
                                 grid=parse_grid(args.grid) if args.grid_search else None)

    code, done = run_cli_job(job)
    if done is None:
        return code
    out, report = done
    if distributed.rank() == 0:
        print(ablation_markdown(report))
        print(f"written to {out / 'ablation.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
