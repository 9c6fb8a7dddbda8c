"""Subscriber for crack alerts: validate, de-duplicate by alert_id, print, append to JSONL or CSV.

    python -m edge.subscribe --broker mqtt://localhost:1883 --device '+' --out alerts.jsonl

`AlertSink` is the pure-ish core (bytes in, decision + file row out) used by tests; `Subscriber` wraps a
paho client around it; `main` is the thin CLI. A malformed, invalid, hostile (deeply nested, huge
numbers, bad UTF-8, lone surrogates, binary) or oversized message is reported with its reason and
skipped; an exception in a paho callback is logged and counted, never allowed to stop paho's network
thread: the subscriber never goes deaf on a bad message.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edge.broker import (
    SUBSCRIBER_SETTINGS,
    connack_text,
    connect_failure_text,
    guarded,
    paho_logger,
    read_password,
)
from edge.mqtt_names import MqttConfigError, parse_broker_uri
from edge.topics import check_topic_part

log = logging.getLogger("edge.subscribe")

SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "alert.schema.json"
EXIT_NEVER_CONNECTED = 3
RECONNECT_MAX_S = 5.0  # largest back-off between connection attempts, seconds
NOT_CONNECTED_WARNING_S = 5.0  # say so when the broker has not answered by then (a wrong port is silent)
_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
CSV_COLUMNS = ("received_at", "alert_id", "device_id", "sequence", "created_at", "capture_time", "severity",
               "n_cracks", "max_width_px", "max_width_mm", "max_length_px", "coverage", "source", "frame_index")


@dataclass(frozen=True)
class SinkResult:
    """What happened to one message: kind is "new", "duplicate" or "invalid" (then `reason` says why)."""

    kind: str
    alert: dict | None = None
    reason: str = ""


def alert_summary(alert: dict) -> dict[str, Any]:
    """The CSV row / printed line fields of an alert (max width and length over its cracks)."""
    cracks = alert.get("cracks") or []
    widths_mm = [c["max_width_mm"] for c in cracks if c.get("max_width_mm") is not None]
    return {
        "alert_id": alert["alert_id"], "device_id": alert["device_id"], "sequence": alert["sequence"],
        "created_at": alert["created_at"], "capture_time": alert["capture_time"], "severity": alert["severity"],
        "n_cracks": len(cracks),
        "max_width_px": max((c["max_width_px"] for c in cracks), default=0.0),
        "max_width_mm": max(widths_mm) if widths_mm else None,
        "max_length_px": max((c["length_px"] for c in cracks), default=0.0),
        "coverage": alert["coverage"], "source": alert["source"], "frame_index": alert["frame_index"],
    }


def format_alert_line(alert: dict) -> str:
    """One readable line: capture time, device, severity, number of cracks, max width, id."""
    s = alert_summary(alert)
    width = f"{s['max_width_px']:.1f} px" + (f" ({s['max_width_mm']:.1f} mm)" if s["max_width_mm"] is not None else "")
    return (f"{s['capture_time']}  {s['device_id']:<16} {s['severity'].upper():<6} "
            f"{s['n_cracks']:>3} crack{'s' if s['n_cracks'] != 1 else ' '}  max width {width}  id {s['alert_id']}")


MAX_JSON_DEPTH = 32  # an alert nests 3 levels; deeper input is hostile (json recursion would crash)


def _nesting_depth(text: str) -> int:
    """Deepest bracket nesting of a JSON text, outside strings (a linear scan: no recursion)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def parse_json_strictly(payload: bytes) -> Any:
    """Decode an MQTT payload as strict JSON, or ValueError naming why it is not.

    Strict: UTF-8 only, at most MAX_JSON_DEPTH levels deep, finite numbers only (no NaN/Infinity,
    no float overflow, no integer of more digits than Python converts), and no lone surrogate
    escapes (they cannot be written back as UTF-8).
    """
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not JSON (not UTF-8 text: {exc})") from exc
    depth = _nesting_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"JSON nested {depth} levels deep (more than {MAX_JSON_DEPTH})")
    try:
        value = json.loads(text, parse_float=_finite_float, parse_constant=_no_constant)
    except RecursionError as exc:
        raise ValueError("JSON nested too deeply") from exc
    except ValueError as exc:  # JSONDecodeError, out-of-range numbers, over-long integers
        raise ValueError(f"not JSON: {exc}") from exc
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"a string holds a lone surrogate ({exc.reason}): not valid Unicode text") from exc
    return value


