"""The durable outbox: order, acknowledgement, bounds with the drop policy, survival of SIGKILL."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from mqtt_fixtures import REPO, make_alert, outbox_at

from edge.config import OutboxConfig
from edge.outbox import OutboxError


def test_put_is_committed_and_pending_keeps_order(tmp_path: Path) -> None:
    box = outbox_at(tmp_path / "outbox.sqlite3")
    alerts = [make_alert(sequence=i) for i in range(5)]
    rows = [box.put(a) for a in alerts]
    # Another connection (another process would see the same) sees every row right after put returns.
    other = sqlite3.connect(tmp_path / "outbox.sqlite3")
    assert other.execute("SELECT COUNT(*) FROM alerts").fetchone()[0] == 5
    assert [r.alert_id for r in box.pending(10)] == [a["alert_id"] for a in alerts]
    assert [r.row_id for r in box.pending(2, exclude={rows[0]})] == rows[1:3]
    box.ack(rows[1])
    box.ack(rows[1])  # a second ack of the same row is harmless
    assert [r.row_id for r in box.pending(10)] == [rows[0], *rows[2:]]
    assert box.put(alerts[0]) == rows[0], "the same alert_id is stored once"
    assert len(box) == 4


def test_bound_drops_lowest_severity_oldest_first_and_counts_persist(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    box = outbox_at(path, max_alerts=3)
    order = ["high", "low", "medium", "low", "high"]
    alerts = [make_alert(sequence=i, severity=s) for i, s in enumerate(order)]
    for a in alerts:
        box.put(a)
    kept = [r.alert_id for r in box.pending(10)]
    # The two lows went first (oldest first); the older high and medium and the newest high remain.
    assert kept == [alerts[0]["alert_id"], alerts[2]["alert_id"], alerts[4]["alert_id"]]
    assert box.dropped == 2
    box.put(make_alert(sequence=9, severity="high"))  # now medium is the lowest severity present
    assert alerts[2]["alert_id"] not in [r.alert_id for r in box.pending(10)]
    box.close()
    assert outbox_at(path, max_alerts=3).dropped == 3, "the dropped counter survives a restart"


def test_byte_bound_keeps_the_newest_when_all_equal(tmp_path: Path) -> None:
    box = outbox_at(tmp_path / "outbox.sqlite3", max_bytes=3000)
    alerts = [make_alert(sequence=i, n_cracks=4) for i in range(10)]
    for a in alerts:
        box.put(a, snapshot=b"\xff\xd8" + b"x" * 300)
    assert box.size_bytes() <= 3000
    kept = [r.alert_id for r in box.pending(100)]
    assert kept == [a["alert_id"] for a in alerts[-len(kept):]] and 0 < len(kept) < 10
    assert box.dropped == 10 - len(kept)
    assert box.pending(1)[0].snapshot.startswith(b"\xff\xd8")


def test_alert_survives_sigkill_right_after_put(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    code = (
        "import os, signal\n"
        "from testbed.mqtt import make_alert, outbox_at\n"
        f"box = outbox_at({str(path)!r})\n"
        "for i in range(20): box.put(make_alert(sequence=i))\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == -9, proc.stderr
    assert [len(outbox_at(path))] == [20]


def test_concurrent_put_and_ack_from_two_threads(tmp_path: Path) -> None:
    box = outbox_at(tmp_path / "outbox.sqlite3")
    stored = threading.Event()
    acked: list[int] = []

    def producer() -> None:
        for i in range(200):
            box.put(make_alert(sequence=i))
        stored.set()

    def consumer() -> None:
        while not (stored.is_set() and len(box) == 0):
            for row in box.pending(16):
                box.ack(row.row_id)
                acked.append(row.row_id)

    threads = [threading.Thread(target=producer), threading.Thread(target=consumer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(box) == 0 and len(set(acked)) == 200


def test_errors_name_the_problem(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutboxError, match="cannot open outbox .*file/outbox.sqlite3"):
        outbox_at(blocker / "outbox.sqlite3")
    with pytest.raises(ValueError, match="synchronous"):
        OutboxConfig(path=str(tmp_path / "o.sqlite3"), synchronous="OFF")
    with pytest.raises(OutboxError, match="alert_id"):
        outbox_at(tmp_path / "o2.sqlite3").put({"severity": "low"})


def _alert_records(scan) -> dict[str, bytes]:
    """alert_id -> payload of every alerts-table row a scan found."""
    return {v[1]: v[4] for _, v in scan.records if len(v) == 9 and v[0] is None and isinstance(v[4], bytes)}


def test_page_scan_reads_rows_with_overflow_pages_and_from_the_wal(tmp_path: Path) -> None:
    """Rows larger than a page (overflow chains) and rows still only in the write-ahead log are read back
    byte for byte without SQLite."""
    from edge.outbox_salvage import scan_records

    path = tmp_path / "outbox.sqlite3"
    box = outbox_at(path, wal_max_bytes=64 * 1024 * 1024)  # no automatic checkpoint: rows stay in the WAL
    alerts = [make_alert(sequence=i, n_cracks=200 if i % 3 == 0 else 2) for i in range(12)]
    for alert in alerts:
        box.put(alert, snapshot=b"\xff\xd8" + bytes(range(256)) * 40 if alert["sequence"] == 3 else None)
    wal = path.with_name(path.name + "-wal")
    assert wal.stat().st_size > 0
    scan = scan_records(path.read_bytes(), wal.read_bytes())
    found = _alert_records(scan)
    stored = {r.alert_id: r.payload for r in box.pending(100)}
    box.close()
    assert found == stored and len(found) == 12
    assert max(len(p) for p in found.values()) > 4096, "some payloads span overflow pages"
    assert scan.unreadable_cells == 0 and scan.wal_pages > 0


def test_page_scan_survives_a_destroyed_header(tmp_path: Path) -> None:
    from edge.outbox_salvage import scan_records

    path = tmp_path / "outbox.sqlite3"
    box = outbox_at(path)
    alerts = [make_alert(sequence=i, n_cracks=4) for i in range(20)]
    for alert in alerts:
        box.put(alert)
    box.close()
    data = bytearray(path.read_bytes())
    data[:100] = bytes(100)  # header gone: the page size must be found by trying
    assert set(_alert_records(scan_records(bytes(data)))) >= {a["alert_id"] for a in alerts[1:]}


def test_garbage_is_not_taken_for_rows(tmp_path: Path) -> None:
    import os

    from edge.outbox_salvage import scan_records

    scan = scan_records(os.urandom(64 * 1024))
    assert _alert_records(scan) == {}


def test_salvage_never_brings_back_delivered_alerts(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    box = outbox_at(path)
    rows = [box.put(make_alert(sequence=i, n_cracks=6)) for i in range(30)]
    for row in rows[:20]:
        box.ack(row)  # delivered: their bytes must be gone from the file (secure_delete)
    kept = {r.alert_id for r in box.pending(100)}
    box.close()
    with open(path, "r+b") as fh:  # damage the header so that SQLite refuses the file
        fh.write(b"garbage" * 4)
    salvaged = outbox_at(path)
    assert {r.alert_id for r in salvaged.pending(100)} == kept
    assert (salvaged.recovered, salvaged.unrecoverable) == (10, 0)


def test_a_changed_byte_is_caught_by_the_checksum_and_quarantined(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    box = outbox_at(path)
    alerts = [make_alert(sequence=i) for i in range(3)]
    for alert in alerts:
        box.put(alert)
    box.close()
    data = bytearray(path.read_bytes())
    at = data.find(f'"alert_id":"{alerts[1]["alert_id"]}"'.encode())
    data[at + 60] ^= 0x01  # one bit, and still valid JSON text
    path.write_bytes(bytes(data))
    box = outbox_at(path)
    assert [r.alert_id for r in box.pending(10)] == [alerts[0]["alert_id"], alerts[2]["alert_id"]]
    assert box.corrupted == 1 and len(box) == 2
    box.close()
    other = sqlite3.connect(path)
    assert other.execute("SELECT alert_id, reason FROM quarantine").fetchall() == [
        (alerts[1]["alert_id"], "its checksum does not match its bytes")]


def test_sequence_numbers_go_on_when_the_state_file_cannot_be_written(tmp_path: Path, caplog) -> None:
    from edge.sequence import SequenceCounter

    blocker = tmp_path / "file"
    blocker.write_text("x")
    counter = SequenceCounter(blocker / "state.json")
    assert [counter.take() for _ in range(3)] == [0, 1, 2]
    assert counter.write_error is not None
    assert sum("cannot be written" in r.getMessage() for r in caplog.records) == 1
