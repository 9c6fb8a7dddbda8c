"""MqttPublisher: crack alerts over MQTT (paho-mqtt 2.x) that survive broker outages, restarts and faults.

The topics and payloads are edge/topics.py's contract (docs/MQTT.md). The publisher is assembled from
one concept per module: the durable queue (edge/outbox.py), the link to the broker and its protocol
fallback (edge/mqtt_link.py), the delivery window that decides what is on the wire and when an alert
counts as accepted (edge/mqtt_window.py), and the stats record (edge/mqtt_stats.py). This module holds
what ties them: where alerts wait (the outbox file, else memory), the sender thread, and the
Publisher protocol (edge/publish.py).

The rule (docs/MQTT.md "Delivery rule"): an alert leaves the outbox only when the broker accepted it
for the device that raised it.
- `publish_alert` writes the alert to the outbox and wakes the sender thread; the pipeline never
  waits for the network. If the outbox file cannot be written or opened (full disk, damage, read-only)
  the publisher enters the *storage failed* state: one ERROR line, ``outbox_storage_error`` in the
  stats, and alerts wait in a bounded memory hold (``[mqtt.outbox] memory_max_alerts``) until
  delivered; a file that could not be opened is tried again every ``reopen_interval_s``.
- The sender keeps at most `max_inflight` alerts in flight, only this device's rows, never-sent ones
  first (oldest first), then re-sends.
Within one process paho re-sends alerts in flight when the link drops; after a restart the whole
backlog is re-sent from the outbox. The session is always clean.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

from edge.broker import read_password
from edge.config import MqttConfig
from edge.health import read_cpu_temperature_c
from edge.mqtt_link import BrokerLink
from edge.mqtt_names import MqttConfigError, parse_broker_uri
from edge.mqtt_stats import OUTBOX_UNKNOWN, StatsClock, publisher_stats
from edge.mqtt_window import DeliveryWindow
from edge.outbox import MemoryHold, Outbox, OutboxError, OutboxRow
from edge.publish import Backlog
from edge.topics import STATS_QOS, STATUS_QOS, Topics, check_topic_part, encode_alert, fit_alert

log = logging.getLogger("edge.mqtt")


class MqttPublisher:
    """The MQTT implementation of the Publisher protocol (edge/publish.py), backed by a durable outbox."""

    def __init__(self, device_id: str, config: MqttConfig, *, password: str | None = None) -> None:
        """Check the files the section names, open the outbox and start connecting in the background.

        device_id: this device's id, the second topic level (no '/', '#', '+').
        config: the validated ``[mqtt]`` section (edge/config.py's MqttConfig: every option, its default
            and unit; deploy/edge.example.toml documents them).
        password: the password when it does not come from ``config.password_file`` / $AELF_MQTT_PASSWORD
            (used only with ``config.username``; never logged).
        """
        self.config = config
        self.device_id = check_topic_part("device_id", device_id)
        self.topics = Topics(config.topic_prefix, device_id)
        self.address = parse_broker_uri(config.broker_uri)
        self.client_id = config.client_id or f"aelf-{device_id}"
        password = read_password(password, config.password_file) if config.username else None
        self._check_tls_files()
        self.oversized_dropped = 0
        self.trimmed_alerts = 0
        self.storage_error: str | None = None
        self.held = MemoryHold(config.outbox.memory_max_alerts)
        self.outbox: Outbox | None = None
        self._wake = threading.Condition(threading.Lock())
        self._reopen_at = float("inf")
        self._stop_sender = False
        self._pipeline_stats: dict[str, Any] = {}
        self._stats_lock = threading.Lock()
        self._stats_clock = StatsClock(config.stats_interval_s)
        self._final_backlog: Backlog | None = None
        self._open_outbox()
        self.window = DeliveryWindow(config, self.topics, self, self.wake)
        self.link = BrokerLink(config, self.topics, self.address, self.client_id, password, self)
        self.link.start()
        self._sender = threading.Thread(target=self._send_loop, name="mqtt-sender", daemon=True)
        self._sender.start()

    def _check_tls_files(self) -> None:
        for name in ("ca_file", "certfile", "keyfile"):
            value = getattr(self.config.tls, name)
            if value is not None and not Path(value).is_file():
                raise MqttConfigError(f"mqtt.tls.{name} {value}: file not found")

    # ------------------------------------------------------------------ where alerts wait (AlertStore)

    def _open_outbox(self) -> None:
        """Open the outbox file; when that fails (read-only or full file system, a directory that cannot
        be made) start anyway: alerts wait in memory and the sender tries again every reopen_interval_s."""
        try:
            self.outbox = Outbox(self.config.outbox)
        except OutboxError as exc:
            self._reopen_at = time.monotonic() + self.config.outbox.reopen_interval_s
            if self.storage_error is None:
                log.error("%s; starting without it: alerts wait in memory (at most %d, lost on restart) and the "
                          "file is tried again every %g s", exc, self.held.max_alerts,
                          self.config.outbox.reopen_interval_s)
            self.storage_error = str(exc)
            return
        self._reopen_at = float("inf")
        self.wake()
        if self.storage_error is not None:
            log.warning("outbox %s opened; new alerts are stored in it again, %d still wait in memory until "
                        "delivered", self.outbox.path, len(self.held))
            self.storage_error = None
        self._report_other_devices(self.outbox)

    def _report_other_devices(self, outbox: Outbox) -> None:
        others = outbox.other_devices(self.device_id)
        if others:
            listed = ", ".join(f"{n} of device {d!r}" for d, n in sorted(others.items()))
            log.warning("outbox %s holds %s: kept and not published as %r (queued alerts belong to the device "
                        "that raised them; run with that device_id to deliver them)",
                        outbox.path, listed, self.device_id)

    def pending(self, limit: int, exclude: set[int]) -> list[OutboxRow]:
        """The oldest `limit` alerts of this device not in `exclude`: the file's first, then memory's."""
        rows: list[OutboxRow] = []
        if self.outbox is not None and limit > 0:
            try:
                rows = self.outbox.pending(limit, exclude=exclude, device_id=self.device_id)
            except OutboxError as exc:
                self.storage_failed(exc)
        return rows + self.held.pending(limit - len(rows), exclude=exclude)

    def remove(self, row_id: int) -> None:
        """Forget an accepted alert: memory rows have negative ids, file rows positive ones."""
        if row_id < 0:
            self.held.ack(row_id)
        elif self.outbox is None:
            raise OutboxError(self.storage_error or "the outbox is not open")
        else:
            self.outbox.ack(row_id)

    def storage_failed(self, exc: BaseException) -> None:
        """Enter (or stay in) the storage-failed state; the ERROR line is written once per failure."""
        text = str(exc)
        if self.storage_error is None:
            log.error("outbox storage failed: %s; alerts now wait in memory (at most %d, lost on restart) "
                      "until the file can be written again", text, self.held.max_alerts)
        self.storage_error = text

    def _storage_ok(self, outbox: Outbox) -> None:
        if self.storage_error is not None:
            log.warning("outbox storage works again (%s); %d alerts still wait in memory until delivered",
                        outbox.path, len(self.held))
            try:  # the write-ahead log grew while the disk was full: give its space back to alerts
                outbox.checkpoint()
            except OutboxError as exc:
                log.warning("%s (it is tried again on the next write)", exc)
        self.storage_error = None

    def _hold(self, alert: dict, snapshot: bytes | None) -> None:
        dropped = self.held.put(alert, snapshot)
        if dropped is not None:
            log.error("alert %s lost: the outbox file cannot be written and the memory hold is full "
                      "(memory_max_alerts=%d)", dropped.alert_id, self.held.max_alerts)

    # ------------------------------------------------------------------ link events (paho's thread)

    def link_up(self) -> None:
        """Connected: announce "online" (retained) and let a missing 3.1.1 echo be explained again."""
        self.window.connected()
        self.window.publish(self.link, self.topics.status, b"online", qos=STATUS_QOS, retain=True)

    def published(self, mid: int, reason_code: Any) -> None:
        self.window.published(mid, reason_code, self.link.protocol)

    def message(self, topic: str, payload: bytes) -> None:
        self.window.echoed(topic, payload)

    def wake(self) -> None:
        """Wake the sender thread."""
        with self._wake:
            self._wake.notify_all()

    # ------------------------------------------------------------------ sender thread

    def _send_loop(self) -> None:
        while True:
            with self._wake:
                self._wake.wait(timeout=self._next_wait_s())
            if self._stop_sender:
                return
            if self.link.fallback_requested:
                self.window.forget_in_flight()
                self.link.fall_back_to_311()
            try:
                if self.outbox is None and time.monotonic() >= self._reopen_at:
                    self._open_outbox()
                self.window.retry_deletes()
                self.window.expire_echoes()
                if self.link.connected.is_set():
                    self.window.fill(self.link, self.link.connected.is_set)
                    if self._stats_clock.take():
                        self.window.publish(self.link, self.topics.stats, encode_alert(self.stats()), qos=STATS_QOS)
            except Exception:  # keep the sender alive whatever paho or SQLite throws; alerts stay stored
                log.exception("MQTT sender error (alerts remain in the outbox)")

    def _next_wait_s(self) -> float:
        now = time.monotonic()
        due = min(self._stats_clock.due_at, self._reopen_at, self.window.next_due_s())
        return max(0.01, min(due - now, 1.0))

    # ------------------------------------------------------------------ the Publisher protocol

    def publish_alert(self, alert: dict, snapshot_jpeg: bytes | None = None) -> None:
        """Store the alert durably (returns after the SQLite commit) and wake the sender; no network I/O.

        Oversized alerts lose their smallest cracks, oversized snapshots are dropped (both logged). When
        the outbox file cannot be written the alert waits in memory (the storage-failed state).
        """
        if alert.get("device_id") != self.device_id:
            raise ValueError(f"alert {alert.get('alert_id')} was raised by device {alert.get('device_id')!r}, "
                             f"not by this publisher's device {self.device_id!r}")
        try:
            fitted, removed = fit_alert(alert, self.config.max_payload_bytes)
        except ValueError as exc:
            self.oversized_dropped += 1
            log.error("alert not published: %s", exc)
            return
        if removed:
            self.trimmed_alerts += 1
            log.warning("alert %s: %d of %d cracks removed to fit max_payload_bytes=%d",
                        alert.get("alert_id"), removed, len(alert.get("cracks", [])), self.config.max_payload_bytes)
        if snapshot_jpeg is not None and not self.config.publish_snapshots:
            snapshot_jpeg = None
        if snapshot_jpeg is not None and len(snapshot_jpeg) > self.config.max_payload_bytes:
            log.warning("alert %s: snapshot of %d bytes exceeds max_payload_bytes=%d, not published",
                        alert.get("alert_id"), len(snapshot_jpeg), self.config.max_payload_bytes)
            snapshot_jpeg = None
        if snapshot_jpeg is not None:
            previous = fitted.get("snapshot") or {}
            fitted = {**fitted, "snapshot": {**previous, "topic": self.topics.snapshot(str(fitted["alert_id"]))}}
        outbox = self.outbox
        if outbox is None:
            self._hold(fitted, snapshot_jpeg)
        else:
            try:
                outbox.put(fitted, snapshot_jpeg)
            except OutboxError as exc:
                self.storage_failed(exc)
                self._hold(fitted, snapshot_jpeg)
            else:
                self._storage_ok(outbox)
        self.wake()

    def publish_stats(self, stats: dict) -> None:
        """Remember the pipeline's stats and publish them (merged with the publisher's) on the stats topic."""
        with self._stats_lock:
            self._pipeline_stats = dict(stats)
        self._stats_clock.request()
        self.wake()

    def _outbox_figures(self) -> dict[str, Any]:
        if self.outbox is None:
            return dict(OUTBOX_UNKNOWN)
        try:
            return {"outbox_pending": self.outbox.count(self.device_id), "outbox_bytes": self.outbox.size_bytes(),
                    "outbox_dropped": self.outbox.dropped, "outbox_corrupted": self.outbox.corrupted}
        except OutboxError as exc:
            self.storage_failed(exc)
            return dict(OUTBOX_UNKNOWN)

    def stats(self) -> dict[str, Any]:
        """The pipeline's latest stats plus outbox/storage state, connection state and CPU temperature."""
        with self._stats_lock:
            pipeline = dict(self._pipeline_stats)
        return publisher_stats(
            pipeline, device_id=self.device_id, connected=self.connected, protocol=self.protocol,
            outbox=self._outbox_figures(), storage_error=self.storage_error, held=len(self.held),
            lost_storage=self.held.lost, inflight=self.window.in_flight(),
            unconfirmed_resends=self.window.unconfirmed_resends, trimmed=self.trimmed_alerts,
            oversized_dropped=self.oversized_dropped, callback_errors=self.callback_errors,
            cpu_temperature_c=read_cpu_temperature_c(),
        )

    @property
    def protocol(self) -> str:
        """The MQTT version spoken: "5", or "3.1.1" (configured, or after the broker refused 5)."""
        return self.link.protocol

    @property
    def callback_errors(self) -> int:
        """Exceptions caught in paho callbacks (logged; the network loop went on)."""
        return self.link.callback_errors

    @property
    def connected(self) -> bool:
        """Whether the broker accepted the connection and it is still up."""
        return self.link.connected.is_set()

    @property
    def ever_connected(self) -> bool:
        """Whether the broker accepted a connection at least once."""
        return self.link.ever_connected

    def wait_connected(self, timeout_s: float) -> bool:
        """Block until connected or `timeout_s` passed; True when connected."""
        return self.link.connected.wait(timeout_s)

    def wait_outbox(self, timeout_s: float) -> bool:
        """Block until the outbox file is open (it may not be after a storage failure at start)."""
        with self._wake:
            return self._wake.wait_for(lambda: self.outbox is not None, timeout=timeout_s)

    def waiting(self) -> int:
        """This device's alerts not yet accepted by the broker (outbox file + memory hold)."""
        try:
            stored = self.outbox.count(self.device_id) if self.outbox is not None else 0
        except OutboxError:
            stored = 0
        stored -= self.window.accepted_not_deleted()  # accepted already; only their delete is pending
        return max(0, stored) + len(self.held)

    def flush(self, timeout_s: float) -> bool:
        """Block until every alert of this device is accepted or `timeout_s` passed; True when none waits."""
        deadline = time.monotonic() + timeout_s
        while self.waiting() > 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with self._wake:
                self._wake.wait(timeout=min(remaining, 0.2))
        return True

    def backlog(self) -> Backlog:
        """Alerts not yet accepted and where they wait (valid after :meth:`close` too)."""
        if self._final_backlog is not None:
            return self._final_backlog
        return Backlog(self.waiting(), self._where())

    def _where(self) -> str:
        if self.outbox is None:
            return f"memory (outbox {self.config.outbox.path} could not be opened)"
        return f"outbox {self.outbox.path}"

    def close(self, timeout_s: float = 5.0) -> None:
        """Try for `timeout_s` to deliver the backlog, publish "offline" (retained), disconnect.

        Alerts still waiting stay in the outbox and are sent by the next start; alerts held in memory
        are written to the outbox now if it can be written (else they are lost, and logged).
        """
        if self._stop_sender:
            return
        deadline = time.monotonic() + timeout_s
        if self.connected:
            self.flush(max(0.0, deadline - time.monotonic()))
        self.link.closing = True
        self._stop_sender = True
        self.wake()
        self._sender.join(timeout=max(0.1, deadline - time.monotonic()))
        self.link.close(deadline - time.monotonic())
        if self.outbox is None:
            self._open_outbox()  # one last try, so that held alerts survive the restart
        self._store_held()
        self._final_backlog = Backlog(self.waiting(), self._where())
        if self.outbox is not None:
            self.outbox.close()

    def _store_held(self) -> None:
        rows = self.held.take_all()
        lost = 0
        for row in rows:
            try:
                if self.outbox is None:
                    raise OutboxError(self.storage_error or "the outbox is not open")
                self.outbox.put(json.loads(row.payload), row.snapshot)
            except OutboxError:
                lost += 1
        if lost:
            log.error("%d alerts held in memory could not be written to %s at shutdown and are lost",
                      lost, self.config.outbox.path)
            self.held.lost += lost

    def __enter__(self) -> MqttPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
