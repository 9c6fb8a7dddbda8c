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
