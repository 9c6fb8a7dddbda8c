"""Durable alert outbox: SQLite in WAL mode, written before an alert is published, emptied on PUBACK.

Guarantees (see docs/MQTT.md "Outbox"):
- `put` returns only after the row is committed. With WAL and ``synchronous=NORMAL`` (the default) a
  committed alert survives the process being killed (SIGKILL, OOM, crash): the WAL write has reached
  the operating system. Only a power loss / kernel crash can lose the last few transactions; choose
  ``synchronous="FULL"`` to fsync every commit when that matters more than write latency.
- Rows come out in insertion order (`pending`), so the backlog is re-sent in order after a reconnect
  or a restart. A row is deleted only by `ack` (the publisher calls it on the broker's PUBACK).
- The outbox is bounded by `max_alerts` rows and `max_bytes` of payload. When a new alert would exceed
  either bound, rows are dropped lowest severity first ("low", then "medium", then "high"), oldest
  first within a severity. Dropped rows are counted in a persistent counter (`dropped`).

Thread-safe: one connection guarded by one lock (paho's network thread acks, the pipeline puts).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from edge.config import OutboxConfig
from edge.measure import SEVERITY_LEVELS

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id TEXT NOT NULL UNIQUE,
    severity_rank INTEGER NOT NULL,
    queued_at REAL NOT NULL,
    payload BLOB NOT NULL,
    snapshot BLOB,
    size_bytes INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_drop_order ON alerts (severity_rank, id);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO counters (name, value) VALUES ('dropped', 0);
"""


class OutboxError(RuntimeError):
    """The outbox file cannot be opened or an alert cannot be stored."""


@dataclass(frozen=True)
class OutboxRow:
    """One stored alert: `row_id` orders delivery; `payload` is the UTF-8 JSON that goes on the wire."""

    row_id: int
    alert_id: str
    payload: bytes
    snapshot: bytes | None


class Outbox:
    """SQLite-backed queue of alerts waiting for the broker's acknowledgement."""

    def __init__(self, config: OutboxConfig) -> None:
        """Open (or create) the outbox at ``config.path``.

        ``config.max_alerts`` / ``max_bytes`` bound the backlog (payload + snapshot bytes);
        ``synchronous`` is "NORMAL" (survives process kill) or "FULL" (also survives power loss, slower).
        """
        self.config = config
        self.path = Path(config.path)
        self.max_alerts = config.max_alerts
        self.max_bytes = config.max_bytes
        mode = config.synchronous
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={mode}")
            self._db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise OutboxError(f"cannot open outbox {self.path}: {exc} (is the directory writable?)") from exc

    def put(self, alert: dict, snapshot: bytes | None = None) -> int:
        """Store `alert` (and its optional JPEG snapshot); return its row id after the commit.

        An alert whose `alert_id` is already stored is not stored twice (its existing row id is returned).
        """
        alert_id = str(alert.get("alert_id", ""))
        if not alert_id:
            raise OutboxError("alert has no 'alert_id': cannot store it in the outbox")
        severity = str(alert.get("severity"))
        rank = SEVERITY_LEVELS.index(severity) if severity in SEVERITY_LEVELS else 0  # drop order: low first
        payload = json.dumps(alert, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        size = len(payload) + (len(snapshot) if snapshot else 0)
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                row = self._db.execute("SELECT id FROM alerts WHERE alert_id = ?", (alert_id,)).fetchone()
                if row is not None:
                    self._db.execute("COMMIT")
                    return int(row[0])
                cur = self._db.execute(
                    "INSERT INTO alerts (alert_id, severity_rank, queued_at, payload, snapshot, size_bytes)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (alert_id, rank, time.time(), payload, snapshot, size),
                )
                row_id = int(cur.lastrowid)
                self._enforce_bounds()
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._db.execute("ROLLBACK")
                raise OutboxError(f"cannot store alert {alert_id} in {self.path}: {exc}") from exc
        return row_id

    def _enforce_bounds(self) -> None:
        """Drop rows (lowest severity, then oldest) until both bounds hold; count them. Lock held."""
        count, total = self._db.execute("SELECT COUNT(*), COALESCE(SUM(size_bytes), 0) FROM alerts").fetchone()
        dropped = 0
        while count > self.max_alerts or (total > self.max_bytes and count > 0):
            victim = self._db.execute(
                "SELECT id, size_bytes FROM alerts ORDER BY severity_rank, id LIMIT 1"
            ).fetchone()
            self._db.execute("DELETE FROM alerts WHERE id = ?", (victim[0],))
            count -= 1
            total -= victim[1]
            dropped += 1
        if dropped:
            self._db.execute("UPDATE counters SET value = value + ? WHERE name = 'dropped'", (dropped,))

    def pending(self, limit: int, exclude: set[int] | frozenset[int] = frozenset()) -> list[OutboxRow]:
        """The oldest `limit` stored alerts whose row id is not in `exclude` (those already in flight)."""
        if limit <= 0:
            return []
        with self._lock:
            rows = self._db.execute(
                "SELECT id, alert_id, payload, snapshot FROM alerts ORDER BY id LIMIT ?",
                (limit + len(exclude),),
            ).fetchall()
        out = [OutboxRow(int(r[0]), r[1], bytes(r[2]), None if r[3] is None else bytes(r[3])) for r in rows]
        return [r for r in out if r.row_id not in exclude][:limit]

    def ack(self, row_id: int) -> None:
        """Delete the row the broker acknowledged (a row already dropped or acked is ignored)."""
        with self._lock:
            self._db.execute("DELETE FROM alerts WHERE id = ?", (row_id,))

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM alerts").fetchone()[0])

    def size_bytes(self) -> int:
        """Total payload + snapshot bytes stored."""
        with self._lock:
            return int(self._db.execute("SELECT COALESCE(SUM(size_bytes), 0) FROM alerts").fetchone()[0])

    @property
    def dropped(self) -> int:
        """Alerts dropped by the bound policy since the outbox file was created (persists across restarts)."""
        with self._lock:
            return int(self._db.execute("SELECT value FROM counters WHERE name = 'dropped'").fetchone()[0])

    def close(self) -> None:
        """Close the database (committed rows stay on disk)."""
        with self._lock:
            self._db.close()
