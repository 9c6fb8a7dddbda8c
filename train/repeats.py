"""``--repeats N``: the same training with seeds seed, seed+1, ... in sub-folders, and mean ± std.

The paper trains every experiment 5 times and averages the metric. Each seed gets its own run
folder ``<out>/seed-<s>/`` (with its own seeded split where the data set has none); ``summary.json``
and ``summary.md`` hold mean, sample standard deviation, min and max of each test metric.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from train.config import TrainConfig
from train.loop import train_run
from train.report import summarize, summary_markdown, write_json, write_text_atomic


def run_repeats(config: TrainConfig, out: str | Path, repeats: int) -> dict[str, Any]:
    """Train ``repeats`` seeds and write summary.json / summary.md into ``out``; returns the summary dict."""
    if repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {repeats}")
    out = Path(out)
    seeds = [config.seed + i for i in range(repeats)]
    runs = []
    for seed in seeds:
        result = train_run(config.with_(seed=seed), out / f"seed-{seed}")
        runs.append(result.metrics)
    summary = {
        "seeds": seeds,
        "runs": [str(out / f"seed-{s}") for s in seeds],
        "config": config.to_dict(),
        "metrics": summarize(runs),
    }
    if runs and runs[0]:  # rank 0 (under torchrun only rank 0 has metrics)
        write_json(out / "summary.json", summary)
        title = f"{config.data_name}: {config.loss}, {config.head} head, width {config.width}"
        write_text_atomic(out / "summary.md", summary_markdown(title, summary["metrics"], seeds))
    return summary
