"""MqttPublisher against a real mosquitto: delivery, broker outage, daemon SIGKILL, status/LWT, load."""
# ruff: noqa: F811  (pytest fixtures imported from mqtt_fixtures are re-bound as test arguments)

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from mqtt_fixtures import (  # noqa: F401
    Daemon,
    broker,
    log_watcher,
    make_alert,
    mqtt_section,
    needs_mosquitto,
    outbox_at,
    pace,
)
from pydantic import ValidationError

from edge.config import load_config
from edge.mqtt import MqttPublisher
from edge.mqtt_names import MqttConfigError, parse_broker_uri
from edge.subscribe import AlertSink, Subscriber
from edge.topics import fit_alert

pytestmark = [needs_mosquitto, pytest.mark.mqtt]


def subscribe(uri: str, tmp_path: Path, **kw) -> tuple[AlertSink, Subscriber]:
    """A connected in-process subscriber with a persistent session (the broker queues while it is away)."""
    sink = AlertSink(tmp_path / "received.jsonl")
    sub = Subscriber(uri, sink, client_id=f"test-sub-{tmp_path.name}"[:60], session_expiry_s=300,
                     on_line=lambda line: None, **kw).start()
    assert sub.connected.wait(10), "subscriber did not connect"
    assert sub.subscribed.wait(10), "subscription not acknowledged"
    return sink, sub


def publisher(uri: str, tmp_path: Path, *, device_id: str = "cam1", password: str | None = None,
              **kw) -> MqttPublisher:
    kw.setdefault("reconnect_min_s", 0.2)
    kw.setdefault("reconnect_max_s", 1.0)
    return MqttPublisher(device_id, mqtt_section(uri, tmp_path / "outbox.sqlite3", **kw), password=password)


def test_alert_status_and_clean_shutdown(broker, tmp_path: Path) -> None:
    sink, sub = subscribe(broker.uri, tmp_path)
    pub = publisher(broker.uri, tmp_path, stats_interval_s=0)
    try:
        assert sink.wait_for(lambda s: s.device_status.get("cam1") == "online", 10)
        alerts = [make_alert(sequence=i, severity="high") for i in range(3)]
        pub.publish_alert(alerts[0], snapshot_jpeg=b"\xff\xd8\xff\xe0fakejpeg")
        for a in alerts[1:]:
            pub.publish_alert(a)
        assert sink.wait_for(lambda s: len(s.alerts) == 3, 10)
        assert [a["alert_id"] for a in sink.alerts] == [a["alert_id"] for a in alerts], "in order"
        assert sink.alerts[0]["snapshot"]["topic"] == f"crack/cam1/snapshot/{alerts[0]['alert_id']}"
        assert pub.flush(10) and len(pub.outbox) == 0, "rows deleted once acknowledged"
        pub.publish_stats({"fps": 12.5, "queue_depth": 1})
        stats = pub.stats()
        assert stats["fps"] == 12.5 and stats["outbox_pending"] == 0 and stats["mqtt_connected"] is True
    finally:
        pub.close(timeout_s=5)
        assert sink.wait_for(lambda s: s.device_status.get("cam1") == "offline", 10), "clean close says offline"
        sub.stop()


def test_broker_outage_every_alert_arrives_once(broker, tmp_path: Path) -> None:
    """The broker is down for ~3 s while alerts keep coming (the benchmark does 10 s)."""
    sink, sub = subscribe(broker.uri, tmp_path)
    pub = publisher(broker.uri, tmp_path)
    sent: list[str] = []
    try:
        assert pub.wait_connected(10)

        def emit(n: int) -> None:
            for _ in range(n):
                alert = make_alert(sequence=len(sent))
                pub.publish_alert(alert)
                sent.append(alert["alert_id"])
                pace(0.05)

        emit(10)
        broker.stop()
        t_down = time.monotonic()
        emit(60)  # ~3 s of alerts while the broker is down
        assert len(pub.outbox) > 0, "alerts wait in the outbox during the outage"
        assert time.monotonic() - t_down >= 3.0
        broker.start()
        emit(10)
        assert sink.wait_for(lambda s: len(s.alerts) == len(sent), 30), (len(sink.alerts), len(sent))
        assert sorted(a["alert_id"] for a in sink.alerts) == sorted(sent), "every alert, none twice"
        assert pub.flush(10)
    finally:
        pub.close(timeout_s=2)
        sub.stop()


