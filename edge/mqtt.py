"""MqttPublisher: crack alerts over MQTT (paho-mqtt 2.x) that survive broker outages and restarts.

Topics (see docs/MQTT.md):
  <prefix>/<device_id>/alert               alert JSON (edge/schemas/alert.schema.json), QoS 1, not retained
  <prefix>/<device_id>/status              "online" / "offline", QoS 1, retained; "offline" is the last will
  <prefix>/<device_id>/stats               health JSON, QoS 0, not retained
  <prefix>/<device_id>/snapshot/<alert_id> JPEG bytes, QoS 1, not retained, sent just before its alert

Delivery: `publish_alert` only writes the alert to the durable outbox (edge/outbox.py) and wakes the
sender thread, so the pipeline never waits for the network. The sender keeps at most `max_inflight`
alerts in flight, in outbox order; an alert's row is deleted when the broker's PUBACK arrives
(`on_publish`). Within one process, alerts in flight when the connection drops are re-sent by paho on
reconnect (paho keeps its QoS 1 queue across reconnects); after a restart the whole backlog is re-sent
from the outbox. The session is always clean (clean_start / clean_session), so nothing relies on
broker-side session state. Subscribers de-duplicate on `alert_id`.
"""

from __future__ import annotations

import json
import logging
import os
import ssl
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edge.outbox import SEVERITY_RANK, Outbox

log = logging.getLogger("edge.mqtt")

PASSWORD_ENV = "AELF_MQTT_PASSWORD"
SNAPSHOT_QOS = 1
STATS_QOS = 0
PROTOCOLS = ("auto", "5", "3.1.1")


class MqttConfigError(ValueError):
    """An MQTT setting is invalid; the message names the setting and what would fix it."""


@dataclass(frozen=True)
class BrokerAddress:
    """Where the broker listens: `tls` is True for mqtts://."""

    host: str
    port: int
    tls: bool


def parse_broker_uri(uri: str) -> BrokerAddress:
    """`mqtt://host[:1883]` or `mqtts://host[:8883]` -> BrokerAddress (no credentials in the URI)."""
    parts = urlsplit(uri)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise MqttConfigError(f"broker URI {uri!r}: scheme must be mqtt:// or mqtts://, got {parts.scheme!r}")
    if not parts.hostname:
        raise MqttConfigError(f"broker URI {uri!r}: no host (expected mqtt://host:port)")
    if parts.username or parts.password:
        raise MqttConfigError(
            f"broker URI {uri!r}: put credentials in username / password_file, not in the URI (URIs get logged)"
        )
    tls = parts.scheme == "mqtts"
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError as exc:
        raise MqttConfigError(f"broker URI {uri!r}: bad port ({exc})") from exc
    return BrokerAddress(parts.hostname, port, tls)


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


def check_topic_part(name: str, value: str) -> str:
    """A device id / prefix must be non-empty and free of MQTT wildcards; the prefix may contain '/'."""
    if not value or any(c in value for c in "#+\0") or (name == "device_id" and "/" in value):
        raise MqttConfigError(
            f"{name} {value!r} is not usable in an MQTT topic: it must be non-empty without '#', '+'"
            + (" or '/'" if name == "device_id" else "")
        )
    return value


