"""Reads of the fleet database: the alerts a report asks for, and the fleet summary.

Readers never migrate: a database at another schema version is refused with what to do
(edge/ingest/schema.py ``require_current``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select

from edge.ingest import schema

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str, now: datetime) -> datetime:
    """``--since``: an ISO 8601 date or time (UTC when no offset) or a span back from ``now`` (30m, 24h, 7d)."""
    match = _RELATIVE.match(text.strip())
    if match:
        return now - timedelta(seconds=float(match.group(1)) * _UNIT_S[match.group(2)])
    try:
        stamp = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"--since {text!r}: expected an ISO date/time (2024-05-01, 2024-05-01T10:00Z) "
                         "or a span such as 30m, 24h, 7d") from exc
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)


@dataclass(frozen=True)
class AlertFilter:
    """Which alerts: any combination of site, device and capture time from ``since`` (UTC) on."""

    site: str | None = None
    device: str | None = None
    since: datetime | None = None


def load_alerts(engine: Engine, flt: AlertFilter) -> tuple[list[dict], dict[str, bytes]]:
    """The matching alerts (full JSON, capture order) and the snapshot JPEGs their rows name, by alert_id.

    A snapshot whose file is missing (its message never came, or the folder moved) is left out.
    """
    a = schema.alerts
    query = select(a.c.payload, a.c.snapshot_path).order_by(a.c.capture_time, a.c.device_id)
    if flt.site is not None:
        query = query.where(a.c.site == flt.site)
    if flt.device is not None:
        query = query.where(a.c.device_id == flt.device)
    if flt.since is not None:
        query = query.where(a.c.capture_time >= flt.since)
    alerts, jpegs = [], {}
    with engine.connect() as conn:
        for payload, snapshot_path in conn.execute(query):
            alerts.append(payload)
            if snapshot_path and Path(snapshot_path).is_file():
                jpegs[payload["alert_id"]] = Path(snapshot_path).read_bytes()
    return alerts, jpegs


FLEET_COLUMNS = ("device_id", "site", "status", "status_since", "last_seen_at", "alerts_low", "alerts_medium",
                 "alerts_high", "last_alert_at", "outbox_pending", "outbox_dropped", "stats_at")


def fleet_summary(engine: Engine, site: str | None = None) -> list[dict[str, Any]]:
    """One row per device (FLEET_COLUMNS): status and since when, last seen, alerts per severity, and the
    outbox figures of its latest stats message (alerts waiting on the device; None without stats)."""
    a, d = schema.alerts, schema.devices
    counts = (select(a.c.device_id, a.c.severity, func.count().label("n"), func.max(a.c.capture_time).label("last"))
              .group_by(a.c.device_id, a.c.severity))
    if site is not None:
        counts = counts.where(a.c.site == site)
    devices = select(d).order_by(d.c.site, d.c.device_id)
    if site is not None:
        devices = devices.where(d.c.site == site)
    with engine.connect() as conn:
        per_device: dict[str, dict[str, Any]] = {}
        for device_id, severity, n, last in conn.execute(counts):
            entry = per_device.setdefault(device_id, {"last": None})
            entry[severity] = n
            entry["last"] = max(filter(None, [entry["last"], last]), default=None)  # max() keeps the column's type
        rows = []
        for dev in conn.execute(devices).mappings():
            counts_of = per_device.get(dev["device_id"], {})
            stats = dev["last_stats"] or {}
            rows.append({
                "device_id": dev["device_id"], "site": dev["site"], "status": dev["status"],
                "status_since": dev["status_since"], "last_seen_at": dev["last_seen_at"],
                "alerts_low": counts_of.get("low", 0), "alerts_medium": counts_of.get("medium", 0),
                "alerts_high": counts_of.get("high", 0), "last_alert_at": counts_of.get("last"),
                "outbox_pending": stats.get("outbox_pending"), "outbox_dropped": stats.get("outbox_dropped"),
                "stats_at": dev["last_stats_at"],
            })
    return rows
