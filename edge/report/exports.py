"""GeoJSON and CSV exports of the deduplicated cracks (open in QGIS, any GIS tool, a spreadsheet).

GeoJSON (RFC 7946, WGS 84 lon/lat): one ``Point`` feature per crack that has a position, with the
report row as properties, and one ``LineString`` feature for the track (``"kind": "track"``).
Cracks without a position are left out of the GeoJSON (they are in the CSV and the HTML).
CSV: one row per crack, the columns of :func:`edge.report.records.summary_row`, empty cells for
unknown values.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from edge.report.records import REPORT_COLUMNS, CrackGroup, summary_row


def to_geojson(groups: list[CrackGroup], track: list[tuple[float, float]]) -> dict[str, Any]:
    """The FeatureCollection (a dict ready for ``json.dumps``)."""
    features: list[dict[str, Any]] = []
    for group in groups:
        row = summary_row(group)
        if row["lat"] is None:
            continue
        features.append({"type": "Feature", "geometry": {"type": "Point", "coordinates": [row["lon"], row["lat"]]},
                         "properties": {"kind": "crack", **row}})
    if len(track) >= 2:
        features.append({"type": "Feature", "geometry": {"type": "LineString",
                                                          "coordinates": [[lon, lat] for lat, lon in track]},
                         "properties": {"kind": "track", "points": len(track)}})
    return {"type": "FeatureCollection", "features": features}


def geojson_text(groups: list[CrackGroup], track: list[tuple[float, float]]) -> str:
    return json.dumps(to_geojson(groups, track), indent=1, ensure_ascii=False) + "\n"


def csv_text(groups: list[CrackGroup]) -> str:
    rows = [summary_row(g) for g in groups]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=REPORT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return out.getvalue()
