"""The delivery window: which stored alerts are on the wire, and when one counts as accepted.

`DeliveryWindow` takes alerts from an `AlertStore` (the outbox file, else the memory hold), keeps at
most ``max_inflight`` of them sent and unconfirmed, and removes one from the store only when the broker
accepted it (docs/MQTT.md "Delivery rule"):
- MQTT 5: a PUBACK without an error reason code. A refusal keeps the alert; it is re-sent every
  ``reconnect_max_s``.
- MQTT 3.1.1: the PUBACK carries no verdict, so the broker's echo of the alert on this device's own
  subscription within ``echo_timeout_s``. Without it the alert is re-sent later; the likely cause (no
  read access to the alert topic) is explained once per connection.
Alerts never sent go before re-sends, so unconfirmed alerts cannot hold the window against newer ones.
A failed delete of an accepted alert is retried and the alert is never re-sent in this process.

Thread use: `published` / `echoed` run in paho's network thread, the rest in the sender thread; one
lock guards the maps, and it is never held while calling into paho (paho holds its own mutex while
it calls back).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from edge.broker import connack_text
from edge.config import MqttConfig
from edge.outbox import OutboxRow
from edge.topics import SNAPSHOT_QOS, Topics

log = logging.getLogger("edge.mqtt")


class AlertStore(Protocol):
    """Where alerts wait: this device's rows, oldest first; removal on acceptance."""

    def pending(self, limit: int, exclude: set[int]) -> list[OutboxRow]:
        """The oldest `limit` waiting alerts not in `exclude`."""

    def remove(self, row_id: int) -> None:
        """Forget an accepted alert; raises when the store cannot be written."""

    def storage_failed(self, exc: BaseException) -> None:
        """Note that the store could not be read or written."""


class Sender(Protocol):
    """What the window needs of the link: publish, and which protocol is spoken."""

    protocol: str

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool = False) -> Any:
        """paho's publish; returns its MQTTMessageInfo."""