def test_sigkilled_daemon_delivers_unacknowledged_alerts_after_restart(broker, tmp_path: Path) -> None:
    outbox = tmp_path / "daemon-outbox.sqlite3"
    broker.stop()
    first = Daemon(broker.uri, outbox, alerts=7)
    first.wait_line("stored 7", 30)
    first.kill()  # SIGKILL while the broker is down: nothing was acknowledged
    box = outbox_at(outbox)
    stored = [r.alert_id for r in box.pending(100)]
    box.close()
    assert len(stored) == 7
    broker.start()
    sink, sub = subscribe(broker.uri, tmp_path)
    second = Daemon(broker.uri, outbox, alerts=0)
    try:
        second.wait_line("connected", 30)
        assert sink.wait_for(lambda s: len(s.alerts) == 7, 20)
        assert [a["alert_id"] for a in sink.alerts] == stored, "delivered in the order they were stored"
    finally:
        second.kill()
        sub.stop()


def test_subscriber_sees_offline_within_keepalive_when_daemon_dies(broker, tmp_path: Path) -> None:
    keepalive_s = 2
    sink, sub = subscribe(broker.uri, tmp_path)
    daemon = Daemon(broker.uri, tmp_path / "o.sqlite3", keepalive_s=keepalive_s)
    try:
        daemon.wait_line("connected", 30)
        assert sink.wait_for(lambda s: s.device_status.get("cam1") == "online", 10)
        killed_at = time.monotonic()
        daemon.kill()
        # The broker declares the client dead after 1.5 x keep-alive and publishes its will.
        assert sink.wait_for(lambda s: s.device_status.get("cam1") == "offline", 1.5 * keepalive_s + 3)
        assert time.monotonic() - killed_at <= 1.5 * keepalive_s + 3
        daemon = Daemon(broker.uri, tmp_path / "o.sqlite3", keepalive_s=keepalive_s)
        daemon.wait_line("connected", 30)
        assert sink.wait_for(lambda s: s.device_status.get("cam1") == "online", 10)
    finally:
        daemon.kill()
        sub.stop()


def test_frozen_daemon_goes_offline_after_keepalive_expiry(broker, tmp_path: Path) -> None:
    """SIGSTOP keeps the socket open but silent, like a lost network link: the broker's keep-alive decides."""
    keepalive_s = 2
    sink, sub = subscribe(broker.uri, tmp_path)
    daemon = Daemon(broker.uri, tmp_path / "o.sqlite3", keepalive_s=keepalive_s)
    try:
        daemon.wait_line("connected", 30)
        assert sink.wait_for(lambda s: s.device_status.get("cam1") == "online", 10)
        frozen_at = time.monotonic()
        daemon.proc.send_signal(signal.SIGSTOP)
        assert sink.wait_for(lambda s: s.device_status.get("cam1") == "offline", 1.5 * keepalive_s + 3)
        assert time.monotonic() - frozen_at >= keepalive_s, "not before the keep-alive window"
        daemon.proc.send_signal(signal.SIGCONT)  # it notices the dropped link, reconnects, says online
        assert sink.wait_for(lambda s: s.device_status.get("cam1") == "online", 15)
    finally:
        daemon.proc.send_signal(signal.SIGCONT)
        daemon.kill()
        sub.stop()


def test_load_1000_alerts_no_loss(broker, tmp_path: Path) -> None:
    sink, sub = subscribe(broker.uri, tmp_path)
    pub = publisher(broker.uri, tmp_path, max_inflight=100)
    try:
        assert pub.wait_connected(10)
        alerts = [make_alert(sequence=i) for i in range(1000)]
        for a in alerts:
            pub.publish_alert(a)
        assert sink.wait_for(lambda s: len(s.alerts) == 1000, 60), len(sink.alerts)
        assert len({a["alert_id"] for a in sink.alerts}) == 1000 and sink.duplicates == 0
        assert [a["sequence"] for a in sink.alerts] == list(range(1000)), "in order"
    finally:
        pub.close(timeout_s=5)
        sub.stop()


