"""MqttPublisher: crack alerts over MQTT (paho-mqtt 2.x) that survive broker outages and restarts.

The topics and payloads are edge/topics.py's contract (docs/MQTT.md); reaching the broker (URI,
credentials, CONNACK texts) is edge/broker.py; the durable queue is edge/outbox.py.

Delivery: `publish_alert` only writes the alert to the durable outbox and wakes the sender thread, so
the pipeline never waits for the network. The sender keeps at most `max_inflight` alerts in flight, in
outbox order; an alert's row is deleted when the broker's PUBACK arrives (`on_publish`). Within one
process, alerts in flight when the connection drops are re-sent by paho on reconnect (paho keeps its
QoS 1 queue across reconnects); after a restart the whole backlog is re-sent from the outbox. The
session is always clean (clean_start / clean_session), so nothing relies on broker-side session state.
Subscribers de-duplicate on `alert_id`.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from pathlib import Path
from typing import Any

from edge.broker import MqttConfigError, connack_text, paho_logger, parse_broker_uri, read_password
from edge.config import MqttConfig
from edge.health import read_cpu_temperature_c
from edge.outbox import Outbox
from edge.topics import SNAPSHOT_QOS, STATS_QOS, STATUS_QOS, Topics, check_topic_part, encode_alert, fit_alert

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
        self._password = read_password(password, config.password_file) if config.username else None
        self._check_tls_files()
        self.outbox = Outbox(config.outbox)
        self._init_delivery_state()
        self._start_network()

    def _check_tls_files(self) -> None:
        for name in ("ca_file", "certfile", "keyfile"):
            value = getattr(self.config.tls, name)
            if value is not None and not Path(value).is_file():
                raise MqttConfigError(f"mqtt.tls.{name} {value}: file not found")

    def _init_delivery_state(self) -> None:
        """Counters, the mid <-> outbox row maps and the events the threads share."""
        self.protocol = "3.1.1" if self.config.protocol == "3.1.1" else "5"
        self.oversized_dropped = 0
        self.trimmed_alerts = 0
        self._lock = threading.Lock()  # guards the mid maps, inflight set, retry times, stats
        self._wake = threading.Condition(threading.Lock())
        self._mid_to_row: dict[int, int | None] = {}
        self._unclaimed_acks: dict[int, Any] = {}
        self._inflight: set[int] = set()
        self._retry_at: dict[int, float] = {}
        self._connected = threading.Event()
        self._fallback_requested = False
        self._closing = False
        self._stop_sender = False
        self._last_refusal: str | None = None
        self._pipeline_stats: dict[str, Any] = {}
        interval = self.config.stats_interval_s
        self._stats_due = time.monotonic() + interval if interval > 0 else float("inf")
        self._stats_now = False

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
        client.will_set(self.topics.status, "offline", qos=1, retain=True)
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
        if version == mqtt.MQTTv5:
            client.connect_async(self.address.host, self.address.port, keepalive=self.config.keepalive_s, clean_start=True)
        else:
            client.connect_async(self.address.host, self.address.port, keepalive=self.config.keepalive_s)
        return client

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
        log.info("MQTT connected to %s (MQTT %s) as %s", where, self.protocol, self.client_id)
        self._publish_tracked(self.topics.status, b"online", qos=STATUS_QOS, retain=True)
        self._connected.set()
        self._notify()

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        if self._last_refusal != "unreachable":
            log.warning("MQTT broker %s:%s not reachable; retrying with back-off (%.1f-%.0f s), alerts wait in the outbox",
                        self.address.host, self.address.port, self.config.reconnect_min_s, self.config.reconnect_max_s)
        self._last_refusal = "unreachable"

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        if was_connected and not self._closing:
            log.warning("MQTT connection to %s:%s lost (%s); reconnecting with back-off, alerts wait in the outbox",
                        self.address.host, self.address.port, connack_text(reason_code))

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        with self._lock:
            if mid not in self._mid_to_row:
                self._unclaimed_acks[mid] = reason_code  # PUBACK raced ahead of _publish_tracked's bookkeeping
                return
            row_id = self._mid_to_row.pop(mid)
        self._settle(row_id, reason_code)

    def _settle(self, row_id: int | None, reason_code: Any) -> None:
        """A publish finished: delete the alert's row on success; on a refusal keep it and retry later."""
        if row_id is None:
            return
        if getattr(reason_code, "is_failure", False):
            log.error("MQTT broker refused alert row %d on %s: %s (kept in the outbox, retrying in %.0f s)",
                      row_id, self.topics.alert, connack_text(reason_code), self.config.reconnect_max_s)
            with self._lock:
                self._inflight.discard(row_id)
                self._retry_at[row_id] = time.monotonic() + self.config.reconnect_max_s
        else:
            self.outbox.ack(row_id)
            with self._lock:
                self._inflight.discard(row_id)
        self._notify()

    def _publish_tracked(self, topic: str, payload: bytes, qos: int, retain: bool = False,
                         row_id: int | None = None) -> bool:
        """Publish and remember mid -> outbox row; never holds our lock while inside paho (its mutex
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

    # ------------------------------------------------------------------ sender thread

    def _send_loop(self) -> None:
        while True:
            with self._wake:
                self._wake.wait(timeout=self._next_wait_s())
            if self._stop_sender:
                return
            if self._fallback_requested:
                self._fall_back_to_311()
            if self._connected.is_set():
                try:
                    self._fill_window()
                    self._maybe_publish_stats()
                except Exception:  # keep the sender alive whatever paho or SQLite throws; alerts stay stored
                    log.exception("MQTT sender error (alerts remain in the outbox)")

    def _next_wait_s(self) -> float:
        now = time.monotonic()
        wait = min(self._stats_due - now, 1.0)
        with self._lock:
            if self._retry_at:
                wait = min(wait, min(self._retry_at.values()) - now)
        return max(0.01, wait)

    def _fill_window(self) -> None:
        now = time.monotonic()
        with self._lock:
            for row_id in [r for r, t in self._retry_at.items() if t <= now]:
                del self._retry_at[row_id]
            room = self.config.max_inflight - len(self._inflight)
            busy = set(self._inflight) | set(self._retry_at)
        if room <= 0:
            return
        for row in self.outbox.pending(room, exclude=busy):
            if not self._connected.is_set():
                return
            with self._lock:
                self._inflight.add(row.row_id)
            if row.snapshot is not None and self.config.publish_snapshots:
                self._publish_tracked(self.topics.snapshot(row.alert_id), row.snapshot, qos=SNAPSHOT_QOS)
            self._publish_tracked(self.topics.alert, row.payload, qos=self.config.qos, row_id=row.row_id)

    def _fall_back_to_311(self) -> None:
        self._fallback_requested = False
        old = self._client
        old.loop_stop()
        with self._lock:
            self._mid_to_row.clear()
            self._unclaimed_acks.clear()
            self._inflight.clear()
        self.protocol = "3.1.1"
        self._client = self._make_client()
        self._client.loop_start()

    def _maybe_publish_stats(self) -> None:
        now = time.monotonic()
        if not (self._stats_now or now >= self._stats_due):
            return
        self._stats_now = False
        self._stats_due = now + self.config.stats_interval_s if self.config.stats_interval_s > 0 else float("inf")
        self._publish_tracked(self.topics.stats, encode_alert(self.stats()), qos=STATS_QOS)

    # ------------------------------------------------------------------ the Publisher protocol

    def publish_alert(self, alert: dict, snapshot_jpeg: bytes | None = None) -> None:
        """Store the alert durably (returns after the SQLite commit) and wake the sender; no network I/O.

        Oversized alerts lose their smallest cracks, oversized snapshots are dropped (both logged).
        """
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
        self.outbox.put(fitted, snapshot_jpeg)
        self._notify()

    def publish_stats(self, stats: dict) -> None:
        """Remember the pipeline's stats and publish them (merged with the publisher's) on the stats topic."""
        with self._lock:
            self._pipeline_stats = dict(stats)
        self._stats_now = True
        self._notify()

    def stats(self) -> dict[str, Any]:
        """The pipeline's latest stats plus outbox size, dropped count, connection state and CPU temperature."""
        with self._lock:
            merged = dict(self._pipeline_stats)
            inflight = len(self._inflight)
        merged.update({
            "device_id": self.device_id,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "mqtt_connected": self._connected.is_set(),
            "mqtt_protocol": self.protocol,
            "outbox_pending": len(self.outbox),
            "outbox_bytes": self.outbox.size_bytes(),
            "outbox_dropped": self.outbox.dropped,
            "alerts_inflight": inflight,
            "alerts_trimmed": self.trimmed_alerts,
            "alerts_oversized_dropped": self.oversized_dropped,
            "cpu_temperature_c": read_cpu_temperature_c(),
        })
        return merged

    @property
    def connected(self) -> bool:
        """Whether the broker accepted the connection and it is still up."""
        return self._connected.is_set()

    def wait_connected(self, timeout_s: float) -> bool:
        """Block until connected or `timeout_s` passed; True when connected."""
        return self._connected.wait(timeout_s)

    def flush(self, timeout_s: float) -> bool:
        """Block until every stored alert is acknowledged or `timeout_s` passed; True when the outbox is empty."""
        deadline = time.monotonic() + timeout_s
        while len(self.outbox) > 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with self._wake:
                self._wake.wait(timeout=min(remaining, 0.2))
        return True

    def close(self, timeout_s: float = 5.0) -> None:
        """Try for `timeout_s` to deliver the backlog, publish "offline" (retained), disconnect.

        Alerts still unacknowledged stay in the outbox and are sent by the next start.
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
            info = self._client.publish(self.topics.status, "offline", qos=1, retain=True)
            info.wait_for_publish(timeout=max(0.1, deadline - time.monotonic()))
            self._client.disconnect()
        self._client.loop_stop()
        self.outbox.close()

    def __enter__(self) -> MqttPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

