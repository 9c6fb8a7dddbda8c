"""GeoJSON and CSV exports of the deduplicated cracks (QGIS, ogr2ogr, any GIS tool, a spreadsheet).

GeoJSON (RFC 7946, WGS 84 lon/lat), one geometry type per file so that every GIS format takes it
(a shapefile holds one type per layer): ``cracks.geojson`` has a ``Point`` per located crack (stale
positions included, flagged in ``position_stale``) with the report row as properties;
``track.geojson`` has the ``LineString`` of the track. Cracks without any position are only in the
CSV and the HTML. CSV: one row per crack, the columns of :data:`edge.report.records.REPORT_COLUMNS`,
empty cells for unknown values.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from edge.report.records import REPORT_COLUMNS


def cracks_geojson(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The cracks' FeatureCollection (points; a dict ready for ``json.dumps``)."""
    features = [{"type": "Feature", "geometry": {"type": "Point", "coordinates": [r["lon"], r["lat"]]},
                 "properties": {k: r[k] for k in REPORT_COLUMNS}}
                for r in rows if r["lat"] is not None]
    return {"type": "FeatureCollection", "features": features}


def track_geojson(track: list[tuple[float, float, float]]) -> dict[str, Any]:
    """The track's FeatureCollection: one LineString (lon, lat) when there are two points or more."""
    features = []
    if len(track) >= 2:
        features.append({"type": "Feature",
                         "geometry": {"type": "LineString", "coordinates": [[lon, lat] for lat, lon, _ in track]},
                         "properties": {"points": len(track), "length_m": round(track[-1][2], 1)}})
    return {"type": "FeatureCollection", "features": features}


def geojson_text(collection: dict[str, Any]) -> str:
    return json.dumps(collection, separators=(",", ":"), ensure_ascii=False) + "\n"


def csv_text(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=REPORT_COLUMNS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row[k] is None else row[k] for k in REPORT_COLUMNS})
    return out.getvalue()
