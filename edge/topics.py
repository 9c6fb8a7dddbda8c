"""The MQTT topic and payload contract of one device (docs/MQTT.md): topic names, alert bytes, size fit.

Pure: no paho, no sockets. The publisher (edge/mqtt.py), the subscriber (edge/subscribe.py) and the
config validation (edge/config.py) share these definitions so that the contract is written once::

  <prefix>/<device_id>/alert               alert JSON (edge/schemas/alert.schema.json), QoS 1, not retained
  <prefix>/<device_id>/status              "online" / "offline", QoS 1, retained; "offline" is the last will
  <prefix>/<device_id>/stats               health JSON, QoS 0, not retained
  <prefix>/<device_id>/snapshot/<alert_id> JPEG bytes, QoS 1, not retained, sent just before its alert
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edge.mqtt_names import MqttConfigError, topic_part_problem
from edge.severity import severity_rank

SNAPSHOT_QOS = 1
STATS_QOS = 0
STATUS_QOS = 1


class TopicError(MqttConfigError):
    """A device id or topic prefix cannot be used as an MQTT topic level; the message names it."""


def check_topic_part(name: str, value: str) -> str:
    """``value`` when usable as the ``name`` topic level; else :class:`TopicError` naming it."""
    problem = topic_part_problem(name, value)
    if problem is not None:
        raise TopicError(f"{name} {value!r} is not usable in an MQTT topic: {problem}")
    return value


@dataclass(frozen=True)
class Topics:
    """The topic names of one device under one prefix."""

    prefix: str
    device_id: str

    @property
    def alert(self) -> str:
        return f"{self.prefix}/{self.device_id}/alert"

    @property
    def status(self) -> str:
        return f"{self.prefix}/{self.device_id}/status"

    @property
    def stats(self) -> str:
        return f"{self.prefix}/{self.device_id}/stats"

    def snapshot(self, alert_id: str) -> str:
        return f"{self.prefix}/{self.device_id}/snapshot/{alert_id}"


def device_of_topic(topic: str) -> str | None:
    """The device level of ``<prefix>/<device>/<kind>`` (None when the topic has fewer than 3 levels)."""
    parts = topic.split("/")
    return parts[-2] if len(parts) >= 3 else None


def encode_alert(alert: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON, the bytes that go on the alert topic."""
    return json.dumps(alert, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _crack_rank(crack: Mapping[str, Any]) -> tuple[int, float, float]:
    severity = crack.get("severity")
    try:
        rank = severity_rank(severity)
    except ValueError:
        rank = 0
    return rank, crack.get("max_width_px", 0), crack.get("length_px", 0)


def fit_alert(alert: dict, max_payload_bytes: int) -> tuple[dict, int]:
    """Trim the cracks list so the JSON fits `max_payload_bytes`; return (alert, cracks removed).

    Keeps the most severe, then widest, then longest cracks (so `severity` stays the maximum of the
    kept cracks, as the schema says) and at least one. Raises ValueError when even one crack is too big.
    """
    if len(encode_alert(alert)) <= max_payload_bytes:
        return alert, 0
    cracks = sorted(alert.get("cracks", []), key=_crack_rank, reverse=True)
    lo, hi = 1, len(cracks)  # binary search on how many of the ranked cracks fit
    if not cracks or len(encode_alert({**alert, "cracks": cracks[:1]})) > max_payload_bytes:
        raise ValueError(
            f"alert {alert.get('alert_id')} does not fit max_payload_bytes={max_payload_bytes} even with one crack"
        )
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(encode_alert({**alert, "cracks": cracks[:mid]})) <= max_payload_bytes:
            lo = mid
        else:
            hi = mid - 1
    return {**alert, "cracks": cracks[:lo]}, len(cracks) - lo