def test_oversized_alert_is_trimmed_and_still_valid(broker, tmp_path: Path, log_watcher) -> None:
    sink, sub = subscribe(broker.uri, tmp_path)
    pub = publisher(broker.uri, tmp_path, max_payload_bytes=4096)
    try:
        big = make_alert(n_cracks=200, severity="medium")
        big["cracks"][17]["severity"] = "high"
        big["severity"] = "high"
        pub.publish_alert(big, snapshot_jpeg=b"\xff" * 10_000)
        assert sink.wait_for(lambda s: len(s.alerts) == 1, 10)
        got = sink.alerts[0]
        assert 1 <= len(got["cracks"]) < 200 and got["cracks"][0]["severity"] == "high"
        assert "snapshot" not in got, "the oversized snapshot was not published"
        assert log_watcher.wait_for("cracks removed to fit max_payload_bytes=4096", 1)
        assert log_watcher.wait_for("snapshot of 10000 bytes exceeds", 1)
    finally:
        pub.close(timeout_s=2)
        sub.stop()


def test_fit_alert_keeps_most_severe_then_widest() -> None:
    alert = make_alert(n_cracks=50)
    alert["cracks"][30]["severity"] = "high"
    fitted, removed = fit_alert(alert, 2000)
    assert removed > 0 and fitted["cracks"][0] is alert["cracks"][30]
    assert fit_alert(alert, 10**6) == (alert, 0)
    with pytest.raises(ValueError, match="even with one crack"):
        fit_alert(alert, 100)


def test_settings_errors_name_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="plain TCP"):
        mqtt_section("mqtt://127.0.0.1:1", tmp_path / "o", username="u")
    with pytest.raises(MqttConfigError, match="scheme must be mqtt:// or mqtts://"):
        parse_broker_uri("http://x")
    with pytest.raises(MqttConfigError, match="credentials"):
        parse_broker_uri("mqtt://user:pw@host")
    with pytest.raises(MqttConfigError, match="device_id 'a/b'"):
        MqttPublisher("a/b", mqtt_section("mqtt://127.0.0.1:1", tmp_path / "o"))
    with pytest.raises(MqttConfigError, match="ca_file .*not found"):
        MqttPublisher("cam1", mqtt_section("mqtts://127.0.0.1:1", tmp_path / "o", tls={"ca_file": tmp_path / "none.crt"}))
    assert parse_broker_uri("mqtts://broker.example").port == 8883


def test_insecure_credentials_allowed_only_when_asked(broker, tmp_path: Path) -> None:
    pub = publisher(broker.uri, tmp_path, username="cam1", password="secret", allow_insecure_credentials=True)
    try:
        assert pub.wait_connected(10), "anonymous broker accepts any credentials once they are allowed"
    finally:
        pub.close(timeout_s=2)


def test_publisher_takes_the_mqtt_section(broker, tmp_path: Path) -> None:
    section = load_config(None, [
        "mqtt.topic_prefix='fleet'", "mqtt.keepalive_s=7", f"mqtt.outbox.path='{tmp_path / 'cfg.sqlite3'}'",
        "mqtt.outbox.max_alerts=5", "mqtt.stats_interval_s=0", "mqtt.max_payload_bytes=4096",
    ], broker=broker.uri).mqtt
    pub = MqttPublisher("truck-07", section)
    try:
        assert pub.topics.alert == "fleet/truck-07/alert" and pub.config.keepalive_s == 7
        assert pub.outbox.max_alerts == 5 and pub.config.max_payload_bytes == 4096 and pub.config.stats_interval_s == 0
        assert pub.wait_connected(10)
    finally:
        pub.close(timeout_s=2)
