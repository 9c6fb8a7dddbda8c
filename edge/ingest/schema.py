"""The fleet database: tables, and the ordered migrations that create and evolve them.

``migrate(engine)`` brings any database to ``LATEST_VERSION``: it takes a lock (PostgreSQL: an
advisory transaction lock; SQLite: ``BEGIN IMMEDIATE``), reads ``schema_version``, applies the missing
migrations in order and records each, all in one transaction, so several workers starting at once
migrate once and a failed migration leaves the database as it was. A database newer than this
software is refused (an older program must not write rows it does not understand).

Changing the schema = appending a migration to ``MIGRATIONS``; a released migration never changes.

Tables:
  alerts          one row per alert_id (the primary key makes redeliveries no-ops); summary columns
                  for queries and the full alert JSON in ``payload``; ``snapshot_path`` names the JPEG
  devices         one row per device: site, current status and since when, last seen, last stats
  device_status   history of online/offline changes (retained status and last will)
  rejected_messages  messages that were not valid alerts, with the reason (kept, not silently dropped)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Connection,
    DateTime,
    Engine,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    func,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB


class UtcDateTime(TypeDecorator):
    """A UTC timestamp: aware datetimes in, aware (UTC) datetimes out, on SQLite and PostgreSQL alike."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: give a timezone-aware (UTC) time")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


JsonDoc = JSON().with_variant(JSONB(), "postgresql")
metadata = MetaData()

schema_version = Table(
    "schema_version", metadata,
    Column("version", Integer, primary_key=True),
    Column("description", Text, nullable=False),
    Column("applied_at", UtcDateTime, nullable=False),
)

alerts = Table(
    "alerts", metadata,
    Column("alert_id", String(64), primary_key=True),
    Column("device_id", String(256), nullable=False),
    Column("site", String(256), nullable=False, server_default=""),
    Column("sequence", BigInteger, nullable=False),
    Column("capture_time", UtcDateTime, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
    Column("stored_at", UtcDateTime, nullable=False),
    Column("severity", String(16), nullable=False),
    Column("n_cracks", Integer, nullable=False),
    Column("max_width_px", Float, nullable=False),
    Column("max_width_mm", Float),
    Column("max_length_px", Float, nullable=False),
    Column("coverage", Float, nullable=False),
    Column("lat", Float),
    Column("lon", Float),
    Column("source", Text, nullable=False),
    Column("frame_index", BigInteger, nullable=False),
    Column("topic", Text, nullable=False),
    Column("snapshot_path", Text),
    Column("payload", JsonDoc, nullable=False),
)
Index("alerts_device_time", alerts.c.device_id, alerts.c.capture_time)
Index("alerts_site_time", alerts.c.site, alerts.c.capture_time)
Index("alerts_time", alerts.c.capture_time)

devices = Table(
    "devices", metadata,
    Column("device_id", String(256), primary_key=True),
    Column("site", String(256), nullable=False, server_default=""),
    Column("status", String(32)),
    Column("status_since", UtcDateTime),
    Column("last_seen_at", UtcDateTime),
    Column("last_stats", JsonDoc),
    Column("last_stats_at", UtcDateTime),
)

device_status = Table(
    "device_status", metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("device_id", String(256), nullable=False),
    Column("status", String(32), nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
)
Index("device_status_device_time", device_status.c.device_id, device_status.c.received_at)

rejected_messages = Table(
    "rejected_messages", metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("topic", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
    Column("payload_head", LargeBinary, nullable=False),
)


class SchemaError(RuntimeError):
    """The database's schema cannot be used by this software; the message says what to do."""


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    apply: Callable[[Connection], None]


def _v1_tables(conn: Connection) -> None:
    for table in (alerts, devices, device_status, rejected_messages):
        table.create(conn)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "alerts, devices, device_status, rejected_messages", _v1_tables),
)
LATEST_VERSION = MIGRATIONS[-1].version
_PG_LOCK_KEY = 0x6165_6C66  # "aelf": serialises migrations of concurrent workers on PostgreSQL


def current_version(conn: Connection) -> int:
    """The highest applied migration, 0 for an empty database."""
    if not conn.dialect.has_table(conn, "schema_version"):
        return 0
    return int(conn.execute(select(func.coalesce(func.max(schema_version.c.version), 0))).scalar_one())


def migrate(engine: Engine, migrations: tuple[Migration, ...] = MIGRATIONS) -> list[int]:
    """Apply the missing migrations in order, in one locked transaction; return the versions applied."""
    latest = migrations[-1].version
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        schema_version.create(conn, checkfirst=True)
        have = current_version(conn)
        if have > latest:
            raise SchemaError(f"the database is at schema version {have}, newer than this software's {latest}: "
                              "upgrade aelf-crack on this machine (an older ingest must not write to it)")
        applied = []
        for migration in migrations:
            if migration.version <= have:
                continue
            migration.apply(conn)
            conn.execute(schema_version.insert().values(version=migration.version, description=migration.description,
                                                        applied_at=datetime.now(timezone.utc)))
            applied.append(migration.version)
    return applied


def require_current(engine: Engine) -> None:
    """Raise SchemaError unless the database is exactly at LATEST_VERSION (for readers: no migration)."""
    with engine.connect() as conn:
        have = current_version(conn)
    if have != LATEST_VERSION:
        hint = ("run python -m edge.ingest once to create / migrate it" if have < LATEST_VERSION
                else "upgrade aelf-crack on this machine")
        raise SchemaError(f"the database is at schema version {have}, this software reads {LATEST_VERSION}: {hint}")
