"""The report's loading step: alerts and their snapshot JPEGs from JSON-lines files or outbox databases.

The seam between loading and building is :class:`AlertRecords`: the valid alerts (schema v1 dicts,
de-duplicated on ``alert_id``) and a function that returns an alert's overlay JPEG bytes (None
where there is none). :func:`load_files` makes one from files; any other store (a database of a
fleet's alerts) only has to make one too, and :func:`edge.report.build.build_report` does the rest.

Files: JSON lines (alerts, or the daemon's stdout lines ``{"type": "alert"|"stats", ...}``) and the
daemon's SQLite outbox. A line that is not a valid alert is skipped with a warning naming the file
and line; an input that is not text, or holds no valid alert at all, is an error that says so
(an empty report would look like a clean survey).
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("edge.report")


class ReportInputError(ValueError):
    """An input cannot be read; the message names the file and what was expected."""


@dataclass
class AlertRecords:
    """What the report is built from: valid alerts and a snapshot lookup (alert -> JPEG bytes or None)."""

    alerts: list[dict]
    snapshot: Callable[[dict], bytes | None] = field(default=lambda alert: None)
    origin: str = ""  # where they came from, for the report's header (file names, a database URL)


def _check(alert: object, where: str) -> tuple[dict | None, str]:
    from edge.alerts import validate_alert

    if not isinstance(alert, dict):
        return None, f"{where}: not a JSON object"
    problems = validate_alert(alert)
    if problems:
        return None, f"{where}: not a valid alert ({problems[0]})"
    return alert, ""


def _text_of(path: Path) -> str:
    """The file as UTF-8 text; ReportInputError for binary content (an image, an archive, a wrong file)."""
    raw = path.read_bytes()
    if b"\0" in raw[:65536]:
        raise ReportInputError(f"{path}: a binary file, not alerts (expected JSON lines from edge.subscribe --out or "
                               "the daemon, or an outbox .sqlite3)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ReportInputError(f"{path}: not UTF-8 text at byte {exc.start}, so not a JSON-lines alerts file") from None


def read_jsonl(path: Path) -> tuple[list[dict], list[str]]:
    """Alerts from a JSON-lines file, and the reasons lines were skipped (each also logged as a warning)."""
    alerts, skipped = [], []
    for number, line in enumerate(_text_of(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            skipped.append(f"{path}:{number}: not JSON ({exc.msg})")
            log.warning("%s, skipped", skipped[-1])
            continue
        if isinstance(item, dict) and "type" in item:  # the daemon's stdout lines: {"type": "alert"|"stats", ...}
            if item["type"] != "alert":
                continue
            item = {k: v for k, v in item.items() if k != "type"}
        alert, why = _check(item, f"{path}:{number}")
        if alert is None:
            skipped.append(why)
            log.warning("%s, skipped", why)
        else:
            alerts.append(alert)
    return alerts, skipped


def read_outbox(path: Path) -> tuple[list[dict], dict[str, bytes], list[str]]:
    """Alerts still queued in a daemon's SQLite outbox, their snapshot JPEGs by alert_id, skipped rows."""
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        rows = con.execute("SELECT alert_id, payload, snapshot FROM alerts ORDER BY id").fetchall()
        con.close()
    except sqlite3.Error as exc:
        raise ReportInputError(f"{path}: not a readable outbox database ({exc})") from exc
    alerts, jpegs, skipped = [], {}, []
    for alert_id, payload, snapshot in rows:
        try:
            item = json.loads(bytes(payload).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            item = None
        alert, why = _check(item, f"{path} row {alert_id}")
        if alert is None:
            skipped.append(why)
            log.warning("%s, skipped", why)
            continue
        alerts.append(alert)
        if snapshot:
            jpegs[alert["alert_id"]] = bytes(snapshot)
    return alerts, jpegs, skipped


def _check_path(path: Path) -> None:
    if path.is_dir():
        inside = [p.name for p in (path / "alerts.jsonl", path / "outbox.sqlite3") if p.is_file()]
        hint = f" (it holds {', '.join(inside)})" if inside else ""
        raise ReportInputError(f"{path} is a folder; give the alerts file itself: an alerts .jsonl or an outbox "
                               f".sqlite3{hint}")
    if not path.is_file():
        raise ReportInputError(f"{path}: no such file (expected alerts.jsonl or an outbox .sqlite3)")


def snapshot_finder(inputs: list[Path], snapshot_dirs: list[Path], jpegs: dict[str, bytes]) -> Callable[[dict], bytes | None]:
    """An alert's overlay JPEG: from an outbox; its ``snapshot.path`` (absolute, or relative to an input's
    folder, as edge.subscribe --snapshots writes it); ``<dir>/<name>`` and ``<dir>/<alert_id>.jpg`` for each
    of ``snapshot_dirs`` and each input's ``snapshots/`` folder."""
    bases = list(dict.fromkeys(p.parent for p in inputs))
    dirs = list(snapshot_dirs) + [b / "snapshots" for b in bases if (b / "snapshots").is_dir()]

    def find(alert: dict) -> bytes | None:
        if alert["alert_id"] in jpegs:
            return jpegs[alert["alert_id"]]
        candidates = []
        recorded = (alert.get("snapshot") or {}).get("path")
        if recorded:
            path = Path(recorded)
            candidates += [path] if path.is_absolute() else [b / path for b in bases]
            candidates += [d / path.name for d in dirs]
        candidates += [d / f"{alert['alert_id']}.jpg" for d in dirs]
        for candidate in candidates:
            if candidate.is_file():
                return candidate.read_bytes()
        return None

    return find


def load_files(inputs: list[Path], snapshot_dirs: list[Path] | None = None) -> AlertRecords:
    """The alerts of JSONL files and outbox databases (told apart by content) with their snapshots.

    ReportInputError when an input is missing, a folder, binary, or when none holds a valid alert.
    """
    alerts: dict[str, dict] = {}
    jpegs: dict[str, bytes] = {}
    skipped: list[str] = []
    for path in inputs:
        _check_path(path)
        with open(path, "rb") as fh:
            is_sqlite = fh.read(16) == b"SQLite format 3\0"
        if is_sqlite:
            found, found_jpegs, why = read_outbox(path)
            jpegs.update(found_jpegs)
        else:
            found, why = read_jsonl(path)
        skipped += why
        for alert in found:
            alerts.setdefault(alert["alert_id"], alert)
    if not alerts:
        names = ", ".join(str(p) for p in inputs)
        detail = f"{len(skipped)} line(s) skipped, the first: {skipped[0]}" if skipped else "the input is empty"
        raise ReportInputError(f"no valid alert in {names} ({detail}): nothing to report")
    return AlertRecords(list(alerts.values()), snapshot_finder(inputs, list(snapshot_dirs or []), jpegs),
                        origin=", ".join(p.name for p in inputs))
