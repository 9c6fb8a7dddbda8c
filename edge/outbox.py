"""Durable alert outbox: SQLite in WAL mode, written before an alert is published, emptied on acceptance.

Guarantees (see docs/MQTT.md "Outbox"):
- `put` returns only after the row is committed. With WAL and ``synchronous=NORMAL`` (the default) a
  committed alert survives the process being killed (SIGKILL, OOM, crash): the WAL write has reached
  the operating system. Only a power loss / kernel crash can lose the last few transactions; choose
  ``synchronous="FULL"`` to fsync every commit when that matters more than write latency.
- Rows come out in insertion order (`pending`), so the backlog is re-sent in order after a reconnect
  or a restart. A row is deleted only by `ack` (the publisher calls it when the broker accepted the
  alert). Every row remembers the device that raised it; `pending(device_id=...)` returns only that
  device's rows, so a device-id change never publishes an alert under another device's name.
- The outbox is bounded by `max_alerts` rows and `max_bytes` of payload. When a new alert would exceed
  either bound, rows are dropped lowest severity first ("low", then "medium", then "high"), oldest
  first within a severity. Dropped rows are counted in a persistent counter (`dropped`).
- Every row carries a CRC-32 of its alert id, payload and snapshot. `pending` checks it before a row is
  handed out: a row whose stored bytes changed on disk (damage SQLite's own checks do not see) is never
  published; it is moved to the ``quarantine`` table, counted (`corrupted`, persistent) and logged.
- The write-ahead log is bounded (``wal_max_bytes``: automatic checkpoints and ``journal_size_limit``)
  and truncated to 0 bytes by `checkpoint` (the publisher calls it when storage works again after a
  failure; a write that meets a full disk checkpoints and tries once more), so space freed on a full disk
  goes to alerts, not to a WAL that grew into it.
- A damaged file (not a database, or failing SQLite's quick_check) is moved aside to
  ``<path>.damaged-<UTC time>`` when it is opened. Its rows are read page by page without SQLite
  (edge/outbox_salvage.py: SQLite refuses every query on a truncated file), so a file cut short or
  overwritten in places still gives back every alert whose bytes survived; only rows whose checksum
  holds are copied into a fresh outbox (`recovered`). A ``stored`` counter kept beside the rows (in the
  same transactions) says how many there were, so the rest is counted as lost (`unrecoverable`) and
  logged once.

Errors are :class:`OutboxError` with a hint that names the cause (full disk, read-only file, damage).
Thread-safe: one connection guarded by one lock (paho's network thread acks, the pipeline puts).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from edge.config import OutboxConfig
from edge.outbox_salvage import scan_records
from edge.severity import SEVERITY_LEVELS

log = logging.getLogger("edge.outbox")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id TEXT NOT NULL UNIQUE,
    severity_rank INTEGER NOT NULL,
    queued_at REAL NOT NULL,
    payload BLOB NOT NULL,
    snapshot BLOB,
    size_bytes INTEGER NOT NULL,
    device_id TEXT,
    checksum INTEGER
);
CREATE INDEX IF NOT EXISTS alerts_drop_order ON alerts (severity_rank, id);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO counters (name, value) VALUES ('dropped', 0);
INSERT OR IGNORE INTO counters (name, value) VALUES ('corrupted', 0);
INSERT OR IGNORE INTO counters (name, value) VALUES ('stored', 0);
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY,
    alert_id TEXT,
    payload BLOB,
    snapshot BLOB,
    reason TEXT NOT NULL,
    quarantined_at REAL NOT NULL
);
"""
_COLUMNS = "id, alert_id, severity_rank, queued_at, payload, snapshot, size_bytes, device_id, checksum"


class OutboxError(RuntimeError):
    """The outbox file cannot be opened, read or written; the message names the file and the cause."""


