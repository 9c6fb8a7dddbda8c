"""Read alerts for the report: JSON lines (``edge.subscribe --out``; the daemon's stdout and the demo's
``alerts.jsonl``, whose lines carry ``"type": "alert"`` / ``"stats"``) or the daemon's SQLite outbox;
find each alert's snapshot JPEG.

Alerts are de-duplicated on ``alert_id`` (a subscriber file and an outbox may hold the same alert).
A line that is not a valid alert is skipped with a warning naming the file and line.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

log = logging.getLogger("edge.report")


class ReportInputError(ValueError):
    """An input cannot be read; the message names the file and what was expected."""


def _check(alert: object, where: str) -> dict | None:
    from edge.alerts import validate_alert

    if not isinstance(alert, dict):
        log.warning("%s: not a JSON object, skipped", where)
        return None
    problems = validate_alert(alert)
    if problems:
        log.warning("%s: not a valid alert (%s), skipped", where, problems[0])
        return None
    return alert


def read_jsonl(path: Path) -> list[dict]:
    """Alerts from a JSON-lines file; invalid lines are skipped with a warning."""
    alerts = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                log.warning("%s:%d: not JSON (%s), skipped", path, number, exc.msg)
                continue
            if isinstance(item, dict) and "type" in item:  # the daemon's stdout lines: {"type": "alert"|"stats", ...}
                if item["type"] != "alert":
                    continue
                item = {k: v for k, v in item.items() if k != "type"}
            alert = _check(item, f"{path}:{number}")
            if alert is not None:
                alerts.append(alert)
    return alerts


def read_outbox(path: Path) -> tuple[list[dict], dict[str, bytes]]:
    """Alerts still queued in a daemon's SQLite outbox, and their snapshot JPEGs by alert_id (read-only)."""
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        rows = con.execute("SELECT alert_id, payload, snapshot FROM alerts ORDER BY id").fetchall()
        con.close()
    except sqlite3.Error as exc:
        raise ReportInputError(f"{path}: not a readable outbox database ({exc})") from exc
    alerts, jpegs = [], {}
    for alert_id, payload, snapshot in rows:
        alert = _check(json.loads(bytes(payload).decode("utf-8")), f"{path} row {alert_id}")
        if alert is not None:
            alerts.append(alert)
            if snapshot:
                jpegs[alert["alert_id"]] = bytes(snapshot)
    return alerts, jpegs


def read_inputs(paths: list[Path]) -> tuple[list[dict], dict[str, bytes]]:
    """All alerts of JSONL files and outbox databases (by content: SQLite files start with their magic)."""
    alerts: dict[str, dict] = {}
    jpegs: dict[str, bytes] = {}
    for path in paths:
        if not path.is_file():
            raise ReportInputError(f"{path}: no such file (expected alerts.jsonl or an outbox .sqlite3)")
        with open(path, "rb") as fh:
            is_sqlite = fh.read(16) == b"SQLite format 3\0"
        if is_sqlite:
            found, found_jpegs = read_outbox(path)
            jpegs.update(found_jpegs)
        else:
            found = read_jsonl(path)
        for alert in found:
            alerts.setdefault(alert["alert_id"], alert)
    return list(alerts.values()), jpegs


def find_snapshot(alert: dict, snapshot_dirs: list[Path], jpegs: dict[str, bytes]) -> bytes | None:
    """The alert's overlay JPEG: from the outbox, its recorded path, or ``<dir>/<alert_id>.jpg``."""
    if alert["alert_id"] in jpegs:
        return jpegs[alert["alert_id"]]
    candidates = []
    recorded = (alert.get("snapshot") or {}).get("path")
    if recorded:
        candidates.append(Path(recorded))
        candidates += [d / Path(recorded).name for d in snapshot_dirs]
    candidates += [d / f"{alert['alert_id']}.jpg" for d in snapshot_dirs]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.read_bytes()
    return None
