"""The report's alerts from the fleet database (``python -m edge.report --db URL``).

Produces what :func:`edge.report.load.load_files` produces for files, an :class:`AlertRecords`: the alerts
(full JSON, as the devices sent them) and their snapshot JPEGs, here from the files the rows name.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from edge.report.load import AlertRecords, ReportInputError, snapshot_finder


def read_database(url: str, *, site: str | None = None, device: str | None = None, since: str | None = None,
                  snapshot_dirs: list[Path] | None = None) -> AlertRecords:
    """Alerts of ``url`` for the site / device / since filters with their snapshots (stored in the database,
    else looked up in ``snapshot_dirs``); ReportInputError if unusable."""
    from sqlalchemy.exc import SQLAlchemyError

    from edge.ingest.dburl import DatabaseUrlError, create_db_engine, safe_url
    from edge.ingest.queries import AlertFilter, load_alerts, parse_since
    from edge.ingest.schema import SchemaError, require_current

    try:
        flt = AlertFilter(site=site, device=device,
                          since=parse_since(since, datetime.now(timezone.utc)) if since else None)
        engine = create_db_engine(url, write=False)
    except (ValueError, DatabaseUrlError) as exc:
        raise ReportInputError(str(exc)) from exc
    try:
        require_current(engine)
        alerts, jpegs = load_alerts(engine, flt)
        return AlertRecords(alerts, snapshot_finder([], list(snapshot_dirs or []), jpegs), origin=safe_url(url))
    except (SchemaError, SQLAlchemyError) as exc:
        raise ReportInputError(f"{safe_url(url)}: {str(exc).splitlines()[0]}") from exc
    finally:
        engine.dispose()
