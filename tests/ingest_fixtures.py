"""Helpers for the fleet-ingest tests and benchmark: a real PostgreSQL fixture, database counts, waiting."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from testbed.postgres import Postgres, why_no_postgres

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def postgres():
    """A running PostgreSQL in its own temporary folder (skipped with the reason where it cannot run)."""
    reason = why_no_postgres()
    if reason:
        pytest.skip(reason)
    server = Postgres().start()
    yield server
    server.remove()


def wait_until(predicate: Callable[[], bool], timeout_s: float, poll_s: float = 0.05) -> bool:
    """Poll ``predicate`` (a database count, a file) until true or ``timeout_s``; returns its last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        threading.Event().wait(poll_s)


def alert_ids(db_url: str) -> list[str]:
    """Every alert_id row in the database (a list: a duplicate would show twice)."""
    from sqlalchemy import select

    from edge.ingest import schema
    from edge.ingest.dburl import create_db_engine

    engine = create_db_engine(db_url, write=False)
    try:
        with engine.connect() as conn:
            return [r[0] for r in conn.execute(select(schema.alerts.c.alert_id))]
    except Exception:  # noqa: BLE001 - not created yet / server restarting: no rows to count
        return []
    finally:
        engine.dispose()


def start_ingest_process(broker_uri: str, db_url: str, workdir: Path, *, index: int = 0, group: str = "ingest",
                         extra: tuple[str, ...] = ()) -> subprocess.Popen:
    """``python -m edge.ingest`` as a subprocess (stderr to <workdir>/ingest-<index>.log)."""
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    log = open(workdir / f"ingest-{index}.log", "ab")  # noqa: SIM115 - kept open for the child's lifetime
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge.ingest", "--broker", broker_uri, "--db", db_url, "--group", group,
         "--index", str(index), "--client-id", f"ingest-test-{group}-{index}",
         "--snapshot-dir", str(workdir / "snapshots"), *extra],
        cwd=REPO, env=env, stdout=log, stderr=log)
    log.close()
    return proc
