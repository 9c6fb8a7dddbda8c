"""The publisher's stats record: the pipeline's figures plus delivery and storage state (pure), and
the clock that says when the next record is due."""

from __future__ import annotations

import time
from typing import Any

OUTBOX_UNKNOWN = {"outbox_pending": None, "outbox_bytes": None, "outbox_dropped": None, "outbox_corrupted": None}


def publisher_stats(pipeline: dict[str, Any], *, device_id: str, connected: bool, protocol: str,
                    outbox: dict[str, Any], storage_error: str | None, held: int, lost_storage: int,
                    inflight: int, unconfirmed_resends: int, trimmed: int, oversized_dropped: int,
                    callback_errors: int, cpu_temperature_c: float | None) -> dict[str, Any]:
    """The stats record published on <prefix>/<device>/stats (docs/MQTT.md lists every field).

    `outbox`: outbox_pending / outbox_bytes / outbox_dropped / outbox_corrupted (None each while the
    file cannot be read: OUTBOX_UNKNOWN).
    """
    return {
        **pipeline,
        "device_id": device_id,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "mqtt_connected": connected,
        "mqtt_protocol": protocol,
        **outbox,
        "outbox_storage_error": storage_error,
        "alerts_held_in_memory": held,
        "alerts_lost_storage": lost_storage,
        "alerts_inflight": inflight,
        "alerts_unconfirmed_resends": unconfirmed_resends,
        "alerts_trimmed": trimmed,
        "alerts_oversized_dropped": oversized_dropped,
        "mqtt_callback_errors": callback_errors,
        "cpu_temperature_c": cpu_temperature_c,
    }


class StatsClock:
    """When the next stats record is due: every `interval_s` (0 = never by itself) and on request."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.due_at = time.monotonic() + interval_s if interval_s > 0 else float("inf")
        self._requested = False

    def request(self) -> None:
        """A record is wanted now (the pipeline handed over new stats)."""
        self._requested = True

    def take(self) -> bool:
        """True when a record is due now; then the next one is scheduled."""
        now = time.monotonic()
        if not (self._requested or now >= self.due_at):
            return False
        self._requested = False
        self.due_at = now + self.interval_s if self.interval_s > 0 else float("inf")
        return True
