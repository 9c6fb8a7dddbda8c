"""``--grid-search``: choose AELF's (gamma1, gamma2) on the validation split, then retrain (paper sec. 4).

For every pair of the grid (default {-0.07, -0.03, 0, 0.03, 0.07}^2) a model is trained on the
training split minus the validation images and scored on the validation images (its best epoch's
``--select`` metric, ODS F-beta by default). ``grid.csv`` lists every pair, ``grid.png`` is the
annotated heat-map (rows gamma1, columns gamma2, like the paper's Fig. 11), ``grid.json`` names the
best pair. The final model is then trained with the best pair in ``<out>/final`` (or ``--repeats``
seeds) and evaluated on the test split.

Difference to the paper: the final model is also trained without the validation images, which we
keep for best-epoch selection and the decision threshold; the paper retrains on the whole training set.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from train import distributed
from train.config import TrainConfig
from train.loop import train_run
from train.report import plot_grid_heatmap, write_json, write_text_atomic

PAPER_GRID = (-0.07, -0.03, 0.0, 0.03, 0.07)


def parse_grid(text: str) -> tuple[float, ...]:
    """'-0.07,-0.03,0,0.03,0.07' -> floats; raises ValueError naming the bad item."""
    values = []
    for item in text.split(","):
        try:
            values.append(float(item))
        except ValueError as exc:
            raise ValueError(f"--grid must be comma-separated numbers, got {item!r} in {text!r}") from exc
    if not values:
        raise ValueError("--grid is empty")
    return tuple(values)


def grid_search(config: TrainConfig, out: str | Path, grid: Sequence[float] = PAPER_GRID) -> dict[str, Any]:
    """Train one AELF model per (gamma1, gamma2) and score it on validation; returns the best pair.

    Writes ``grid.csv``, ``grid.json`` and ``grid.png`` into ``out`` (trials in ``out/grid/``).
    """
    out = Path(out)
    config = config.with_(loss="aelf")
    scores = np.full((len(grid), len(grid)), np.nan)
    lines = ["gamma1,gamma2,val_score,select,best_epoch,val_ods_threshold,run"]
    for i, g1 in enumerate(grid):
        for j, g2 in enumerate(grid):
            trial_out = out / "grid" / f"g1_{g1:+.3f}_g2_{g2:+.3f}"
            result = train_run(config.with_(gamma1=g1, gamma2=g2), trial_out)
            if not result.best_val:
                continue  # another rank under torchrun
            scores[i, j] = float(result.best_val[config.select])
            lines.append(f"{g1:g},{g2:g},{scores[i, j]:.6f},{config.select},{result.best_epoch},"
                         f"{result.best_val.get('ods_threshold', '')},{trial_out}")
    best: dict[str, Any] = {"grid": list(grid), "select": config.select, "scores": scores.tolist()}
    if np.isfinite(scores).any():
        bi, bj = np.unravel_index(np.nanargmax(scores), scores.shape)
        best.update(gamma1=float(grid[bi]), gamma2=float(grid[bj]), val_score=float(scores[bi, bj]))
        print(f"grid search: best gamma1={best['gamma1']:g}, gamma2={best['gamma2']:g} "
              f"(validation {config.select} {best['val_score']:.4f}); table in {out / 'grid.csv'}", flush=True)
        write_text_atomic(out / "grid.csv", "\n".join(lines) + "\n")
        write_json(out / "grid.json", best)
        plot_grid_heatmap(scores, grid, grid, out / "grid.png",
                          title=f"{config.data_name}: validation {config.select}")
    return distributed.setup(config.device).broadcast(best)  # every rank retrains with rank 0's pair