def storage_hint(exc: BaseException) -> str:
    """A short hint for a SQLite / OS error: what is probably wrong with the outbox file and the fix."""
    text = str(exc).lower()
    if "full" in text or "no space" in text:
        return "the file system is full: free space on it or move [mqtt.outbox] path"
    if "readonly" in text or "read-only" in text or "permission" in text:
        return "the file or its directory is read-only for this user: fix its owner/permissions"
    if "malformed" in text or "not a database" in text or "corrupt" in text:
        return "the file is damaged"
    if "unable to open" in text or "no such file" in text or "not a directory" in text:
        return "the directory does not exist or is not writable"
    if "locked" in text or "busy" in text:
        return "another process holds the file: two daemons must not share one outbox"
    return "a storage error"


def _is_damage(exc: BaseException) -> bool:
    return storage_hint(exc) == "the file is damaged"


@dataclass(frozen=True)
class OutboxRow:
    """One stored alert: `row_id` orders delivery; `payload` is the UTF-8 JSON that goes on the wire."""

    row_id: int
    alert_id: str
    payload: bytes
    snapshot: bytes | None


def _device_of(payload: bytes) -> str | None:
    try:
        value = json.loads(payload).get("device_id")
    except (ValueError, AttributeError):
        return None
    return str(value) if value is not None else None


def _intact(alert_id: str, payload: bytes) -> bool:
    """Whether a stored payload is still the alert its row names (JSON whose alert_id matches); the only
    check possible for rows written before rows carried a checksum."""
    try:
        return json.loads(payload).get("alert_id") == alert_id
    except (ValueError, AttributeError):
        return False


def row_checksum(alert_id: str, payload: bytes, snapshot: bytes | None) -> int:
    """CRC-32 of a row's alert id, payload and snapshot. CRC-32 finds every change of up to 32 bits in a
    row and misses a random larger one with probability 2^-32; zlib computes it at GB/s (a hash would
    add nothing against disk damage, which is not an adversary)."""
    crc = zlib.crc32(alert_id.encode("utf-8", "surrogatepass") + b"\0")
    crc = zlib.crc32(payload, crc)
    return zlib.crc32(b"\0" + (snapshot or b""), crc)


def _row_problem(alert_id: object, payload: object, snapshot: object, checksum: object) -> str | None:
    """Why a stored row is not the alert that was stored (None when it is)."""
    if not isinstance(alert_id, str) or not isinstance(payload, bytes) or not isinstance(snapshot, (bytes, type(None))):
        return "its columns do not have their types"
    if checksum is None:
        return None if _intact(alert_id, payload) else "its payload is not the JSON alert its row names"
    if row_checksum(alert_id, payload, snapshot) != checksum:
        return "its checksum does not match its bytes"
    return None


