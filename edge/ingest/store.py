"""One batch of MQTT messages into the database in one transaction; snapshots into files first.

``Store.write(batch)`` returns only after the transaction committed (or raises, having changed
nothing): the consumer acknowledges the batch's messages after that and not before, so a worker
killed at any point leaves every unacknowledged message with the broker, which delivers it again.
Writing again is harmless: alerts are inserted with ``ON CONFLICT (alert_id) DO NOTHING``, a status
is recorded only when it differs from the device's current one, a snapshot file is replaced by the
same bytes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, and_, case, or_, update
from sqlalchemy.dialects import postgresql, sqlite

from edge.ingest import schema
from edge.ingest.rows import (
    TopicInfo,
    alert_row,
    parse_topic,
    rejected_row,
    safe_file_part,
    snapshot_relpath,
    status_value,
)
from edge.subscribe import AlertSink, parse_json_strictly  # strict JSON, schema and topic checks

log = logging.getLogger("edge.ingest")


@dataclass(frozen=True)
class Message:
    """One received MQTT message; ``mid``/``qos`` are what the acknowledgement needs."""

    topic: str
    payload: bytes
    received_at: datetime
    mid: int = 0
    qos: int = 0


@dataclass
class BatchResult:
    """What one committed batch did."""

    new_alerts: list[str] = field(default_factory=list)
    duplicate_alerts: int = 0
    rejected: int = 0
    status_changes: list[tuple[str, str]] = field(default_factory=list)
    snapshots: int = 0
    stats: int = 0


class Store:
    """Writes batches of messages for one topic prefix into one database and one snapshot folder."""

    def __init__(self, engine: Engine, prefix: str, snapshot_dir: str | Path, *,
                 max_message_bytes: int = 1024 * 1024) -> None:
        self.engine = engine
        self.prefix = prefix
        self.snapshot_root = Path(snapshot_dir).resolve()
        self._validator = AlertSink(None, max_message_bytes=max_message_bytes)
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert

    def write(self, batch: Sequence[Message]) -> BatchResult:
        """Store ``batch``; returns after the commit. Raises (nothing committed) when the database fails."""
        result = BatchResult()
        alerts: dict[str, dict[str, Any]] = {}
        statuses: list[tuple[TopicInfo, str, datetime]] = []
        stats: dict[str, tuple[TopicInfo, dict, datetime]] = {}
        rejected: list[dict[str, Any]] = []
        seen: dict[str, tuple[str, datetime]] = {}  # device -> (site, latest message time)
        snapshot_dirs: set[Path] = set()
        valid_alerts = 0
        stored_at = datetime.now(timezone.utc)
        for msg in batch:
            info = parse_topic(self.prefix, msg.topic)
            if info is None:
                rejected.append(rejected_row(msg.topic, "topic outside <prefix>/<device>/{alert,status,stats,snapshot/<id>}",
                                             msg.payload, msg.received_at))
                continue
            if info.kind == "alert":
                try:
                    alert = self._validator.validate(msg.topic, msg.payload)
                except (ValueError, RecursionError) as exc:
                    rejected.append(rejected_row(msg.topic, str(exc), msg.payload, msg.received_at))
                    continue
                valid_alerts += 1
                alerts.setdefault(alert["alert_id"], alert_row(alert, info, msg.topic, received_at=msg.received_at,
                                                               stored_at=stored_at, snapshot_root=self.snapshot_root))
            elif info.kind == "snapshot":
                if not (safe_file_part(info.device_id) and safe_file_part(info.alert_id)):
                    rejected.append(rejected_row(msg.topic, "device or alert id not usable as a file name",
                                                 msg.payload, msg.received_at))
                    continue
                snapshot_dirs.add(self._write_snapshot(info, msg.payload))
                result.snapshots += 1
            elif info.kind == "status":
                value = status_value(msg.payload)
                if value:  # an empty retained message clears the status: nothing to record
                    statuses.append((info, value, msg.received_at))
            else:  # stats
                try:
                    doc = parse_json_strictly(msg.payload)
                    if not isinstance(doc, dict):
                        raise ValueError("stats must be a JSON object")
                except ValueError as exc:
                    rejected.append(rejected_row(msg.topic, f"stats: {exc}", msg.payload, msg.received_at))
                    continue
                stats[info.device_id] = (info, doc, msg.received_at)
                result.stats += 1
            if info.kind != "snapshot":
                _site, when = seen.get(info.device_id, (info.site, msg.received_at))
                seen[info.device_id] = (info.site, max(when, msg.received_at))
        for directory in snapshot_dirs:  # the renames are durable before the rows that name them commit
            _fsync_dir(directory)
        with self.engine.begin() as conn:
            self._upsert_devices(conn, seen)
            if alerts:
                stmt = self._insert(schema.alerts).on_conflict_do_nothing(index_elements=["alert_id"])
                inserted = conn.execute(stmt.returning(schema.alerts.c.alert_id), list(alerts.values())).scalars().all()
                result.new_alerts = list(inserted)
                result.duplicate_alerts = valid_alerts - len(inserted)
            for info, value, when in statuses:
                if self._set_status(conn, info.device_id, value, when):
                    result.status_changes.append((info.device_id, value))
            for device_id, (_info, doc, when) in sorted(stats.items()):
                conn.execute(update(schema.devices)
                             .where(and_(schema.devices.c.device_id == device_id,
                                         or_(schema.devices.c.last_stats_at.is_(None),
                                             schema.devices.c.last_stats_at <= when)))
                             .values(last_stats=doc, last_stats_at=when))
            if rejected:
                conn.execute(schema.rejected_messages.insert(), rejected)
        result.rejected = len(rejected)
        for row in rejected:
            log.warning("message on %s rejected: %s", row["topic"], row["reason"])
        return result

    def _upsert_devices(self, conn: Connection, seen: dict[str, tuple[str, datetime]]) -> None:
        """Create unknown devices and move last_seen_at forward (sorted: workers lock rows in one order)."""
        if not seen:
            return
        rows = [{"device_id": d, "site": site, "last_seen_at": when} for d, (site, when) in sorted(seen.items())]
        stmt = self._insert(schema.devices)
        later = stmt.excluded.last_seen_at
        current = schema.devices.c.last_seen_at
        stmt = stmt.on_conflict_do_update(
            index_elements=["device_id"],
            set_={"site": stmt.excluded.site,
                  "last_seen_at": case((or_(current.is_(None), current < later), later), else_=current)})
        conn.execute(stmt, rows)

    def _set_status(self, conn: Connection, device_id: str, value: str, when: datetime) -> bool:
        """Record ``value`` as the device's status if it is a change; True when it was (row locked: race-free)."""
        devices = schema.devices
        changed = conn.execute(
            update(devices).where(and_(devices.c.device_id == device_id,
                                       or_(devices.c.status.is_(None), devices.c.status != value)))
            .values(status=value, status_since=when)).rowcount
        if changed:
            conn.execute(schema.device_status.insert().values(device_id=device_id, status=value, received_at=when))
        return bool(changed)

    def _write_snapshot(self, info: TopicInfo, jpeg: bytes) -> Path:
        """Write <root>/<device>/<alert_id>.jpg atomically (temp file, fsync, rename); return its folder."""
        path = self.snapshot_root / snapshot_relpath(info.device_id, info.alert_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(jpeg)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        return path.parent


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
