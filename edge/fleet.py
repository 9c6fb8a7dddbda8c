"""``python -m edge.fleet``: the fleet at a glance from the ingest database.

    python -m edge.fleet --db sqlite:///alerts.db [--site north-yard] [--json]

One line per device: site, online/offline and since when, last seen, alerts per severity, last
alert, and the alerts still waiting in its outbox (from its latest stats message). Thin: parse flags,
query (edge/ingest/queries.py), print.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import datetime


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(value)


def format_table(rows: list[dict]) -> str:
    """The summary as an aligned text table (times in UTC)."""
    from edge.ingest.queries import FLEET_COLUMNS

    cells = [list(FLEET_COLUMNS)] + [[_cell(r[c]) for c in FLEET_COLUMNS] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(FLEET_COLUMNS))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m edge.fleet",
                                description="Devices, status, last seen, alerts per severity and pending outbox "
                                "sizes from the database that python -m edge.ingest fills.")
    p.add_argument("--db", default="sqlite:///alerts.db",
                   help="sqlite:///path.db or postgresql://user@host[:port]/db (default: %(default)s)")
    p.add_argument("--site", default=None, help="only this site (default: every site)")
    p.add_argument("--json", action="store_true", help="print JSON (one object per device) instead of a table")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from sqlalchemy.exc import SQLAlchemyError

    from edge.ingest.dburl import DatabaseUrlError, create_db_engine
    from edge.ingest.queries import fleet_summary
    from edge.ingest.schema import SchemaError, require_current

    try:
        engine = create_db_engine(args.db, write=False)
        require_current(engine)
        rows = fleet_summary(engine, args.site)
    except (DatabaseUrlError, SchemaError, SQLAlchemyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(rows, default=_cell, indent=1))
    else:
        print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
