"""Alerts in, report folder out: ``report.html`` (+ ``lib/``, ``frames/``), ``cracks.geojson``,
``track.geojson`` and ``cracks.csv``.

:func:`build_report` takes :class:`~edge.report.load.AlertRecords` (from files, or any other store)
and writes the folder; :func:`write_report` is the file-input path (load, then build).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge.report.exports import cracks_geojson, csv_text, geojson_text, track_geojson
from edge.report.html import render_report
from edge.report.load import AlertRecords, ReportInputError, load_files
from edge.report.records import DedupOptions, group_cracks, scene_signature, summary_row, track_with_chainage

VENDOR = Path(__file__).resolve().parent / "vendor"
LIB_FILES = ("leaflet/leaflet.js", "leaflet/leaflet.css", "leaflet.markercluster/leaflet.markercluster.js",
             "leaflet.markercluster/MarkerCluster.css", "leaflet.markercluster/MarkerCluster.Default.css")


@dataclass(frozen=True)
class ReportFiles:
    html: Path
    geojson: Path
    track_geojson: Path
    csv: Path
    alerts: int
    cracks: int
    observations: int
    snapshots: int  # listed cracks whose frame JPEG was found and written


def _out_folder(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ReportInputError(f"--out {out_dir} is a file; give a folder for report.html and its files")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "lib").mkdir(exist_ok=True)
    (out_dir / "frames").mkdir(exist_ok=True)
    for name in LIB_FILES:
        shutil.copyfile(VENDOR / name, out_dir / "lib" / Path(name).name)


def build_report(records: AlertRecords, out_dir: Path, *, title: str = "Crack inspection report",
                 dedup: DedupOptions = DedupOptions(), tile_url: str | None = None,  # noqa: B008
                 tile_attribution: str = "") -> ReportFiles:
    """Group the cracks of ``records`` and write the report folder ``out_dir`` (created if missing)."""
    _out_folder(out_dir)
    by_id = {a["alert_id"]: a for a in records.alerts}
    signatures: dict[str, np.ndarray | None] = {}

    def signature(alert_id: str) -> np.ndarray | None:  # decoded at 1/4 scale, only when a rule needs it
        if alert_id not in signatures:
            jpeg = records.snapshot(by_id[alert_id])
            image = None if not jpeg else cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_REDUCED_GRAYSCALE_4)
            signatures[alert_id] = None if image is None else scene_signature(image)
        return signatures[alert_id]

    groups = group_cracks(records.alerts, dedup, signature)
    track, chainage = track_with_chainage(records.alerts)
    rows, written = [], {}
    for n, group in enumerate(groups, 1):
        row = summary_row(group, chainage)
        alert = group.worst.alert
        if alert["alert_id"] not in written:
            jpeg = records.snapshot(alert)
            name = f"frames/{alert['alert_id']}.jpg"
            if jpeg:
                (out_dir / name).write_bytes(jpeg)
            written[alert["alert_id"]] = name if jpeg else None
        rows.append({**row, "n": n, "image": written[alert["alert_id"]], "bbox": group.worst.crack["bbox"],
                     "frame_w": alert["frame_size"]["width"], "frame_h": alert["frame_size"]["height"]})
    files = ReportFiles(out_dir / "report.html", out_dir / "cracks.geojson", out_dir / "track.geojson",
                        out_dir / "cracks.csv", len(records.alerts), len(groups),
                        sum(len(g.observations) for g in groups), sum(1 for r in rows if r["image"]))
    files.geojson.write_text(geojson_text(cracks_geojson(rows)), encoding="utf-8")
    files.track_geojson.write_text(geojson_text(track_geojson(track)), encoding="utf-8")
    files.csv.write_text(csv_text(rows), encoding="utf-8")
    files.html.write_text(render_report(rows, track, title=title, n_alerts=len(records.alerts),
                                        n_observations=files.observations, origin=records.origin, tile_url=tile_url,
                                        tile_attribution=tile_attribution), encoding="utf-8")
    return files


def write_report(inputs: list[Path], out_dir: Path, *, snapshot_dirs: list[Path] | None = None,
                 **options) -> ReportFiles:
    """Read the alerts of ``inputs`` (JSONL / outbox) and write the report folder (see :func:`build_report`)."""
    return build_report(load_files(inputs, snapshot_dirs), out_dir, **options)
