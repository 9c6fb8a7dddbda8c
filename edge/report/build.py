"""Alerts in, report files out: ``report.html``, ``cracks.geojson``, ``cracks.csv`` in one folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge.report.exports import csv_text, geojson_text
from edge.report.html import render_report
from edge.report.load import find_snapshot, read_inputs
from edge.report.records import DedupOptions, group_cracks, scene_signature, track_points


@dataclass(frozen=True)
class ReportFiles:
    html: Path
    geojson: Path
    csv: Path
    alerts: int
    cracks: int
    observations: int


def write_report(inputs: list[Path], out_dir: Path, *, snapshot_dirs: list[Path] | None = None,
                 title: str = "Crack inspection report", dedup: DedupOptions = DedupOptions(),  # noqa: B008
                 loaded: tuple[list[dict], dict[str, bytes]] | None = None) -> ReportFiles:
    """Read the alerts of ``inputs`` (JSONL / outbox), group the cracks, write the three files into ``out_dir``.

    ``loaded``: alerts and snapshot JPEGs already read elsewhere (edge/report/db.py), used instead of ``inputs``.
    """
    alerts, jpegs = loaded if loaded is not None else read_inputs(inputs)
    dirs = list(snapshot_dirs or [])
    dirs += [p.parent / "snapshots" for p in inputs if (p.parent / "snapshots").is_dir()]  # the demo's layout
    snapshots = {a["alert_id"]: find_snapshot(a, dirs, jpegs) for a in alerts}
    signatures = {}
    for alert_id, jpeg in snapshots.items():
        image = None if jpeg is None else cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_GRAYSCALE)
        if image is not None:
            signatures[alert_id] = scene_signature(image)
    groups = group_cracks(alerts, dedup, signatures)
    track = track_points(alerts)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = ReportFiles(out_dir / "report.html", out_dir / "cracks.geojson", out_dir / "cracks.csv", len(alerts),
                        len(groups), sum(len(g.observations) for g in groups))
    files.html.write_text(render_report(groups, track, snapshots, title=title, n_alerts=len(alerts)), encoding="utf-8")
    files.geojson.write_text(geojson_text(groups, track), encoding="utf-8")
    files.csv.write_text(csv_text(groups), encoding="utf-8")
    return files