class Outbox:
    """SQLite-backed queue of alerts waiting for the broker to accept them."""

    def __init__(self, config: OutboxConfig) -> None:
        """Open (or create) the outbox at ``config.path``; a damaged file is moved aside and salvaged.

        ``config.max_alerts`` / ``max_bytes`` bound the backlog (payload + snapshot bytes);
        ``synchronous`` is "NORMAL" (survives process kill) or "FULL" (also survives power loss, slower);
        ``wal_max_bytes`` bounds the write-ahead log.
        """
        self.config = config
        self.path = Path(config.path)
        self.max_alerts = config.max_alerts
        self.max_bytes = config.max_bytes
        self.recovered = 0
        self.unrecoverable = 0
        self.uncounted_loss = False  # salvage could not tell how many rows the damage destroyed
        self.damaged_copy: Path | None = None
        self._reported_bad: set[int] = set()
        self._lock = threading.Lock()
        try:
            self._db = self._open()
        except sqlite3.DatabaseError as exc:
            if not _is_damage(exc):
                raise OutboxError(f"cannot open outbox {self.path}: {exc} ({self._open_hint(exc)})") from exc
            self._db = self._salvage(exc)
        except OSError as exc:
            raise OutboxError(f"cannot open outbox {self.path}: {exc} ({self._open_hint(exc)})") from exc

    def _open_hint(self, exc: BaseException) -> str:
        """SQLite says "unable to open" for a missing directory and a read-only one alike: look which."""
        folder = self.path.parent
        if folder.is_dir() and (not os.access(folder, os.W_OK) or
                                (self.path.exists() and not os.access(self.path, os.W_OK))):
            return "the file or its directory is read-only for this user (or the file system is mounted " \
                   "read-only): fix its owner/permissions or move [mqtt.outbox] path"
        return storage_hint(exc)

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self.config.synchronous}")
            # Deleted rows and freed pages are zeroed: salvage must not bring back delivered alerts.
            db.execute("PRAGMA secure_delete=ON")
            page_size = int(db.execute("PRAGMA page_size").fetchone()[0])
            db.execute(f"PRAGMA wal_autocheckpoint={max(1, self.config.wal_max_bytes // page_size)}")
            db.execute(f"PRAGMA journal_size_limit={self.config.wal_max_bytes}")
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise sqlite3.DatabaseError(f"database disk image is malformed (quick_check: {check})")
            db.executescript(_SCHEMA)
            self._migrate(db)
        except BaseException:
            db.close()
            raise
        return db

    @staticmethod
    def _migrate(db: sqlite3.Connection) -> None:
        """Older outboxes get the device and checksum columns; the stored counter is set from the rows."""
        columns = {row[1] for row in db.execute("PRAGMA table_info(alerts)")}
        if "device_id" not in columns:
            db.execute("ALTER TABLE alerts ADD COLUMN device_id TEXT")
            for row_id, payload in db.execute("SELECT id, payload FROM alerts").fetchall():
                db.execute("UPDATE alerts SET device_id = ? WHERE id = ?", (_device_of(bytes(payload)), row_id))
        if "checksum" not in columns:
            db.execute("ALTER TABLE alerts ADD COLUMN checksum INTEGER")  # NULL: checked by _intact instead
        db.execute("UPDATE counters SET value = (SELECT COUNT(*) FROM alerts) WHERE name = 'stored'")

    # ------------------------------------------------------------------ salvage of a damaged file

    def _salvage(self, cause: BaseException) -> sqlite3.Connection:
        """Move the damaged file aside, copy every intact row into a fresh outbox, log the counts once."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        self.damaged_copy = self.path.with_name(f"{self.path.name}.damaged-{stamp}")
        wal_copy: Path | None = None
        try:
            self.path.rename(self.damaged_copy)
            for suffix in ("-wal", "-shm"):
                side = self.path.with_name(self.path.name + suffix)
                if side.exists():
                    moved = self.damaged_copy.with_name(self.damaged_copy.name + suffix)
                    side.rename(moved)
                    wal_copy = moved if suffix == "-wal" else wal_copy
        except OSError as exc:
            raise OutboxError(
                f"outbox {self.path} is damaged ({cause}) and cannot be moved aside ({exc.strerror}): "
                f"move or delete it by hand"
            ) from exc
        rows, counters, found_damaged = self._scan_damaged(self.damaged_copy, wal_copy)
        db = self._open()
        db.execute("BEGIN IMMEDIATE")
        for row in rows:
            db.execute(f"INSERT OR IGNORE INTO alerts ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
        for name in ("dropped", "corrupted"):
            db.execute("UPDATE counters SET value = ? WHERE name = ?", (counters.get(name, 0), name))
        db.execute("UPDATE counters SET value = (SELECT COUNT(*) FROM alerts) WHERE name = 'stored'")
        db.execute("COMMIT")
        self.recovered = len(rows)
        stored = counters.get("stored")
        if stored is not None and stored >= self.recovered:
            self.unrecoverable = stored - self.recovered
            lost = f"{self.unrecoverable} lost ({found_damaged} found damaged, the rest destroyed)"
        else:
            self.unrecoverable = found_damaged
            self.uncounted_loss = True
            lost = (f"{found_damaged} found damaged and lost; how many more the damage destroyed is unknown "
                    "(the row counter was destroyed too)")
        log.error("outbox %s was damaged (%s): moved to %s; %d alerts recovered, %s",
                  self.path, cause, self.damaged_copy.name, self.recovered, lost)
        return db

    @staticmethod
    def _scan_damaged(path: Path, wal: Path | None) -> tuple[list[tuple], dict[str, int], int]:
        """(intact alert rows, counters, alert rows found damaged) read page by page from a damaged file."""
        try:
            data = path.read_bytes()
            wal_data = wal.read_bytes() if wal is not None else None
        except OSError as exc:
            log.error("cannot read the damaged outbox %s (%s): nothing recovered", path, exc.strerror)
            return [], {}, 0
        scan = scan_records(data, wal_data)
        rows: dict[str, tuple] = {}
        counters: dict[str, int] = {}
        damaged = 0
        for rowid, values in scan.records:
            if len(values) == 2 and isinstance(values[0], str) and isinstance(values[1], int):
                counters[values[0]] = values[1]
                continue
            if not (7 <= len(values) <= 9 and values[0] is None and isinstance(values[2], int)
                    and isinstance(values[3], (int, float)) and isinstance(values[4], bytes)):
                continue  # not a row of the alerts table (schema, counters, quarantine)
            alert_id, payload, snapshot, size, device, checksum = (
                values[1], values[4], values[5], values[6], *(values[7:] + [None, None])[:2])
            if _row_problem(alert_id, payload, snapshot, checksum) is not None:
                damaged += 1
                continue
            device = device if isinstance(device, str) else _device_of(payload)
            rows[alert_id] = (rowid, alert_id, values[2], float(values[3]), payload, snapshot,
                              size if isinstance(size, int) else len(payload) + len(snapshot or b""), device,
                              row_checksum(alert_id, payload, snapshot))
        return sorted(rows.values()), counters, damaged

    # ------------------------------------------------------------------ writing

    def _fail(self, what: str, exc: BaseException) -> OutboxError:
        return OutboxError(f"{what} in outbox {self.path}: {exc} ({storage_hint(exc)})")

    def _rollback(self) -> None:
        """Undo an open transaction, if any (a failed BEGIN leaves none; ROLLBACK would mask the cause)."""
        if self._db.in_transaction:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error:
                pass

    def put(self, alert: dict, snapshot: bytes | None = None) -> int:
        """Store `alert` (and its optional JPEG snapshot); return its row id after the commit.

        An alert whose `alert_id` is already stored is not stored twice (its existing row id is returned).
        On a full disk the write-ahead log is truncated and the write tried once more before it fails.
        """
        alert_id = str(alert.get("alert_id", ""))
        if not alert_id:
            raise OutboxError("alert has no 'alert_id': cannot store it in the outbox")
        try:
            return self._put(alert, alert_id, snapshot)
        except OutboxError as exc:
            if "full" not in str(exc).lower():
                raise
            try:
                self.checkpoint()
            except OutboxError:
                raise exc from None
            return self._put(alert, alert_id, snapshot)

    def _put(self, alert: dict, alert_id: str, snapshot: bytes | None) -> int:
        severity = str(alert.get("severity"))
        rank = SEVERITY_LEVELS.index(severity) if severity in SEVERITY_LEVELS else 0  # drop order: low first
        payload = json.dumps(alert, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        size = len(payload) + (len(snapshot) if snapshot else 0)
        device = alert.get("device_id")
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                row = self._db.execute("SELECT id FROM alerts WHERE alert_id = ?", (alert_id,)).fetchone()
                if row is not None:
                    self._db.execute("COMMIT")
                    return int(row[0])
                cur = self._db.execute(
                    "INSERT INTO alerts (alert_id, severity_rank, queued_at, payload, snapshot, size_bytes, device_id,"
                    " checksum) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (alert_id, rank, time.time(), payload, snapshot, size, None if device is None else str(device),
                     row_checksum(alert_id, payload, snapshot)),
                )
                row_id = int(cur.lastrowid)
                self._db.execute("UPDATE counters SET value = value + 1 WHERE name = 'stored'")
                self._enforce_bounds()
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise self._fail(f"cannot store alert {alert_id}", exc) from exc
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
            self._db.execute("UPDATE counters SET value = value - ? WHERE name = 'stored'", (dropped,))

    # ------------------------------------------------------------------ reading

    def pending(
        self, limit: int, exclude: set[int] | frozenset[int] = frozenset(), device_id: str | None = None
    ) -> list[OutboxRow]:
        """The oldest `limit` stored alerts not in `exclude` (those in flight); only `device_id`'s when given.

        Every row's checksum is checked first: a damaged row is quarantined (see the module docstring)
        and never returned.
        """
        if limit <= 0:
            return []
        where, args = ("WHERE device_id = ?", [device_id]) if device_id is not None else ("", [])
        with self._lock:
            try:
                rows = self._db.execute(
                    f"SELECT id, alert_id, payload, snapshot, checksum FROM alerts {where} ORDER BY id LIMIT ?",
                    (*args, limit + len(exclude)),
                ).fetchall()
            except sqlite3.Error as exc:
                raise self._fail("cannot read alerts", exc) from exc
            out = []
            for row_id, alert_id, payload, snapshot, checksum in rows:
                if row_id in exclude:
                    continue
                problem = _row_problem(alert_id, payload, snapshot, checksum)
                if problem is not None:
                    self._quarantine(int(row_id), alert_id, payload, snapshot, problem)
                    continue
                out.append(OutboxRow(int(row_id), alert_id, bytes(payload), None if snapshot is None else bytes(snapshot)))
        return out[:limit]

    def _quarantine(self, row_id: int, alert_id: object, payload: object, snapshot: object, problem: str) -> None:
        """Move a damaged row out of the queue into the quarantine table, count it, log it. Lock held."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("INSERT OR REPLACE INTO quarantine (id, alert_id, payload, snapshot, reason, quarantined_at)"
                             " VALUES (?, ?, ?, ?, ?, ?)", (row_id, alert_id, payload, snapshot, problem, time.time()))
            self._db.execute("DELETE FROM alerts WHERE id = ?", (row_id,))
            self._db.execute("UPDATE counters SET value = value + 1 WHERE name = 'corrupted'")
            self._db.execute("UPDATE counters SET value = value - 1 WHERE name = 'stored'")
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            if row_id not in self._reported_bad:
                log.error("outbox %s: alert row %d is damaged (%s) and cannot be quarantined (%s): not published",
                          self.path, row_id, problem, exc)
                self._reported_bad.add(row_id)
            return
        log.error("outbox %s: alert row %d (alert_id %r as stored) is damaged on disk: %s; NOT published (it would "
                  "reach subscribers garbled), moved to table 'quarantine' and counted as lost in outbox_corrupted",
                  self.path, row_id, alert_id, problem)

    def other_devices(self, device_id: str) -> dict[str, int]:
        """Alerts stored for devices other than `device_id`: {device: count} (None-device rows as "?")."""
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT COALESCE(device_id, '?'), COUNT(*) FROM alerts"
                    " WHERE device_id IS NULL OR device_id != ? GROUP BY 1", (device_id,)
                ).fetchall()
            except sqlite3.Error as exc:
                raise self._fail("cannot read alerts", exc) from exc
        return {str(d): int(n) for d, n in rows}

    def ack(self, row_id: int) -> None:
        """Delete the row the broker accepted (a row already dropped or acked is ignored)."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                gone = self._db.execute("DELETE FROM alerts WHERE id = ?", (row_id,)).rowcount
                if gone:
                    self._db.execute("UPDATE counters SET value = value - ? WHERE name = 'stored'", (gone,))
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise self._fail(f"cannot delete delivered alert row {row_id}", exc) from exc

    def checkpoint(self) -> None:
        """Copy the write-ahead log into the database and truncate it to 0 bytes (frees its disk space)."""
        with self._lock:
            self._checkpoint_locked()

    def _checkpoint_locked(self) -> None:
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error as exc:
            raise self._fail("cannot checkpoint the write-ahead log", exc) from exc

    def count(self, device_id: str | None = None) -> int:
        """Stored alerts (of `device_id` only, when given)."""
        where, args = ("WHERE device_id = ?", (device_id,)) if device_id is not None else ("", ())
        with self._lock:
            try:
                return int(self._db.execute(f"SELECT COUNT(*) FROM alerts {where}", args).fetchone()[0])
            except sqlite3.Error as exc:
                raise self._fail("cannot count alerts", exc) from exc

    def __len__(self) -> int:
        return self.count()

    def size_bytes(self) -> int:
        """Total payload + snapshot bytes stored."""
        with self._lock:
            try:
                return int(self._db.execute("SELECT COALESCE(SUM(size_bytes), 0) FROM alerts").fetchone()[0])
            except sqlite3.Error as exc:
                raise self._fail("cannot sum alert sizes", exc) from exc

    def _counter(self, name: str) -> int:
        with self._lock:
            try:
                return int(self._db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()[0])
            except sqlite3.Error as exc:
                raise self._fail(f"cannot read the {name} counter", exc) from exc

    @property
    def dropped(self) -> int:
        """Alerts dropped by the bound policy since the outbox file was created (persists across restarts)."""
        return self._counter("dropped")

    @property
    def corrupted(self) -> int:
        """Alerts found damaged on disk before publishing and quarantined (persists across restarts)."""
        return self._counter("corrupted")

    def close(self) -> None:
        """Close the database (committed rows stay on disk)."""
        with self._lock:
            self._db.close()


class MemoryHold:
    """Where alerts wait while the outbox file cannot be written (full disk, damaged, read-only).

    Same reading interface as :class:`Outbox` (``pending``/``ack``/``len``); row ids are negative so
    they never collide with the file's. Bounded by ``max_alerts``: beyond it the lowest-severity, then
    oldest alert is dropped and counted in ``lost`` (the caller logs it). Not durable: a daemon
    restart loses what is held (the publisher says so at exit).
    """

    def __init__(self, max_alerts: int) -> None:
        self.max_alerts = max_alerts
        self.lost = 0
        self._rows: dict[int, tuple[int, OutboxRow]] = {}  # row id -> (severity rank, row)
        self._next_id = -1
        self._lock = threading.Lock()

    def put(self, alert: dict, snapshot: bytes | None = None) -> OutboxRow | None:
        """Hold `alert`; return the alert dropped to make room (None when nothing was dropped)."""
        severity = str(alert.get("severity"))
        rank = SEVERITY_LEVELS.index(severity) if severity in SEVERITY_LEVELS else 0
        payload = json.dumps(alert, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        with self._lock:
            row = OutboxRow(self._next_id, str(alert.get("alert_id", "")), payload, snapshot)
            self._next_id -= 1
            self._rows[row.row_id] = (rank, row)
            if len(self._rows) <= self.max_alerts:
                return None
            victim_id = min(self._rows, key=lambda rid: (self._rows[rid][0], -rid))  # lowest rank, oldest
            self.lost += 1
            return self._rows.pop(victim_id)[1]

    def pending(self, limit: int, exclude: set[int] | frozenset[int] = frozenset()) -> list[OutboxRow]:
        """The oldest `limit` held alerts not in `exclude`."""
        with self._lock:
            rows = [row for rid, (_, row) in sorted(self._rows.items(), reverse=True) if rid not in exclude]
        return rows[:max(0, limit)]

    def ack(self, row_id: int) -> None:
        """Forget an alert the broker accepted."""
        with self._lock:
            self._rows.pop(row_id, None)

    def take_all(self) -> list[OutboxRow]:
        """Remove and return every held alert, oldest first (to store them in the file at shutdown)."""
        with self._lock:
            rows = [row for _, (_, row) in sorted(self._rows.items(), reverse=True)]
            self._rows.clear()
        return rows

    def __len__(self) -> int:
        with self._lock:
            return len(self._rows)