class DeliveryWindow:
    """The alerts in flight, their paho message ids, re-send times and echo deadlines."""

    def __init__(self, config: MqttConfig, topics: Topics, store: AlertStore, wake: Callable[[], None]) -> None:
        self.config = config
        self.topics = topics
        self.store = store
        self.wake = wake
        self.unconfirmed_resends = 0  # MQTT 3.1.1: alerts re-sent because their echo did not come
        self._lock = threading.Lock()
        self._mid_to_row: dict[int, int | None] = {}
        self._unclaimed_acks: dict[int, Any] = {}  # PUBACKs that raced ahead of publish()'s bookkeeping
        self._inflight: set[int] = set()
        self._retry_at: dict[int, float] = {}
        self._resend: set[int] = set()  # rows whose retry time came: sent after rows never sent
        self._echo_due: dict[int, float] = {}  # MQTT 3.1.1: acknowledged rows waiting for their echo
        self._row_of_alert: dict[str, int] = {}  # alert_id -> row in flight (to match echoes)
        self._delete_failed: set[int] = set()  # accepted rows whose delete failed: never re-sent, retried
        self._last_echo_s = float("-inf")  # MQTT 3.1.1: when the broker last routed one of our alerts back
        self._echo_explained = False  # the missing echo was explained on this connection

    # ------------------------------------------------------------------ figures

    def in_flight(self) -> int:
        """Alerts sent and not yet accepted or refused (waiting for a PUBACK or, under 3.1.1, an echo)."""
        with self._lock:
            return len(self._inflight) + len(self._echo_due)

    def accepted_not_deleted(self) -> int:
        """Accepted alerts whose removal from the store failed and is being retried."""
        with self._lock:
            return len(self._delete_failed)

    def next_due_s(self) -> float:
        """Monotonic time of the next re-send or echo deadline (inf when none)."""
        with self._lock:
            times = [*self._retry_at.values(), *self._echo_due.values()]
        return min(times, default=float("inf"))

    # ------------------------------------------------------------------ link events

    def connected(self) -> None:
        """A new connection: the missing-echo explanation may be given again."""
        self._echo_explained = False

    def forget_in_flight(self) -> None:
        """The client is replaced (protocol fallback): its message ids mean nothing any more."""
        with self._lock:
            self._mid_to_row.clear()
            self._unclaimed_acks.clear()
            self._inflight.clear()
            self._row_of_alert.clear()

    def publish(self, link: Sender, topic: str, payload: bytes, qos: int, retain: bool = False,
                row_id: int | None = None) -> bool:
        """Publish and remember mid -> row; False when paho refused (QoS 0 while disconnected)."""
        import paho.mqtt.client as mqtt

        info = link.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS and (qos == 0 or info.rc != mqtt.MQTT_ERR_NO_CONN):
            return False
        with self._lock:
            early = self._unclaimed_acks.pop(info.mid, None)
            if early is None:
                self._mid_to_row[info.mid] = row_id
        if early is not None:
            self._settle(row_id, early, link.protocol)
        return True

    def published(self, mid: int, reason_code: Any, protocol: str) -> None:
        """The broker acknowledged `mid` (paho's network thread)."""
        with self._lock:
            if mid not in self._mid_to_row:
                self._unclaimed_acks[mid] = reason_code
                return
            row_id = self._mid_to_row.pop(mid)
        self._settle(row_id, reason_code, protocol)

    def echoed(self, topic: str, payload: bytes) -> None:
        """MQTT 3.1.1: the broker routed our own alert back to us, so it accepted it for this device."""
        if topic != self.topics.alert:
            return
        try:
            alert_id = str(json.loads(payload)["alert_id"])
        except (ValueError, KeyError, TypeError):
            return
        with self._lock:
            row_id = self._row_of_alert.get(alert_id)
            self._last_echo_s = time.monotonic()
        if row_id is not None:
            self._accept(row_id)

    def _settle(self, row_id: int | None, reason_code: Any, protocol: str) -> None:
        """Accept the alert, wait for its echo (3.1.1) or keep it for a re-send (refused)."""
        if row_id is None:
            return
        with self._lock:
            if row_id not in self._inflight:
                return  # already accepted (its echo came first) or no longer tracked (protocol fallback)
        if getattr(reason_code, "is_failure", False):
            log.error("MQTT broker refused alert row %d on %s: %s (kept in the outbox, retrying in %.0f s)",
                      row_id, self.topics.alert, connack_text(reason_code), self.config.reconnect_max_s)
            self._retry_later(row_id)
        elif protocol == "3.1.1":
            with self._lock:
                self._inflight.discard(row_id)
                self._echo_due[row_id] = time.monotonic() + self.config.echo_timeout_s
        else:
            self._accept(row_id)
        self.wake()

    def _retry_later(self, row_id: int) -> None:
        with self._lock:
            self._inflight.discard(row_id)
            self._resend.discard(row_id)
            self._echo_due.pop(row_id, None)
            self._retry_at[row_id] = time.monotonic() + self.config.reconnect_max_s
            self._forget_alert_of(row_id)

    def _forget_alert_of(self, row_id: int) -> None:
        """Drop the alert_id -> row entry of `row_id` (lock held)."""
        for alert_id in [a for a, r in self._row_of_alert.items() if r == row_id]:
            del self._row_of_alert[alert_id]

    def _accept(self, row_id: int) -> None:
        """The broker accepted the alert of `row_id`: remove it from the store."""
        with self._lock:
            if row_id not in self._inflight and row_id not in self._echo_due:
                return
        # Remove the alert before it stops counting as in flight, so the sender never sees it as pending.
        self._delete(row_id)
        with self._lock:
            self._inflight.discard(row_id)
            self._resend.discard(row_id)
            self._echo_due.pop(row_id, None)
            self._forget_alert_of(row_id)
        self.wake()

    def _delete(self, row_id: int) -> None:
        try:
            self.store.remove(row_id)
        except Exception as exc:  # never re-send a delivered alert in this process; retry the delete later
            with self._lock:
                self._delete_failed.add(row_id)
            self.store.storage_failed(exc)
        else:
            with self._lock:
                self._delete_failed.discard(row_id)

    # ------------------------------------------------------------------ sender thread

    def retry_deletes(self) -> None:
        """Try again to remove accepted alerts whose removal failed (stop at the first failure)."""
        with self._lock:
            rows = sorted(self._delete_failed)
        for row_id in rows:
            self._delete(row_id)
            if row_id in self._delete_failed:
                return

    def expire_echoes(self) -> None:
        """MQTT 3.1.1: alerts whose echo did not come within echo_timeout_s go back for a re-send."""
        now = time.monotonic()
        with self._lock:
            late = [r for r, t in self._echo_due.items() if t <= now]
        if late:
            self._explain_missing_echo()
        for row_id in late:
            log.debug("MQTT broker acknowledged alert row %d on %s but did not route it back within %g s; "
                      "kept, re-sent in %g s", row_id, self.topics.alert, self.config.echo_timeout_s,
                      self.config.reconnect_max_s)
            self.unconfirmed_resends += 1
            self._retry_later(row_id)

    def _explain_missing_echo(self) -> None:
        """Say once per connection why acknowledged alerts stay queued, unless echoes do come (then a
        late one is a slow broker, not a denial)."""
        with self._lock:
            if self._echo_explained or time.monotonic() - self._last_echo_s < 2 * self.config.echo_timeout_s:
                return
            self._echo_explained = True
        user = f"user {self.config.username!r}" if self.config.username else "this client (anonymous)"
        log.error(
            "MQTT 3.1.1: the broker acknowledges alerts on %s but does not route them back to %s within "
            "echo_timeout_s=%g s. Under 3.1.1 that echo is the only proof the broker accepted an alert (its PUBACK "
            "carries no verdict), so they stay in the outbox and are re-sent in turn every %g s (subscribers "
            "de-duplicate by alert_id). Fix: let %s read and write %s (mosquitto acl_file: 'topic readwrite %s'), "
            "or use MQTT 5 (mqtt.protocol = \"5\", or \"auto\" with a broker that speaks it), whose PUBACK says "
            "whether the alert was accepted", self.topics.alert, user, self.config.echo_timeout_s,
            self.config.reconnect_max_s, user, self.topics.alert, self.topics.alert)

    def fill(self, link: Sender, is_connected: Callable[[], bool]) -> None:
        """Send the next alerts: those never sent first, oldest first, then those due for a re-send, so
        alerts the broker keeps refusing (or never confirms) cannot hold the window against newer ones."""
        now = time.monotonic()
        with self._lock:
            for row_id in [r for r, t in self._retry_at.items() if t <= now]:
                del self._retry_at[row_id]
                self._resend.add(row_id)
            room = self.config.max_inflight - len(self._inflight) - len(self._echo_due)
            busy = self._inflight | set(self._retry_at) | set(self._echo_due) | self._delete_failed
            resend = set(self._resend)
        if room <= 0:
            return
        rows = self.store.pending(room, busy | resend)
        if resend and len(rows) < room:
            rows += self.store.pending(room - len(rows), busy | {r.row_id for r in rows})
        for row in rows:
            if not is_connected():
                return
            with self._lock:
                self._inflight.add(row.row_id)
                self._resend.discard(row.row_id)
                self._row_of_alert[row.alert_id] = row.row_id
            if row.snapshot is not None and self.config.publish_snapshots:
                self.publish(link, self.topics.snapshot(row.alert_id), row.snapshot, qos=SNAPSHOT_QOS)
            self.publish(link, self.topics.alert, row.payload, qos=self.config.qos, row_id=row.row_id)