_guarded = guarded(log, "the message is skipped; still listening")


class AlertSink:
    """Validates alert messages against the schema, drops duplicates, appends new alerts to `out_path`.

    `out_path` ending in .csv gets one summary row per alert (CSV_COLUMNS); any other name gets JSON lines
    (the alert itself). Ids already in an existing `out_path` count as seen, so a restarted subscriber
    does not write an alert twice. Thread-safe; `wait_for(predicate, timeout_s)` lets tests wait on it.
    """

    def __init__(self, out_path: str | Path | None = None, *, max_message_bytes: int = 1024 * 1024,
                 schema_path: Path = SCHEMA_PATH, snapshot_dir: str | Path | None = None) -> None:
        from edge.alerts import alert_validator  # jsonschema, lazily: only the subscriber needs it here

        self._validator = alert_validator(schema_path)
        self.max_message_bytes = max_message_bytes
        self.out_path = Path(out_path) if out_path else None
        self.csv = self.out_path is not None and self.out_path.suffix.lower() == ".csv"
        self.seen: set[str] = set()
        self.alerts: list[dict] = []
        self.duplicates = 0
        self.invalid: list[str] = []
        self.device_status: dict[str, str] = {}
        self.snapshot_dir = Path(snapshot_dir) if snapshot_dir else None
        self.snapshots_saved = 0
        if self.snapshot_dir is not None:
            self.snapshot_dir.mkdir(parents=True, exist_ok=True)
        self._cond = threading.Condition()
        if self.out_path is not None and self.out_path.exists():
            self.seen |= self._ids_in_file(self.out_path)

    def _ids_in_file(self, path: Path) -> set[str]:
        ids: set[str] = set()
        with open(path, newline="", encoding="utf-8") as fh:
            if self.csv:
                ids = {row["alert_id"] for row in csv.DictReader(fh) if row.get("alert_id")}
            else:
                for n, line in enumerate(fh, 1):
                    try:
                        ids.add(json.loads(line)["alert_id"])
                    except (ValueError, KeyError, TypeError):
                        log.warning("%s line %d: not an alert JSON line, ignored for de-duplication", path, n)
        return ids

    def validate(self, topic: str, payload: bytes) -> dict:
        """The alert in `payload`, or ValueError naming why it is not a valid alert for `topic`."""
        if len(payload) > self.max_message_bytes:
            raise ValueError(f"oversized: {len(payload)} bytes > limit {self.max_message_bytes}")
        alert = parse_json_strictly(payload)
        error = next(iter(sorted(self._validator.iter_errors(alert), key=lambda e: list(e.path))), None)
        if error is not None:
            where = "/".join(str(p) for p in error.path) or "(top level)"
            raise ValueError(f"schema: {where}: {error.message[:200]}")
        parts = topic.split("/")
        if len(parts) >= 3 and parts[-2] != alert["device_id"]:
            raise ValueError(f"device_id {alert['device_id']!r} does not match the topic's device {parts[-2]!r}")
        return alert

    def handle_alert(self, topic: str, payload: bytes) -> SinkResult:
        """Validate, de-duplicate and store one alert message."""
        try:
            alert = self.validate(topic, payload)
        except (ValueError, RecursionError) as exc:
            with self._cond:
                self.invalid.append(str(exc))
                self._cond.notify_all()
            return SinkResult("invalid", reason=str(exc))
        with self._cond:
            if alert["alert_id"] in self.seen:
                self.duplicates += 1
                self._cond.notify_all()
                return SinkResult("duplicate", alert)
            alert = self._with_local_snapshot(alert)
            self._write(alert)
            self.seen.add(alert["alert_id"])
            self.alerts.append(alert)
            self._cond.notify_all()
        return SinkResult("new", alert)

    def snapshot_file(self, alert_id: str) -> Path:
        return self.snapshot_dir / f"{alert_id}.jpg"

    def handle_snapshot(self, topic: str, payload: bytes) -> Path:
        """Save a snapshot message (``<prefix>/<device>/snapshot/<alert_id>``) as ``<snapshot_dir>/<alert_id>.jpg``,
        written whole (temporary file, then renamed); ValueError naming why it was not saved."""
        alert_id = topic.rsplit("/", 1)[-1]
        if not _SAFE_ID.match(alert_id):
            raise ValueError(f"snapshot topic {topic!r}: the last level is not an alert id")
        if len(payload) > self.max_message_bytes:
            raise ValueError(f"snapshot {alert_id}: {len(payload)} bytes > limit {self.max_message_bytes}")
        if not payload.startswith(b"\xff\xd8"):
            raise ValueError(f"snapshot {alert_id}: not a JPEG")
        path = self.snapshot_file(alert_id)
        tmp = path.with_name(path.name + ".part")
        tmp.write_bytes(payload)
        os.replace(tmp, path)
        with self._cond:
            self.snapshots_saved += 1
            self._cond.notify_all()
        return path

    def _with_local_snapshot(self, alert: dict) -> dict:
        """The alert with ``snapshot.path`` pointing at where this subscriber saves its JPEG, relative to the
        output file's folder (the report resolves it from there), when the device published one."""
        snapshot = alert.get("snapshot") or {}
        if self.snapshot_dir is None or not snapshot.get("topic"):
            return alert
        where = self.snapshot_file(alert["alert_id"]).resolve()
        base = (self.out_path.resolve().parent if self.out_path is not None else Path.cwd())
        try:
            path = str(where.relative_to(base))
        except ValueError:
            path = os.path.relpath(where, base) if where.anchor == base.anchor else str(where)
        return {**alert, "snapshot": {**snapshot, "path": path}}

    def handle_status(self, topic: str, payload: bytes) -> tuple[str, str] | None:
        """Record a device's status; return (device, state) when it changed, else None."""
        device = topic.split("/")[-2] if topic.count("/") >= 2 else topic
        state = payload.decode("utf-8", errors="replace").strip() or "(cleared)"
        with self._cond:
            changed = self.device_status.get(device) != state
            self.device_status[device] = state
            self._cond.notify_all()
        return (device, state) if changed else None

    def _write(self, alert: dict) -> None:
        if self.out_path is None:
            return
        new_file = not self.out_path.exists() or self.out_path.stat().st_size == 0
        with open(self.out_path, "a", newline="", encoding="utf-8") as fh:
            if self.csv:
                writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
                if new_file:
                    writer.writeheader()
                received = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                writer.writerow({"received_at": received, **alert_summary(alert)})
            else:
                fh.write(json.dumps(alert, ensure_ascii=False) + "\n")

    def wait_for(self, predicate: Callable[[AlertSink], bool], timeout_s: float) -> bool:
        """Block until `predicate(self)` is true or `timeout_s` passed; returns the predicate's value."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout=timeout_s)


class Subscriber:
    """A paho client subscribed to <prefix>/<device>/alert and /status that feeds an AlertSink.

    For no loss across broker restarts give a fixed `client_id` and `session_expiry_s` > 0: the broker
    then keeps the subscription and queues QoS 1 alerts while this subscriber is away.
    """

    def __init__(self, broker_uri: str, sink: AlertSink, *, prefix: str = "crack", device: str = "+",
                 client_id: str = "", session_expiry_s: int = 0, username: str | None = None,
                 password: str | None = None, ca_file: str | Path | None = None,
                 certfile: str | Path | None = None, keyfile: str | Path | None = None,
                 allow_insecure_credentials: bool = False, keepalive_s: int = 30,
                 on_line: Callable[[str], None] = print) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        self.address = parse_broker_uri(broker_uri)
        if device != "+":
            check_topic_part("device", device)
        if username and not self.address.tls and not allow_insecure_credentials:
            raise MqttConfigError(f"refusing to send credentials over plain TCP to {broker_uri}: use mqtts:// "
                                  "or --allow-insecure-credentials")
        self.sink = sink
        self.on_line = on_line
        prefix = prefix.strip("/")
        self.alert_topic = f"{prefix}/{device}/alert"
        self.status_topic = f"{prefix}/{device}/status"
        self.snapshot_topic = f"{prefix}/{device}/snapshot/+" if sink.snapshot_dir is not None else None
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.ever_connected = False
        self.callback_errors = 0
        self.last_failure: str | None = None
        self._stopping = False
        self._answered = False  # the broker answered the last CONNECT (accepted or refused)
        self._ca_file = ca_file
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self._client.enable_logger(paho_logger("edge.subscribe.paho"))
        self._client.max_inflight_messages_set(100)
        if username:
            self._client.username_pw_set(username, password)
        if self.address.tls:
            self._client.tls_set(ca_certs=str(ca_file) if ca_file else None,
                                 certfile=str(certfile) if certfile else None, keyfile=str(keyfile) if keyfile else None)
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.message_callback_add(self.alert_topic, self._on_alert)
        self._client.message_callback_add(self.status_topic, self._on_status)
        if self.snapshot_topic:
            self._client.message_callback_add(self.snapshot_topic, self._on_snapshot)
        self._client.on_message = lambda c, u, m: None
        self._client.on_subscribe = self._on_subscribe
        props = None
        if session_expiry_s > 0:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = int(session_expiry_s)
        self._connect_args = dict(keepalive=keepalive_s, clean_start=session_expiry_s <= 0, properties=props)

    def start(self) -> Subscriber:
        """Connect in the background (retrying with back-off) and start the network thread."""
        self._client.reconnect_delay_set(0.2, RECONNECT_MAX_S)  # type: ignore[arg-type]
        self._client.connect_async(self.address.host, self.address.port, **self._connect_args)
        self._client.loop_start()
        return self

    def stop(self) -> None:
        """Disconnect and stop the network thread."""
        self._stopping = True
        self._client.disconnect()
        self._client.loop_stop()

    @_guarded
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self._answered = True
        if reason_code.is_failure:
            self._failed(f"the broker refused the subscriber: {connack_text(reason_code)}")
            return
        topics = [(self.alert_topic, 1), (self.status_topic, 1)]
        if self.snapshot_topic:
            topics.append((self.snapshot_topic, 1))
        client.subscribe(topics)
        if self.last_failure is not None:
            log.warning("connected to broker %s:%s", self.address.host, self.address.port)
        self.last_failure = None
        self.ever_connected = True
        self.connected.set()

    def _failed(self, why: str) -> None:
        """Say once per cause why the subscriber cannot connect (paho keeps retrying, every <= 5 s)."""
        if why != self.last_failure:
            log.error("cannot connect to broker %s:%s: %s; retrying every <= %g s", self.address.host,
                      self.address.port, why, RECONNECT_MAX_S)
        self.last_failure = why

    @_guarded
    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        # paho calls this inside its `except OSError` around the connect: the exception says why.
        self._failed(connect_failure_text(sys.exc_info()[1], self.address, SUBSCRIBER_SETTINGS, ca_file=self._ca_file))

    @_guarded
    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        answered, self._answered = self._answered, False
        if not answered and not self._stopping:
            hint = ("if that port is a TLS listener, use mqtts://" if not self.address.tls
                    else "check that the port is a TLS listener and the CA file matches")
            self._failed(f"the broker closed the connection before answering CONNECT ({hint})")
        self.connected.clear()

    @_guarded
    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        refused = [str(rc) for rc in reason_codes if rc.is_failure]
        if refused:
            log.error("broker refused the subscription to %s / %s: %s", self.alert_topic, self.status_topic,
                      ", ".join(refused))
            return
        log.info("subscribed to %s and %s", self.alert_topic, self.status_topic)
        self.subscribed.set()

    @_guarded
    def _on_alert(self, client: Any, userdata: Any, message: Any) -> None:
        result = self.sink.handle_alert(message.topic, message.payload)
        if result.kind == "new":
            self.on_line(format_alert_line(result.alert))
        elif result.kind == "invalid":
            log.warning("bad message on %s skipped: %s", message.topic, result.reason)

    @_guarded
    def _on_snapshot(self, client: Any, userdata: Any, message: Any) -> None:
        try:
            self.sink.handle_snapshot(message.topic, message.payload)
        except (ValueError, OSError) as exc:
            log.warning("snapshot on %s not saved: %s", message.topic, exc)

    @_guarded
    def _on_status(self, client: Any, userdata: Any, message: Any) -> None:
        change = self.sink.handle_status(message.topic, message.payload)
        if change:
            self.on_line(f"{datetime.now(timezone.utc):%Y-%m-%dT%H:%M:%SZ}  {change[0]:<16} is {change[1]}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m edge.subscribe",
        description="Subscribe to crack alerts: validate against the schema, de-duplicate by alert_id, print one "
                    "line per alert, optionally append them to a JSONL or CSV file; shows device online/offline.",
        epilog="Exit codes: 0 ok, 1 --count not reached before --timeout-s, 2 bad arguments, "
               "3 never connected to the broker.")
    p.add_argument("--broker", default="mqtt://localhost:1883",
                   help="broker URI, mqtt://host[:port] or mqtts://host[:port] for TLS (default: %(default)s)")
    p.add_argument("--prefix", default="crack", help="topic prefix (default: %(default)s)")
    p.add_argument("--device", default="+", help="device id to follow, '+' for all (default: %(default)s)")
    p.add_argument("--out", type=Path, default=None,
                   help="append new alerts here: *.csv = one summary row each, otherwise JSON lines; ids already in "
                        "the file are not written again (default: none, print only)")
    p.add_argument("--snapshots", type=Path, default=None, metavar="DIR",
                   help="save the overlay JPEGs the devices publish as DIR/<alert_id>.jpg, and point each written "
                        "alert's snapshot.path there (relative to --out's folder), so python -m edge.report finds "
                        "them (default: none, not saved)")
    p.add_argument("--username", default=None, help="user name (default: none, anonymous)")
    p.add_argument("--password-file", type=Path, default=None,
                   help="file whose first line is the password (default: $AELF_MQTT_PASSWORD if set)")
    p.add_argument("--ca-file", type=Path, default=None,
                   help="CA certificate (PEM) to verify an mqtts:// broker (default: the system store)")
    p.add_argument("--certfile", type=Path, default=None,
                   help="client certificate (PEM) for brokers that require one (default: none)")
    p.add_argument("--keyfile", type=Path, default=None,
                   help="private key (PEM) of --certfile (default: none, or inside --certfile)")
    p.add_argument("--allow-insecure-credentials", action="store_true",
                   help="allow --username over plain mqtt:// (default: refused)")
    p.add_argument("--client-id", default="",
                   help="fixed MQTT client id; with --session-expiry-s the broker queues alerts while away "
                        "(default: random, no queueing)")
    p.add_argument("--session-expiry-s", type=int, default=0,
                   help="keep the session this many seconds after a disconnect (default: %(default)s = clean session)")
    p.add_argument("--max-message-bytes", type=int, default=1024 * 1024,
                   help="alert messages larger than this are reported and skipped, bytes (default: %(default)s)")
    p.add_argument("--count", type=int, default=None,
                   help="exit after this many new alerts (default: run until Ctrl-C)")
    p.add_argument("--timeout-s", type=float, default=None,
                   help="exit after this many seconds; exit code 1 if --count was not reached (default: no limit)")
    p.add_argument("-v", "--verbose", action="store_true", help="log connection details (default: warnings only)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry: returns the process exit code (0 ok, 1 --count not reached in time, 2 bad arguments,
    3 never connected to the broker)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    log.setLevel(logging.INFO)  # connection / subscription lines always; paho's chatter only with -v
    logging.getLogger("edge.subscribe.paho").setLevel(logging.INFO if args.verbose else logging.WARNING)
    try:
        password = read_password(None, args.password_file) if args.username else None
        sink = AlertSink(args.out, max_message_bytes=args.max_message_bytes, snapshot_dir=args.snapshots)
        sub = Subscriber(args.broker, sink, prefix=args.prefix, device=args.device, client_id=args.client_id,
                         session_expiry_s=args.session_expiry_s, username=args.username, password=password,
                         ca_file=args.ca_file, certfile=args.certfile, keyfile=args.keyfile,
                         allow_insecure_credentials=args.allow_insecure_credentials,
                         on_line=lambda line: print(line, flush=True))
    except (MqttConfigError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sub.start()
    deadline = time.monotonic() + args.timeout_s if args.timeout_s is not None else float("inf")
    target = args.count
    warn_at = time.monotonic() + NOT_CONNECTED_WARNING_S
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if warn_at is not None and time.monotonic() >= warn_at:
                warn_at = None
                if not sub.ever_connected:
                    log.warning("not connected to the broker %s:%s after %.0f s, still trying (is it running, and is "
                                "the URI right?)", sub.address.host, sub.address.port, NOT_CONNECTED_WARNING_S)
            if sink.wait_for(lambda s: target is not None and len(s.alerts) >= target, min(remaining, 0.5)):
                break
    except KeyboardInterrupt:
        pass
    finally:
        sub.stop()
    print(f"{len(sink.alerts)} new alerts, {sink.duplicates} duplicates, {len(sink.invalid)} invalid messages",
          file=sys.stderr)
    if not sub.ever_connected:
        log.warning("never connected to the broker %s:%s (%s): no alert could have arrived", sub.address.host,
                    sub.address.port, sub.last_failure or "no answer before --timeout-s")
        return EXIT_NEVER_CONNECTED
    return 1 if target is not None and len(sink.alerts) < target else 0


if __name__ == "__main__":
    sys.exit(main())
