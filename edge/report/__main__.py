"""``python -m edge.report``: an offline inspection report from crack alerts.

    python -m edge.report alerts.jsonl [outbox.sqlite3 ...] --out report/ [--snapshots DIR]
    python -m edge.report --db sqlite:///alerts.db [--site S] [--device D] [--since 24h] --out report/

Writes the folder ``--out``: ``report.html`` (map, table, crops; with ``lib/`` and ``frames/``),
``cracks.geojson``, ``track.geojson`` and ``cracks.csv``. Thin: parse flags, load the alerts, call ``build_report``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from edge.report.build import build_report
from edge.report.load import ReportInputError, load_files
from edge.report.records import DedupOptions

DEFAULTS = DedupOptions()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m edge.report",
        description="Inspection report from crack alerts: report.html (offline map + table; with lib/ and frames/ "
        "beside it), cracks.geojson, track.geojson, cracks.csv. The same crack seen in several frames is listed once "
        "(rules: docs/REPORT.md). Exit status 1 with one sentence on stderr when an input cannot be used.",
    )
    parser.add_argument("inputs", nargs="*", type=Path, metavar="INPUT",
                        help="alerts as JSON lines (python -m edge.subscribe --out, the demo's alerts.jsonl) or a "
                        "daemon's outbox .sqlite3 (its queued alerts and snapshots); or use --db")
    parser.add_argument("--db", default=None, metavar="URL",
                        help="read the alerts from the fleet database that python -m edge.ingest fills, "
                        "sqlite:///alerts.db or postgresql://user@host/db (default: none, read INPUT files)")
    parser.add_argument("--site", default=None, help="with --db: only this site (default: all)")
    parser.add_argument("--device", default=None, help="with --db: only this device id (default: all)")
    parser.add_argument("--since", default=None, metavar="WHEN",
                        help="with --db: captured at or after WHEN, an ISO date/time (UTC unless an offset is given) "
                        "or a span back from now: 30m, 24h, 7d (default: all)")
    parser.add_argument("--out", type=Path, default=Path("report"), metavar="DIR",
                        help="folder for the report's files, created if missing (default: %(default)s)")
    parser.add_argument("--snapshots", type=Path, action="append", default=[], metavar="DIR",
                        help="folder of <alert_id>.jpg overlays, repeatable (default: each alert's snapshot.path, "
                        "and a snapshots/ folder beside each input)")
    parser.add_argument("--title", default="Crack inspection report", help="report title (default: %(default)s)")
    parser.add_argument("--tile-url", default=None, metavar="URL",
                        help="background map tiles for online use, e.g. https://tile.openstreetmap.org/{z}/{x}/{y}.png "
                        "(default: none, the map works offline on a plain background)")
    parser.add_argument("--tile-attribution", default="", metavar="TEXT",
                        help="credit line the tile provider requires, e.g. '© OpenStreetMap contributors' "
                        "(default: none)")
    parser.add_argument("--max-gap-s", type=float, default=DEFAULTS.max_gap_s, metavar="S",
                        help="same crack only if seen again within this many seconds (default: %(default)s s)")
    parser.add_argument("--max-distance-m", type=float, default=DEFAULTS.max_distance_m, metavar="M",
                        help="same crack only if its positions are this close, metres (default: %(default)s m)")
    parser.add_argument("--min-overlap", type=float, default=DEFAULTS.min_overlap, metavar="F",
                        help="without positions: same crack if the boxes overlap by this fraction of the smaller "
                        "(default: %(default)s)")
    parser.add_argument("--min-scene-correlation", type=float, default=DEFAULTS.min_scene_correlation, metavar="R",
                        help="without positions: same crack only if the two frames' snapshots correlate this well, "
                        "-1..1 (default: %(default)s)")
    parser.add_argument("--margin-px", type=float, default=DEFAULTS.margin_px, metavar="PX",
                        help="boxes grow by this before the overlap test, pixels (default: %(default)s px)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    dedup = DedupOptions(args.max_gap_s, args.max_distance_m, args.min_overlap, args.margin_px,
                         args.min_scene_correlation)
    if bool(args.inputs) == bool(args.db):
        print("error: give INPUT files or --db URL (one of the two)", file=sys.stderr)
        return 2
    try:
        if args.db:
            from edge.report.db import read_database

            records = read_database(args.db, site=args.site, device=args.device, since=args.since,
                                    snapshot_dirs=args.snapshots)
        else:
            records = load_files(args.inputs, args.snapshots)
        files = build_report(records, args.out, title=args.title, dedup=dedup, tile_url=args.tile_url,
                             tile_attribution=args.tile_attribution)
    except ReportInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {exc.filename or args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"{files.cracks} crack(s) from {files.observations} observation(s) in {files.alerts} alert(s), "
          f"{files.snapshots} with a snapshot: {files.html}, {files.geojson}, {files.track_geojson}, {files.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
