"""The report's alerts from the fleet database (``python -m edge.report --db URL``).

Produces what :func:`edge.report.load.read_inputs` produces for files: the alerts (full JSON, as the
devices sent them) and their snapshot JPEGs by alert_id, here from the files the rows name.
"""

from __future__ import annotations

from datetime import datetime, timezone

from edge.report.load import ReportInputError


def read_database(url: str, *, site: str | None = None, device: str | None = None,
                  since: str | None = None) -> tuple[list[dict], dict[str, bytes]]:
    """Alerts of ``url`` for the site / device / since filters, and their snapshots; ReportInputError if unusable."""
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
        return load_alerts(engine, flt)
    except (SchemaError, SQLAlchemyError) as exc:
        raise ReportInputError(f"{safe_url(url)}: {str(exc).splitlines()[0]}") from exc
    finally:
        engine.dispose()
