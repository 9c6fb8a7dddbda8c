"""Pure: MQTT topics and payloads of the device contract (docs/MQTT.md) to database rows.

No database, no paho, no clock: times are passed in. The ingest subscribes under a prefix whose
``+`` levels name a site (devices configured with ``topic_prefix = "crack/north-yard"``, ingest with
``--prefix crack/+``); without ``+`` every device's site is empty.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

KINDS = ("alert", "status", "stats", "snapshot")
MAX_REJECTED_PAYLOAD_BYTES = 1024


@dataclass(frozen=True)
class TopicInfo:
    """What a topic is: kind (alert, status, stats, snapshot), device, site, and a snapshot's alert id."""

    kind: str
    device_id: str
    site: str
    alert_id: str = ""


def parse_utc(stamp: str) -> datetime:
    """An alert's ISO 8601 time (``…Z`` or an offset) as an aware UTC datetime."""
    value = datetime.fromisoformat(stamp[:-1] + "+00:00" if stamp.endswith(("Z", "z")) else stamp)
    return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)


def parse_topic(prefix: str, topic: str) -> TopicInfo | None:
    """The TopicInfo of ``topic`` under ``prefix`` (``+`` levels allowed), None when it is none of ours."""
    want = prefix.split("/")
    levels = topic.split("/")
    n = len(want)
    if len(levels) < n + 2 or any(w != "+" and w != t for w, t in zip(want, levels[:n], strict=False)):
        return None
    site = "/".join(t for w, t in zip(want, levels[:n], strict=False) if w == "+")
    device, rest = levels[n], levels[n + 1:]
    if not device:
        return None
    if rest in (["alert"], ["status"], ["stats"]):
        return TopicInfo(rest[0], device, site)
    if len(rest) == 2 and rest[0] == "snapshot" and rest[1]:
        return TopicInfo("snapshot", device, site, rest[1])
    return None


def subscriptions(prefix: str, group: str) -> list[tuple[str, int]]:
    """(topic filter, QoS) of one worker: alerts, snapshots and stats shared in ``group``; status not shared.

    Status is retained, and MQTT 5 does not deliver retained messages to shared subscriptions, so
    every worker reads every status change; the store records a change once.
    """
    shared = f"$share/{group}/{prefix}"
    return [(f"{shared}/+/alert", 1), (f"{shared}/+/snapshot/+", 1), (f"{shared}/+/stats", 0),
            (f"{prefix}/+/status", 1)]


def snapshot_relpath(device_id: str, alert_id: str) -> str:
    """Where a snapshot lives below the snapshot folder: <device_id>/<alert_id>.jpg."""
    return f"{device_id}/{alert_id}.jpg"


def safe_file_part(value: str) -> bool:
    """True when ``value`` is usable as one path component (no separators, not . or .., printable)."""
    return bool(value) and value not in (".", "..") and "/" not in value and "\\" not in value and \
        value.isprintable() and len(value) <= 200


def alert_row(alert: dict, info: TopicInfo, topic: str, *, received_at: datetime, stored_at: datetime,
              snapshot_root: Path) -> dict[str, Any]:
    """The ``alerts`` row of a validated alert (its summary columns and the full JSON)."""
    cracks = alert.get("cracks") or []
    widths_mm = [c["max_width_mm"] for c in cracks if c.get("max_width_mm") is not None]
    geo = alert.get("geo") or {}
    has_snapshot = bool((alert.get("snapshot") or {}).get("topic"))
    return {
        "alert_id": alert["alert_id"], "device_id": alert["device_id"], "site": info.site,
        "sequence": int(alert["sequence"]),
        "capture_time": parse_utc(alert["capture_time"]),
        "created_at": parse_utc(alert["created_at"]),
        "received_at": received_at, "stored_at": stored_at,
        "severity": alert["severity"], "n_cracks": len(cracks),
        "max_width_px": float(max((c["max_width_px"] for c in cracks), default=0.0)),
        "max_width_mm": float(max(widths_mm)) if widths_mm else None,
        "max_length_px": float(max((c["length_px"] for c in cracks), default=0.0)),
        "coverage": float(alert["coverage"]),
        "lat": geo.get("lat") if not geo.get("stale") else None,
        "lon": geo.get("lon") if not geo.get("stale") else None,
        "source": alert["source"], "frame_index": int(alert["frame_index"]), "topic": topic,
        "snapshot_path": str(snapshot_root / snapshot_relpath(alert["device_id"], alert["alert_id"]))
        if has_snapshot and safe_file_part(alert["alert_id"]) and safe_file_part(alert["device_id"]) else None,
        "payload": alert,
    }


def status_value(payload: bytes) -> str:
    """The status a device published: 'online', 'offline', or '' for a cleared retained status."""
    text = payload.decode("utf-8", errors="replace").strip()
    return text[:32]


def rejected_row(topic: str, reason: str, payload: bytes, received_at: datetime) -> dict[str, Any]:
    """A ``rejected_messages`` row: the topic, why, and the payload's first bytes."""
    return {"topic": topic[:1000], "reason": reason[:1000], "received_at": received_at,
            "payload_head": bytes(payload[:MAX_REJECTED_PAYLOAD_BYTES])}
