"""The Publisher protocol: where the pipeline hands finished alerts and periodic stats.

``LogPublisher`` (JSON lines on stdout or the log) is the default and needs no network;
``edge.mqtt.MqttPublisher`` is the MQTT implementation (durable outbox, QoS 1). A publisher must never
block the pipeline on the network: ``publish_alert`` stores or queues and returns.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from dataclasses import dataclass
from typing import Any, Protocol, TextIO, runtime_checkable

log = logging.getLogger("edge.publish")


@dataclass(frozen=True)
class Backlog:
    """Alerts handed to a publisher that the receiving side has not accepted yet, and where they wait."""

    alerts: int
    where: str


@runtime_checkable
class Publisher(Protocol):
    """What the pipeline needs from an alert transport (see docs/CONTRACTS.md)."""

    def publish_alert(self, alert: dict, snapshot_jpeg: bytes | None = None) -> None:
        """Hand over one alert (a dict valid against edge/schemas/alert.schema.json); must not block."""
        ...

    def publish_stats(self, stats: dict) -> None:
        """Hand over the pipeline's periodic health figures (fps, latency, queue depths, drops)."""
        ...

    def close(self, timeout_s: float = 5.0) -> None:
        """Flush what can be flushed within ``timeout_s`` seconds and release resources."""
        ...

    def backlog(self) -> Backlog:
        """Alerts not yet accepted by the receiving side and where they wait (also after ``close``)."""
        ...


class LogPublisher:
    """Writes each alert (and stats record) as one JSON line to ``stream`` (default: stdout).

    Lines are ``{"type": "alert", ...alert}`` / ``{"type": "stats", ...stats}`` so a reader can tell
    them apart; snapshot bytes are not written (the alert's ``snapshot.path`` names the local JPEG).
    Thread-safe; keeps the last alerts in ``self.alerts`` (handy for the demo and tests).
    """

    def __init__(self, stream: TextIO | None = None, *, keep_last: int = 1000) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self._keep_last = keep_last
        self.alerts: list[dict] = []
        self.stats: list[dict] = []

    def _write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":"), ensure_ascii=False, default=str)
        stream = self._stream if self._stream is not None else sys.stdout
        stream.write(line + "\n")
        stream.flush()

    def publish_alert(self, alert: dict, snapshot_jpeg: bytes | None = None) -> None:
        with self._lock:
            self.alerts.append(alert)
            del self.alerts[: -self._keep_last]
            self._write({"type": "alert", **alert})

    def publish_stats(self, stats: dict) -> None:
        with self._lock:
            self.stats.append(stats)
            del self.stats[: -self._keep_last]
            self._write({"type": "stats", **stats})

    def backlog(self) -> Backlog:
        """Nothing waits: a line is written before ``publish_alert`` returns."""
        return Backlog(0, "stdout")

    def close(self, timeout_s: float = 5.0) -> None:
        with self._lock:
            stream = self._stream if self._stream is not None else sys.stdout
            try:
                stream.flush()
            except ValueError:  # already closed by its owner
                log.debug("LogPublisher stream already closed")