def encode_alert(alert: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON, the bytes that go on the alert topic."""
    return json.dumps(alert, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def fit_alert(alert: dict, max_payload_bytes: int) -> tuple[dict, int]:
    """Trim the cracks list so the JSON fits `max_payload_bytes`; return (alert, cracks removed).

    Keeps the most severe, then widest, then longest cracks (so `severity` stays the maximum of the
    kept cracks, as the schema says) and at least one. Raises ValueError when even one crack is too big.
    """
    if len(encode_alert(alert)) <= max_payload_bytes:
        return alert, 0
    cracks = sorted(
        alert.get("cracks", []),
        key=lambda c: (SEVERITY_RANK.get(c.get("severity"), 0), c.get("max_width_px", 0), c.get("length_px", 0)),
        reverse=True,
    )
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


def read_cpu_temperature_c(thermal_root: Path = Path("/sys/class/thermal")) -> float | None:
    """Highest readable thermal zone temperature in °C (Linux sysfs, millidegrees), None where unreadable."""
    temps = []
    for zone in sorted(thermal_root.glob("thermal_zone*")):
        try:
            temps.append(int((zone / "temp").read_text().strip()) / 1000.0)
        except (OSError, ValueError):
            continue
    return max(temps) if temps else None


def read_password(password: str | None, password_file: str | Path | None) -> str | None:
    """The password: given directly, else the first line of `password_file`, else $AELF_MQTT_PASSWORD."""
    if password is not None:
        return password
    if password_file is not None:
        path = Path(password_file)
        try:
            return path.read_text(encoding="utf-8").splitlines()[0] if path.stat().st_size else ""
        except OSError as exc:
            raise MqttConfigError(f"password_file {path}: cannot read it ({exc.strerror})") from exc
    return os.environ.get(PASSWORD_ENV)


def connack_text(reason_code: Any) -> str:
    """Readable text for a CONNACK reason code (paho ReasonCode or a 3.1.1 integer)."""
    names = {1: "unacceptable protocol version", 2: "client identifier rejected", 3: "server unavailable",
             4: "bad user name or password", 5: "not authorized"}
    if isinstance(reason_code, int):
        return names.get(reason_code, f"refused (code {reason_code})")
    text = str(getattr(reason_code, "getName", lambda: reason_code)())
    return text.lower()


class _QuietReconnects(logging.Filter):
    """paho logs every failed reconnect attempt at ERROR; we log one clear line per outage instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and "not connected" in record.getMessage():
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            # demoted after the logger's level check: drop it unless DEBUG is enabled
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


def _paho_logger(name: str) -> logging.Logger:
    logger = logging.getLogger(name)
    if not any(isinstance(f, _QuietReconnects) for f in logger.filters):
        logger.addFilter(_QuietReconnects())
    return logger


class MqttPublisher:
    """The MQTT implementation of the Publisher protocol (edge/publish.py), backed by a durable outbox."""

    def __init__(
        self,
        device_id: str,
        broker_uri: str = "mqtt://localhost:1883",
        *,
        topic_prefix: str = "crack",
        client_id: str | None = None,
        username: str | None = None,
        password: str | None = None,
        password_file: str | Path | None = None,
        ca_file: str | Path | None = None,
        certfile: str | Path | None = None,
        keyfile: str | Path | None = None,
        allow_insecure_credentials: bool = False,
        keepalive_s: int = 30,
        qos: int = 1,
        outbox_path: str | Path = "outbox.sqlite3",
        outbox_max_alerts: int = 10_000,
        outbox_max_bytes: int = 256 * 1024 * 1024,
        outbox_synchronous: str = "NORMAL",
        stats_interval_s: float = 30.0,
        publish_snapshots: bool = True,
        max_payload_bytes: int = 256 * 1024,
        max_inflight: int = 20,
        reconnect_min_s: float = 0.5,
        reconnect_max_s: float = 30.0,
        protocol: str = "auto",
    ) -> None:
        """Validate the settings, open the outbox and start connecting in the background.

        device_id: this device's id, the second topic level (no '/', '#', '+').
        broker_uri: mqtt://host:port (plain TCP, default port 1883) or mqtts://host:port (TLS, 8883).
        topic_prefix: first topic level(s), default "crack".
        client_id: MQTT client id, default "aelf-<device_id>" (two processes must not share one).
        username / password / password_file: credentials; the password comes from `password`, else the
            first line of `password_file`, else $AELF_MQTT_PASSWORD. Never logged.
        ca_file / certfile / keyfile: TLS trust anchors (default: the system store) and an optional
            client certificate + key (PEM). Only with mqtts://.
        allow_insecure_credentials: send username/password over plain mqtt:// (refused by default).
        keepalive_s: MQTT keep-alive in seconds; the broker publishes "offline" after ~1.5x this.
        qos: QoS of alerts, 1 (at least once; the outbox relies on PUBACK) or 2.
        outbox_path / outbox_max_alerts / outbox_max_bytes / outbox_synchronous: see edge/outbox.py.
        stats_interval_s: publish stats at least this often in seconds (0 disables the timer).
        publish_snapshots: publish JPEG snapshots given to publish_alert on the snapshot topic.
        max_payload_bytes: largest alert JSON / snapshot in bytes; bigger alerts lose their smallest
            cracks, bigger snapshots are not sent (both logged).
        max_inflight: alerts published but not yet acknowledged, at most.
        reconnect_min_s / reconnect_max_s: exponential back-off between reconnect attempts, seconds.
        protocol: "auto" (MQTT 5, falling back to 3.1.1 when the broker refuses 5), "5" or "3.1.1".
        """
        self.device_id = check_topic_part("device_id", device_id)
        self.topics = Topics(check_topic_part("topic_prefix", topic_prefix.strip("/")), device_id)
        self.address = parse_broker_uri(broker_uri)
        if protocol not in PROTOCOLS:
            raise MqttConfigError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
        if qos not in (1, 2):
            raise MqttConfigError(f"qos for alerts must be 1 or 2 (the outbox deletes on acknowledgement), got {qos}")
        if max_inflight < 1:
            raise MqttConfigError(f"max_inflight must be >= 1, got {max_inflight}")
        self._password = read_password(password, password_file) if username else None
        if username and not self.address.tls and not allow_insecure_credentials:
            raise MqttConfigError(
                f"refusing to send MQTT credentials (user {username!r}) over plain TCP to "
                f"{self.address.host}:{self.address.port}: use mqtts:// with a CA file, or set "
                "allow_insecure_credentials=true on a trusted network"
            )
        for name, value in (("ca_file", ca_file), ("certfile", certfile), ("keyfile", keyfile)):
            if value is not None and not Path(value).is_file():
                raise MqttConfigError(f"{name} {value}: file not found")
            if value is not None and not self.address.tls:
                raise MqttConfigError(f"{name} is set but broker_uri {broker_uri!r} is not mqtts://")
        if keyfile and not certfile:
            raise MqttConfigError("keyfile is set without certfile (the client certificate)")
        self.username = username
        self.client_id = client_id or f"aelf-{device_id}"
        self.keepalive_s = int(keepalive_s)
        self.qos = qos
        self.stats_interval_s = stats_interval_s
        self.publish_snapshots = publish_snapshots
        self.max_payload_bytes = max_payload_bytes
        self.max_inflight = max_inflight
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self._tls_files = (ca_file, certfile, keyfile)
        self._protocol_setting = protocol
        self.protocol = "3.1.1" if protocol == "3.1.1" else "5"
        self.outbox = Outbox(
            outbox_path, max_alerts=outbox_max_alerts, max_bytes=outbox_max_bytes, synchronous=outbox_synchronous
        )
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
        self._stats_due = time.monotonic() + stats_interval_s if stats_interval_s > 0 else float("inf")
        self._stats_now = False
        self._client = self._make_client()
        self._client.loop_start()
        self._sender = threading.Thread(target=self._send_loop, name="mqtt-sender", daemon=True)
        self._sender.start()

    @classmethod
    def from_config(cls, mqtt_cfg: Any, device_id: str) -> MqttPublisher:
        """Build from edge/config.py's `MqttConfig` section (pydantic) and the top-level device id."""

        def get(*names: str, default: Any = None) -> Any:
            for name in names:
                obj = mqtt_cfg
                for part in name.split("."):
                    obj = getattr(obj, part, None)
                    if obj is None:
                        break
                if obj is not None:
                    return obj
            return default

        kwargs: dict[str, Any] = {
            "topic_prefix": get("topic_prefix", default="crack"),
            "client_id": get("client_id"),
            "username": get("username"),
            "password_file": get("password_file"),
            "ca_file": get("tls.ca_file", "ca_file"),
            "certfile": get("tls.certfile", "certfile"),
            "keyfile": get("tls.keyfile", "keyfile"),
            "allow_insecure_credentials": bool(get("allow_insecure_credentials", default=False)),
        }
        optional = ("keepalive_s", "qos", "outbox_path", "outbox_max_alerts", "outbox_max_bytes",
                    "outbox_synchronous", "stats_interval_s", "publish_snapshots", "max_payload_bytes",
                    "max_inflight", "reconnect_min_s", "reconnect_max_s", "protocol")
        kwargs.update({name: get(name) for name in optional if get(name) is not None})
        broker = get("broker_uri", "broker", "uri", default="mqtt://localhost:1883")
        return cls(device_id, str(broker), **kwargs)

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
        client.enable_logger(_paho_logger("edge.mqtt.paho"))
        client.reconnect_delay_set(min_delay=self.reconnect_min_s, max_delay=self.reconnect_max_s)  # type: ignore[arg-type]
        client.max_inflight_messages_set(self.max_inflight + 8)  # our window + snapshots/status/stats
        client.max_queued_messages_set(0)
        client.will_set(self.topics.status, "offline", qos=1, retain=True)
        if self.username:
            client.username_pw_set(self.username, self._password)
        if self.address.tls:
            ca_file, certfile, keyfile = self._tls_files
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
            client.connect_async(self.address.host, self.address.port, keepalive=self.keepalive_s, clean_start=True)
        else:
            client.connect_async(self.address.host, self.address.port, keepalive=self.keepalive_s)
        return client

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        where = f"{self.address.host}:{self.address.port}"
        if reason_code.is_failure:
            text = connack_text(reason_code)
            if text == "unsupported protocol version" and self._protocol_setting == "auto" and self.protocol == "5":
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
        self._publish_tracked(self.topics.status, b"online", qos=1, retain=True)
        self._connected.set()
        self._notify()

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        if self._last_refusal != "unreachable":
            log.warning("MQTT broker %s:%s not reachable; retrying with back-off (%.1f-%.0f s), alerts wait in the outbox",
                        self.address.host, self.address.port, self.reconnect_min_s, self.reconnect_max_s)
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
                      row_id, self.topics.alert, connack_text(reason_code), self.reconnect_max_s)
            with self._lock:
                self._inflight.discard(row_id)
                self._retry_at[row_id] = time.monotonic() + self.reconnect_max_s
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
            room = self.max_inflight - len(self._inflight)
            busy = set(self._inflight) | set(self._retry_at)
        if room <= 0:
            return
        for row in self.outbox.pending(room, exclude=busy):
            if not self._connected.is_set():
                return
            with self._lock:
                self._inflight.add(row.row_id)
            if row.snapshot is not None and self.publish_snapshots:
                self._publish_tracked(self.topics.snapshot(row.alert_id), row.snapshot, qos=SNAPSHOT_QOS)
            self._publish_tracked(self.topics.alert, row.payload, qos=self.qos, row_id=row.row_id)

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
        self._stats_due = now + self.stats_interval_s if self.stats_interval_s > 0 else float("inf")
        self._publish_tracked(self.topics.stats, encode_alert(self.stats()), qos=STATS_QOS)

    # ------------------------------------------------------------------ the Publisher protocol

    def publish_alert(self, alert: dict, snapshot_jpeg: bytes | None = None) -> None:
        """Store the alert durably (returns after the SQLite commit) and wake the sender; no network I/O.

        Oversized alerts lose their smallest cracks, oversized snapshots are dropped (both logged).
        """
        try:
            fitted, removed = fit_alert(alert, self.max_payload_bytes)
        except ValueError as exc:
            self.oversized_dropped += 1
            log.error("alert not published: %s", exc)
            return
        if removed:
            self.trimmed_alerts += 1
            log.warning("alert %s: %d of %d cracks removed to fit max_payload_bytes=%d",
                        alert.get("alert_id"), removed, len(alert.get("cracks", [])), self.max_payload_bytes)
        if snapshot_jpeg is not None and not self.publish_snapshots:
            snapshot_jpeg = None
        if snapshot_jpeg is not None and len(snapshot_jpeg) > self.max_payload_bytes:
            log.warning("alert %s: snapshot of %d bytes exceeds max_payload_bytes=%d, not published",
                        alert.get("alert_id"), len(snapshot_jpeg), self.max_payload_bytes)
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


def new_alert_id() -> str:
    """A fresh alert id (UUID4 hex), the form the schema expects."""
    return uuid.uuid4().hex
