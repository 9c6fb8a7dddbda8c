"""MqttPublisher: crack alerts over MQTT (paho-mqtt 2.x) that survive broker outages, restarts and faults.

The topics and payloads are edge/topics.py's contract (docs/MQTT.md); reaching the broker (URI,
credentials, CONNACK texts) is edge/broker.py; the durable queue is edge/outbox.py.

The rule (docs/MQTT.md "Delivery rule"): an alert leaves the outbox only when the broker accepted it
for the device that raised it.
- `publish_alert` writes the alert to the outbox and wakes the sender thread; the pipeline never
  waits for the network. If the outbox file cannot be written (full disk, damage, read-only) the
  publisher enters the *storage failed* state: one ERROR line, ``outbox_storage_error`` in the stats,
  and alerts wait in a bounded memory hold (``[mqtt.outbox] memory_max_alerts``) until delivered.
- The sender keeps at most `max_inflight` alerts in flight, oldest first, and only this device's rows.
- Accepted means: under MQTT 5 a PUBACK without an error reason code; under MQTT 3.1.1, whose PUBACK
  carries no verdict (mosquitto acknowledges a publish its ACL dropped), the broker's echo of the alert
  on this device's own subscription to its alert topic within `echo_timeout_s`. A refused alert stays
  and is retried every `reconnect_max_s`.
- Every paho callback is guarded: an exception in one is logged and counted, never allowed to stop
  paho's network thread. A failed delete of an accepted alert is retried; it is never re-sent in this
  process (after a restart it may be: subscribers de-duplicate on `alert_id`).
Within one process paho re-sends alerts in flight when the link drops; after a restart the whole
backlog is re-sent from the outbox. The session is always clean.
"""

from __future__ import annotations

import functools
import json
import logging
import ssl
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.broker import (
    PUBLISHER_SETTINGS,
    MqttConfigError,
    connack_text,
    connect_failure_text,
    paho_logger,
    parse_broker_uri,
    read_password,
)
from edge.config import MqttConfig
from edge.health import read_cpu_temperature_c
from edge.outbox import MemoryHold, Outbox, OutboxError, OutboxRow
from edge.publish import Backlog
from edge.topics import SNAPSHOT_QOS, STATS_QOS, STATUS_QOS, Topics, check_topic_part, encode_alert, fit_alert

log = logging.getLogger("edge.mqtt")


