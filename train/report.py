"""Run outputs: history.csv, metrics.json, PR curve (PNG + CSV), overlays, seed summaries, grid heat-map.

Files are written atomically (temp file + rename) where a reader could see them half-written.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from contract.metrics import BETA2, ThresholdSweep, f_beta_from_pr, prf

HISTORY_FIELDS = (
    "epoch", "train_loss", "steps", "lr", "seconds",
    "val_precision", "val_recall", "val_f_beta", "val_f1", "val_iou",
    "val_ods_f", "val_ods_threshold", "val_ois_f", "val_ap",
)  # fmt: skip
SUMMARY_KEYS = ("f_beta", "ods_f", "ois_f", "f1", "iou", "precision", "recall", "ap", "threshold", "ods_threshold")


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_json(path: str | os.PathLike, data: Any) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


# ----------------------------------------------------------------------------- history.csv


def history_row(epoch: int, train_loss: float, steps: int, lr: float, seconds: float, val: Mapping | None) -> dict:
    """One history.csv row; validation columns empty on epochs without validation."""
    row: dict[str, Any] = {"epoch": epoch, "train_loss": f"{train_loss:.6f}", "steps": steps, "lr": f"{lr:g}",
                           "seconds": f"{seconds:.2f}"}
    for key in HISTORY_FIELDS[5:]:
        name = key[len("val_"):]
        row[key] = "" if val is None else f"{float(val[name]):.6f}"
    return row


def append_history(path: str | os.PathLike, row: Mapping[str, Any], fields: Sequence[str] = HISTORY_FIELDS) -> None:
    """Append one row to a per-epoch CSV (``history.csv`` by default; ``fields``: another file's columns)."""
    path = Path(path)
    new = not path.exists()
    with path.open("a", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(fields))
        if new:
            writer.writeheader()
        writer.writerow(dict(row))


def read_history(path: str | os.PathLike) -> list[dict[str, str]]:
    path = Path(path)
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def truncate_history(path: str | os.PathLike, last_epoch: int, fields: Sequence[str] = HISTORY_FIELDS) -> None:
    """Drop rows after ``last_epoch`` (written by an interrupted run after its last checkpoint)."""
    rows = [r for r in read_history(path) if int(r["epoch"]) <= last_epoch]
    path = Path(path)
    if path.exists():
        path.unlink()
    for row in rows:
        append_history(path, row, fields)


# ----------------------------------------------------------------------------- metrics


def write_pr_curve(sweep: ThresholdSweep, folder: str | os.PathLike, label: str, title: str = "") -> tuple[Path, Path]:
    """``pr_curve.csv`` (threshold, precision, recall, f_beta) and ``pr_curve.png`` in ``folder``."""
    folder = Path(folder)
    precision, recall, thresholds = sweep.pr_curve()
    _, _, f = prf(*(c.astype(float) for c in sweep.totals()))
    lines = ["threshold,precision,recall,f_beta"]
    lines += [f"{t:.4f},{p:.6f},{r:.6f},{fb:.6f}" for t, p, r, fb in zip(thresholds, precision, recall, f, strict=True)]
    csv_path = write_text_atomic(folder / "pr_curve.csv", "\n".join(lines) + "\n")
    png_path = plot_pr_curves({label: (precision, recall)}, folder / "pr_curve.png", title)
    return png_path, csv_path


TABLE_KEYS = ("n_images", "ods_f", "ois_f", "ap", "f_beta", "precision", "recall")


def source_table(metrics: Mapping[str, Any], title: str | None = None) -> str:
    """A console table of a metrics dict: one row per data set (``sources``) and the pooled row.

    ``f_beta``, ``precision``, ``recall`` are at the model's threshold (``at_threshold``) where present.
    """
    def cells(m: Mapping[str, Any]) -> list[str]:
        at = m.get("at_threshold") or {}
        row = [str(int(m.get("n_images", 0)))]
        row += [f"{float(m[k]):.4f}" for k in ("ods_f", "ois_f", "ap")]
        row += [f"{float(at.get(k, m.get(k, float('nan')))):.4f}" for k in ("f_beta", "precision", "recall")]
        return row

    threshold = (metrics.get("at_threshold") or {}).get("threshold", metrics.get("threshold", 0.5))
    header = ["data set", "images", "ODS F", "OIS F", "AP", f"F@{threshold:.2f}", "P", "R"]
    rows = [[name, *cells(m)] for name, m in (metrics.get("sources") or {}).items()]
    label = "pooled (mean)" if rows else str(metrics.get("data", "all"))
    rows.append([label, *cells(metrics)])
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [title] if title else []
    lines.append("  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths, strict=True))))
    for row in rows:
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- overlays


def overlay(image_rgb: np.ndarray, prob: np.ndarray, mask: np.ndarray, threshold: float) -> np.ndarray:
    """BGR uint8 picture for a person: true positives green, false positives red, misses (FN) blue."""
    pred = prob >= threshold
    crack = mask.astype(bool)
    out = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR).astype(np.float32) * 0.6
    colours = {(0, 200, 0): pred & crack, (0, 0, 255): pred & ~crack, (255, 64, 0): ~pred & crack}
    for bgr, where in colours.items():
        out[where] = bgr
    return out.clip(0, 255).astype(np.uint8)


def write_overlay(folder: str | os.PathLike, stem: str, image_rgb: np.ndarray, prob: np.ndarray, mask: np.ndarray,
                  threshold: float) -> Path:
    path = Path(folder) / f"{stem}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), overlay(image_rgb, prob, mask, threshold)):
        raise OSError(f"could not write overlay {path}")
    return path


# ----------------------------------------------------------------------------- seed summaries


def summarize(runs: Sequence[Mapping[str, Any]], keys: Iterable[str] = SUMMARY_KEYS) -> dict[str, dict[str, float]]:
    """Mean, sample standard deviation (0 for one run), min, max and n of each metric over runs."""
    out = {}
    for key in keys:
        values = [float(r[key]) for r in runs if isinstance(r.get(key), (int, float))]
        if not values:
            continue
        arr = np.asarray(values)
        out[key] = {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
                    "min": float(arr.min()), "max": float(arr.max()), "n": int(arr.size)}
    return out


def pm(stat: Mapping[str, float] | None, digits: int = 4) -> str:
    """'mean ± std' of a summarize() entry ('-' when missing)."""
    if not stat:
        return "-"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def summary_markdown(title: str, summary: Mapping[str, Mapping[str, float]], seeds: Sequence[int]) -> str:
    lines = [f"# {title}", "", f"Seeds: {', '.join(str(s) for s in seeds)} (mean ± sample std over {len(seeds)} runs)",
             "", "| metric | mean ± std | min | max |", "|---|---|---|---|"]
    for key, stat in summary.items():
        lines.append(f"| {key} | {pm(stat)} | {stat['min']:.4f} | {stat['max']:.4f} |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- grid heat-map


def plot_grid_heatmap(scores: np.ndarray, gamma1: Sequence[float], gamma2: Sequence[float], path: str | os.PathLike,
                      title: str = "validation F-beta over (gamma1, gamma2)") -> Path:
    """Annotated heat-map like the paper's Fig. 11: rows gamma1, columns gamma2, best cell outlined."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    scores = np.asarray(scores, float)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(1.1 * len(gamma2) + 2.2, 1.0 * len(gamma1) + 1.6), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    finite = scores[np.isfinite(scores)]
    image = ax.imshow(scores, cmap="viridis", vmin=finite.min() if finite.size else 0,
                      vmax=finite.max() if finite.size else 1)
    fig.colorbar(image, ax=ax, label="F-beta (beta^2=0.3)")
    ax.set_xticks(range(len(gamma2)), [f"{g:g}" for g in gamma2])
    ax.set_yticks(range(len(gamma1)), [f"{g:g}" for g in gamma1])
    ax.set_xlabel("gamma2 (false-negative side)")
    ax.set_ylabel("gamma1 (false-positive side)")
    mid = (finite.min() + finite.max()) / 2 if finite.size else 0.5
    for i in range(scores.shape[0]):
        for j in range(scores.shape[1]):
            value = scores[i, j]
            text = "-" if not math.isfinite(value) else f"{value:.3f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color="black" if value > mid else "white")
    if finite.size:
        bi, bj = np.unravel_index(np.nanargmax(scores), scores.shape)
        ax.add_patch(Rectangle((bj - 0.5, bi - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    return path


def plot_pr_curves(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    path: str | Path,
    title: str = "",
    beta2: float = BETA2,
) -> Path:
    """Write a PNG of precision-recall curves with iso-F-beta contours and each curve's best-F point."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: plotting is optional
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(5.5, 5.0), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    grid_r, grid_p = np.meshgrid(np.linspace(0.001, 1, 200), np.linspace(0.001, 1, 200))
    iso = (1 + beta2) * grid_p * grid_r / (beta2 * grid_p + grid_r)
    contours = ax.contour(grid_r, grid_p, iso, levels=np.arange(0.1, 1.0, 0.1), colors="0.8", linewidths=0.7)
    ax.clabel(contours, fmt="%.1f", fontsize=7)
    for label, (precision, recall) in curves.items():
        precision, recall = np.asarray(precision, float), np.asarray(recall, float)
        if precision.shape != recall.shape:
            raise ValueError(f"curve {label!r}: precision {precision.shape} and recall {recall.shape} differ")
        f = f_beta_from_pr(precision, recall, beta2)
        (line,) = ax.plot(recall, precision, label=f"{label} (best F={f.max():.3f})" if f.size else label)
        if f.size:
            k = int(np.argmax(f))
            ax.plot(recall[k], precision[k], "o", color=line.get_color())
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title or f"precision-recall (iso-F contours, beta^2={beta2:g})")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    return path