def _guarded(method: Callable[..., None]) -> Callable[..., None]:
    """Wrap a paho callback: an exception is logged and counted, never raised into paho's loop."""

    @functools.wraps(method)
    def wrapper(self: MqttPublisher, *args: Any) -> None:
        try:
            method(self, *args)
        except Exception:
            self.callback_errors += 1
            log.exception("MQTT %s failed (the network loop goes on; alerts stay queued)", method.__name__)

    return wrapper


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
        self._password = read_password(password, config.password_file) if config.username else None
        self._check_tls_files()
        self.held = MemoryHold(config.outbox.memory_max_alerts)
        self._init_delivery_state()
        self.outbox: Outbox | None = None
        self._open_outbox()
        self._start_network()

    def _check_tls_files(self) -> None:
        for name in ("ca_file", "certfile", "keyfile"):
            value = getattr(self.config.tls, name)
            if value is not None and not Path(value).is_file():
                raise MqttConfigError(f"mqtt.tls.{name} {value}: file not found")

    def _init_delivery_state(self) -> None:
        """Counters, the mid <-> row maps and the events the threads share."""
        self.protocol = "3.1.1" if self.config.protocol == "3.1.1" else "5"
        self.oversized_dropped = 0
        self.trimmed_alerts = 0
        self.callback_errors = 0
        self.storage_error: str | None = None
        self._lock = threading.Lock()  # guards the maps and sets below and the stats
        self._wake = threading.Condition(threading.Lock())
        self._mid_to_row: dict[int, int | None] = {}
        self._unclaimed_acks: dict[int, Any] = {}
        self._inflight: set[int] = set()
        self._retry_at: dict[int, float] = {}
        self._echo_due: dict[int, float] = {}  # MQTT 3.1.1: acknowledged rows waiting for their echo
        self._row_of_alert: dict[str, int] = {}  # alert_id -> row in flight (to match echoes)
        self._delete_failed: set[int] = set()  # accepted rows whose DELETE failed: never re-sent, retried
        self._connected = threading.Event()
        self._ever_connected = False
        self._fallback_requested = False
        self._closing = False
        self._stop_sender = False
        self._last_refusal: str | None = None
        self._reopen_at = float("inf")
        self._resend: set[int] = set()  # rows whose retry time came: sent after rows never sent (no starving)
        self._last_echo_s = float("-inf")  # MQTT 3.1.1: when the broker last routed one of our alerts back
        self._echo_explained = False  # the missing echo was explained on this connection
        self.unconfirmed_resends = 0
        self._pipeline_stats: dict[str, Any] = {}
        interval = self.config.stats_interval_s
        self._stats_due = time.monotonic() + interval if interval > 0 else float("inf")
        self._stats_now = False
        self._final_backlog: Backlog | None = None

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
        self._notify()
        if self.storage_error is not None:
            log.warning("outbox %s opened; new alerts are stored in it again, %d still wait in memory until "
                        "delivered", self.outbox.path, len(self.held))
            self.storage_error = None
        self._report_other_devices()

    def _report_other_devices(self) -> None:
        assert self.outbox is not None
        others = self.outbox.other_devices(self.device_id)
        if others:
            listed = ", ".join(f"{n} of device {d!r}" for d, n in sorted(others.items()))
            log.warning("outbox %s holds %s: kept and not published as %r (queued alerts belong to the device "
                        "that raised them; run with that device_id to deliver them)",
                        self.outbox.path, listed, self.device_id)

    def _start_network(self) -> None:
        """paho's network thread (connects, reconnects, acks) and our sender thread (outbox -> paho)."""
        self._client = self._make_client()
        self._client.loop_start()
        self._sender = threading.Thread(target=self._send_loop, name="mqtt-sender", daemon=True)
        self._sender.start()

    # ------------------------------------------------------------------ paho client and callbacks

    def _make_client(self) -> Any:
        import paho.mqtt.client as mqtt  # lazy: the edge core runs without paho (LogPublisher)

        version = mqtt.MQTTv5 if self.protocol == "5" else mqtt.MQTTv311
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=version,
            clean_session=None if version == mqtt.MQTTv5 else True,
        )
        client.enable_logger(paho_logger("edge.mqtt.paho"))
        client.reconnect_delay_set(min_delay=self.config.reconnect_min_s, max_delay=self.config.reconnect_max_s)  # type: ignore[arg-type]
        client.max_inflight_messages_set(self.config.max_inflight + 8)  # our window + snapshots/status/stats
        client.max_queued_messages_set(0)
        client.will_set(self.topics.status, "offline", qos=STATUS_QOS, retain=True)
        if self.config.username:
            client.username_pw_set(self.config.username, self._password)
        if self.address.tls:
            ca_file, certfile, keyfile = self.config.tls.ca_file, self.config.tls.certfile, self.config.tls.keyfile
            client.tls_set(
                ca_certs=str(ca_file) if ca_file else None,
                certfile=str(certfile) if certfile else None,
                keyfile=str(keyfile) if keyfile else None,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        client.on_publish = self._on_publish
        client.on_message = self._on_echo
        if version == mqtt.MQTTv5:
            client.connect_async(self.address.host, self.address.port, keepalive=self.config.keepalive_s, clean_start=True)
        else:
            client.connect_async(self.address.host, self.address.port, keepalive=self.config.keepalive_s)
        return client

    @_guarded
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        where = f"{self.address.host}:{self.address.port}"
        if reason_code.is_failure:
            text = connack_text(reason_code)
            if text == "unsupported protocol version" and self.config.protocol == "auto" and self.protocol == "5":
                log.warning("MQTT broker %s refused MQTT 5; falling back to MQTT 3.1.1", where)
                self._fallback_requested = True
                self._notify()
                return
            hint = {
                "bad user name or password": " (check username and password_file)",
                # mosquitto 2 answers a wrong password with "not authorized" so as not to reveal which users exist.
                "not authorized": " (wrong user name or password, or this user / client id is not allowed: "
                                  "check username, password_file and the broker's password file)",
            }.get(text, "")
            if text != self._last_refusal:
                log.error("MQTT broker %s refused the connection: %s%s", where, text, hint)
            self._last_refusal = text
            return
        self._last_refusal = None
        self._ever_connected = True
        log.info("MQTT connected to %s (MQTT %s) as %s", where, self.protocol, self.client_id)
        if self.protocol == "3.1.1":  # the broker's echo is the only proof it accepted an alert
            self._echo_explained = False
            client.subscribe(self.topics.alert, qos=1)
        self._publish_tracked(self.topics.status, b"online", qos=STATUS_QOS, retain=True)
        self._connected.set()
        self._notify()

    @_guarded
    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        # paho calls this inside its `except OSError` around the connect: the exception says why.
        why = connect_failure_text(sys.exc_info()[1], self.address, PUBLISHER_SETTINGS,
                                   ca_file=self.config.tls.ca_file)
        if self._last_refusal != why:
            log.warning("MQTT broker %s:%s: cannot connect: %s; retrying with back-off (%g-%g s), alerts wait in "
                        "the outbox", self.address.host, self.address.port, why, self.config.reconnect_min_s,
                        self.config.reconnect_max_s)
        self._last_refusal = why

    @_guarded
    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        if self._closing:
            return
        if was_connected:
            log.warning("MQTT connection to %s:%s lost (%s); reconnecting with back-off, alerts wait in the outbox",
                        self.address.host, self.address.port, connack_text(reason_code))
        elif self._last_refusal != "closed before connack":
            # TCP connected but the broker hung up before its CONNACK: typically plain MQTT sent to a TLS port.
            hint = ("; if that port is a TLS listener, use mqtts://" if not self.address.tls
                    else "; check that the port is a TLS listener and the CA file matches")
            log.error("MQTT broker %s:%s closed the connection before answering CONNECT%s (retrying with back-off)",
                      self.address.host, self.address.port, hint)
            self._last_refusal = "closed before connack"

    @_guarded
    def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        with self._lock:
            if mid not in self._mid_to_row:
                self._unclaimed_acks[mid] = reason_code  # PUBACK raced ahead of _publish_tracked's bookkeeping
                return
            row_id = self._mid_to_row.pop(mid)
        self._settle(row_id, reason_code)

    @_guarded
    def _on_echo(self, client: Any, userdata: Any, message: Any) -> None:
        """MQTT 3.1.1: the broker routed our own alert back to us, so it accepted it for this device."""
        if message.topic != self.topics.alert:
            return
        try:
            alert_id = str(json.loads(message.payload)["alert_id"])
        except (ValueError, KeyError, TypeError):
            return
        with self._lock:
            row_id = self._row_of_alert.get(alert_id)
            self._last_echo_s = time.monotonic()
        if row_id is not None:
            self._accept(row_id)

    def _settle(self, row_id: int | None, reason_code: Any) -> None:
        """The broker acknowledged a publish: accept the alert, wait for its echo (3.1.1) or retry it later."""
        if row_id is None:
            return
        with self._lock:
            if row_id not in self._inflight:
                return  # already accepted (its echo came first) or no longer tracked (protocol fallback)
        if getattr(reason_code, "is_failure", False):
            log.error("MQTT broker refused alert row %d on %s: %s (kept in the outbox, retrying in %.0f s)",
                      row_id, self.topics.alert, connack_text(reason_code), self.config.reconnect_max_s)
            self._retry_later(row_id)
        elif self.protocol == "3.1.1":
            with self._lock:
                self._inflight.discard(row_id)
                self._echo_due[row_id] = time.monotonic() + self.config.echo_timeout_s
        else:
            self._accept(row_id)
        self._notify()

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
        """The broker accepted the alert of `row_id`: remove it from where it waits (file or memory)."""
        with self._lock:
            if row_id not in self._inflight and row_id not in self._echo_due:
                return
        # Remove the alert before it stops counting as in flight, so the sender never sees it as pending.
        if row_id < 0:
            self.held.ack(row_id)
        else:
            self._delete(row_id)
        with self._lock:
            self._inflight.discard(row_id)
            self._resend.discard(row_id)
            self._echo_due.pop(row_id, None)
            self._forget_alert_of(row_id)
        self._notify()

    def _delete(self, row_id: int) -> None:
        try:
            if self.outbox is None:
                raise OutboxError(self.storage_error or "the outbox is not open")
            self.outbox.ack(row_id)
        except Exception as exc:  # never re-send a delivered alert in this process; retry the delete later
            with self._lock:
                self._delete_failed.add(row_id)
            self._storage_failed(exc)
        else:
            with self._lock:
                self._delete_failed.discard(row_id)

    def _publish_tracked(self, topic: str, payload: bytes, qos: int, retain: bool = False,
                         row_id: int | None = None) -> bool:
        """Publish and remember mid -> row; never holds our lock while inside paho (its mutex
        is held while it calls on_publish). Returns False when paho refused (QoS 0 while disconnected)."""
        import paho.mqtt.client as mqtt

        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS and (qos == 0 or info.rc != mqtt.MQTT_ERR_NO_CONN):
            return False
        with self._lock:
            early = self._unclaimed_acks.pop(info.mid, None)
            if early is None:
                self._mid_to_row[info.mid] = row_id
        if early is not None:
            self._settle(row_id, early)
        return True

    def _notify(self) -> None:
        with self._wake:
            self._wake.notify_all()

    # ------------------------------------------------------------------ storage failure state

    def _storage_failed(self, exc: BaseException) -> None:
        """Enter (or stay in) the storage-failed state; the ERROR line is written once per failure."""
        text = str(exc)
        if self.storage_error is None:
            log.error("outbox storage failed: %s; alerts now wait in memory (at most %d, lost on restart) "
                      "until the file can be written again", text, self.held.max_alerts)
        self.storage_error = text

    def _storage_ok(self) -> None:
        if self.storage_error is not None and self.outbox is not None:
            log.warning("outbox storage works again (%s); %d alerts still wait in memory until delivered",
                        self.outbox.path, len(self.held))
            try:  # the write-ahead log grew while the disk was full: give its space back to alerts
                self.outbox.checkpoint()
            except OutboxError as exc:
                log.warning("%s (it is tried again on the next write)", exc)
        self.storage_error = None

    def _hold(self, alert: dict, snapshot: bytes | None) -> None:
        dropped = self.held.put(alert, snapshot)
        if dropped is not None:
            log.error("alert %s lost: the outbox file cannot be written and the memory hold is full "
                      "(memory_max_alerts=%d)", dropped.alert_id, self.held.max_alerts)

    # ------------------------------------------------------------------ sender thread

    def _send_loop(self) -> None:
        while True:
            with self._wake:
                self._wake.wait(timeout=self._next_wait_s())
            if self._stop_sender:
                return
            if self._fallback_requested:
                self._fall_back_to_311()
            try:
                if self.outbox is None and time.monotonic() >= self._reopen_at:
                    self._open_outbox()
                self._retry_deletes()
                self._expire_echoes()
                if self._connected.is_set():
                    self._fill_window()
                    self._maybe_publish_stats()
            except Exception:  # keep the sender alive whatever paho or SQLite throws; alerts stay stored
                log.exception("MQTT sender error (alerts remain in the outbox)")

    def _next_wait_s(self) -> float:
        now = time.monotonic()
        wait = min(self._stats_due - now, self._reopen_at - now, 1.0)
        with self._lock:
            for times in (self._retry_at, self._echo_due):
                if times:
                    wait = min(wait, min(times.values()) - now)
        return max(0.01, wait)

    def _retry_deletes(self) -> None:
        with self._lock:
            rows = sorted(self._delete_failed)
        for row_id in rows:
            self._delete(row_id)
            if row_id in self._delete_failed:
                return  # still failing: try again on the next wake-up

    def _expire_echoes(self) -> None:
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
        """MQTT 3.1.1: say once per connection why acknowledged alerts stay queued, unless echoes do come
        (then a late one is a slow broker, not a denial)."""
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

    def _fill_window(self) -> None:
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
        rows = self._pending(room, busy | resend)
        if len(rows) < room:
            rows += self._pending(room - len(rows), busy | {r.row_id for r in rows})
        for row in rows:
            if not self._connected.is_set():
                return
            with self._lock:
                self._inflight.add(row.row_id)
                self._resend.discard(row.row_id)
                self._row_of_alert[row.alert_id] = row.row_id
            if row.snapshot is not None and self.config.publish_snapshots:
                self._publish_tracked(self.topics.snapshot(row.alert_id), row.snapshot, qos=SNAPSHOT_QOS)
            self._publish_tracked(self.topics.alert, row.payload, qos=self.config.qos, row_id=row.row_id)

    def _pending(self, limit: int, exclude: set[int]) -> list[OutboxRow]:
        """The oldest `limit` alerts of this device not in `exclude`: the file's first, then memory's."""
        rows: list[OutboxRow] = []
        if self.outbox is not None:
            try:
                rows = self.outbox.pending(limit, exclude=exclude, device_id=self.device_id)
            except OutboxError as exc:
                self._storage_failed(exc)
        return rows + self.held.pending(limit - len(rows), exclude=exclude)

    def _fall_back_to_311(self) -> None:
        self._fallback_requested = False
        old = self._client
        old.loop_stop()
        with self._lock:
            self._mid_to_row.clear()
            self._unclaimed_acks.clear()
            self._inflight.clear()
            self._row_of_alert.clear()
        self.protocol = "3.1.1"
        self._client = self._make_client()
        self._client.loop_start()

    def _maybe_publish_stats(self) -> None:
        now = time.monotonic()
        if not (self._stats_now or now >= self._stats_due):
            return
        self._stats_now = False
        interval = self.config.stats_interval_s
        self._stats_due = now + interval if interval > 0 else float("inf")
        self._publish_tracked(self.topics.stats, encode_alert(self.stats()), qos=STATS_QOS)

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
        if self.outbox is None:
            self._hold(fitted, snapshot_jpeg)
            self._notify()
            return
        try:
            self.outbox.put(fitted, snapshot_jpeg)
        except OutboxError as exc:
            self._storage_failed(exc)
            self._hold(fitted, snapshot_jpeg)
        else:
            self._storage_ok()
        self._notify()

    def publish_stats(self, stats: dict) -> None:
        """Remember the pipeline's stats and publish them (merged with the publisher's) on the stats topic."""
        with self._lock:
            self._pipeline_stats = dict(stats)
        self._stats_now = True
        self._notify()

    def _outbox_figures(self) -> dict[str, Any]:
        unknown = {"outbox_pending": None, "outbox_bytes": None, "outbox_dropped": None, "outbox_corrupted": None}
        if self.outbox is None:
            return unknown
        try:
            return {"outbox_pending": self.outbox.count(self.device_id), "outbox_bytes": self.outbox.size_bytes(),
                    "outbox_dropped": self.outbox.dropped, "outbox_corrupted": self.outbox.corrupted}
        except OutboxError as exc:
            self._storage_failed(exc)
            return unknown

    def stats(self) -> dict[str, Any]:
        """The pipeline's latest stats plus outbox/storage state, connection state and CPU temperature."""
        with self._lock:
            merged = dict(self._pipeline_stats)
            inflight = len(self._inflight) + len(self._echo_due)
        merged.update({
            "device_id": self.device_id,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "mqtt_connected": self._connected.is_set(),
            "mqtt_protocol": self.protocol,
            **self._outbox_figures(),
            "outbox_storage_error": self.storage_error,
            "alerts_held_in_memory": len(self.held),
            "alerts_lost_storage": self.held.lost,
            "alerts_inflight": inflight,
            "alerts_trimmed": self.trimmed_alerts,
            "alerts_oversized_dropped": self.oversized_dropped,
            "alerts_unconfirmed_resends": self.unconfirmed_resends,
            "mqtt_callback_errors": self.callback_errors,
            "cpu_temperature_c": read_cpu_temperature_c(),
        })
        return merged

    @property
    def connected(self) -> bool:
        """Whether the broker accepted the connection and it is still up."""
        return self._connected.is_set()

    @property
    def ever_connected(self) -> bool:
        """Whether the broker accepted a connection at least once."""
        return self._ever_connected

    def wait_connected(self, timeout_s: float) -> bool:
        """Block until connected or `timeout_s` passed; True when connected."""
        return self._connected.wait(timeout_s)

    def waiting(self) -> int:
        """This device's alerts not yet accepted by the broker (outbox file + memory hold)."""
        try:
            stored = self.outbox.count(self.device_id) if self.outbox is not None else 0
        except OutboxError:
            stored = 0
        with self._lock:
            stored -= len(self._delete_failed)  # accepted already; only their delete is pending
        return max(0, stored) + len(self.held)

    def wait_outbox(self, timeout_s: float) -> bool:
        """Block until the outbox file is open (it may not be after a storage failure at start)."""
        with self._wake:
            return self._wake.wait_for(lambda: self.outbox is not None, timeout=timeout_s)

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
        if self._connected.is_set():
            self.flush(max(0.0, deadline - time.monotonic()))
        self._closing = True
        self._stop_sender = True
        self._notify()
        self._sender.join(timeout=max(0.1, deadline - time.monotonic()))
        if self._connected.is_set():
            info = self._client.publish(self.topics.status, "offline", qos=STATUS_QOS, retain=True)
            info.wait_for_publish(timeout=max(0.1, deadline - time.monotonic()))
            self._client.disconnect()
        self._client.loop_stop()
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
