"""The subscriber: schema validation, de-duplication across restarts, bad messages, the CLI on a real broker."""
# ruff: noqa: F811  (pytest fixtures imported from mqtt_fixtures are re-bound as test arguments)

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from mqtt_fixtures import REPO, broker, make_alert, mqtt_section, needs_mosquitto  # noqa: F401

from edge.mqtt import MqttPublisher
from edge.subscribe import AlertSink, Subscriber, format_alert_line


def test_sink_dedups_and_persists_seen_ids_from_jsonl(tmp_path: Path) -> None:
    out = tmp_path / "alerts.jsonl"
    a, b = make_alert(sequence=0), make_alert(sequence=1, severity="high", n_cracks=3)
    sink = AlertSink(out)
    assert sink.handle_alert("crack/cam1/alert", json.dumps(a).encode()).kind == "new"
    assert sink.handle_alert("crack/cam1/alert", json.dumps(a).encode()).kind == "duplicate"
    restarted = AlertSink(out)  # a new process reading the same file
    assert restarted.handle_alert("crack/cam1/alert", json.dumps(a).encode()).kind == "duplicate"
    assert restarted.handle_alert("crack/cam1/alert", json.dumps(b).encode()).kind == "new"
    assert [json.loads(line)["alert_id"] for line in out.read_text().splitlines()] == [a["alert_id"], b["alert_id"]]
    line = format_alert_line(b)
    assert "cam1" in line and "HIGH" in line and "3 cracks" in line and "max width 5.0 px" in line


def test_sink_writes_csv_summary_rows(tmp_path: Path) -> None:
    out = tmp_path / "alerts.csv"
    alerts = [make_alert(sequence=i, n_cracks=2) for i in range(2)]
    sink = AlertSink(out)
    for a in alerts:
        sink.handle_alert("crack/cam1/alert", json.dumps(a).encode())
    rows = list(csv.DictReader(out.open()))
    assert [r["alert_id"] for r in rows] == [a["alert_id"] for a in alerts]
    assert rows[0]["n_cracks"] == "2" and rows[0]["max_width_px"] == "4.0"
    assert AlertSink(out).handle_alert("crack/cam1/alert", json.dumps(alerts[1]).encode()).kind == "duplicate"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (json.dumps({**make_alert(), "severity": "extreme"}).encode(), "schema: severity"),
        (json.dumps({**make_alert(), "cracks": []}).encode(), "schema: cracks"),
        (json.dumps(make_alert(device_id="cam9")).encode(), "does not match the topic"),
        (b"x" * 2000, "oversized: 2000 bytes > limit 1500"),
    ],
)
def test_sink_reports_bad_messages_with_the_reason(payload: bytes, reason: str) -> None:
    sink = AlertSink(None, max_message_bytes=1500)
    result = sink.handle_alert("crack/cam1/alert", payload)
    assert result.kind == "invalid" and reason in result.reason, result.reason


@needs_mosquitto
@pytest.mark.mqtt
def test_malformed_and_oversized_messages_do_not_stop_the_subscriber(broker, tmp_path: Path) -> None:
    sink = AlertSink(tmp_path / "a.jsonl", max_message_bytes=64 * 1024)
    sub = Subscriber(broker.uri, sink, on_line=lambda line: None).start()
    raw = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    try:
        assert sub.subscribed.wait(10)
        raw.connect("127.0.0.1", broker.port)
        raw.loop_start()
        good = make_alert()
        for payload in (b"garbage", b"\x00" * 200_000, json.dumps({"alert_id": 1}).encode(), json.dumps(good).encode()):
            raw.publish("crack/cam1/alert", payload, qos=1).wait_for_publish(10)
        assert sink.wait_for(lambda s: len(s.alerts) == 1 and len(s.invalid) == 3, 10), sink.invalid
        assert sink.alerts[0]["alert_id"] == good["alert_id"]
        assert any(r.startswith("oversized") for r in sink.invalid)
    finally:
        raw.loop_stop()
        raw.disconnect()
        sub.stop()


@needs_mosquitto
@pytest.mark.mqtt
def test_cli_counts_validates_and_writes_csv(broker, tmp_path: Path) -> None:
    out = tmp_path / "alerts.csv"
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge.subscribe", "--broker", broker.uri, "--device", "cam1", "--out", str(out),
         "--count", "2", "--timeout-s", "30"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    pub = None
    try:
        for line in proc.stderr:  # wait until the CLI's subscription is acknowledged
            if "subscribed to crack/cam1/alert" in line:
                break
        pub = MqttPublisher("cam1", mqtt_section(broker.uri, tmp_path / "o.sqlite3"))
        alerts = [make_alert(sequence=i, severity="medium") for i in range(2)]
        pub.publish_alert(alerts[0])
        pub.publish_alert(alerts[0] | {})  # same alert_id: the outbox keeps one, the subscriber would drop it
        pub.publish_alert(alerts[1])
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if pub is not None:
            pub.close(timeout_s=2)
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert [r["alert_id"] for r in csv.DictReader(out.open())] == [a["alert_id"] for a in alerts]
    printed = [line for line in stdout.splitlines() if "MEDIUM" in line]
    assert len(printed) == 2 and "cam1 " in printed[0] and "is online" in stdout
    assert "2 new alerts, 0 duplicates, 0 invalid" in stderr


def test_cli_help_explains_flags() -> None:
    proc = subprocess.run([sys.executable, "-m", "edge.subscribe", "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0
    for flag in ("--broker", "--prefix", "--device", "--out", "--count", "--timeout-s", "--password-file", "--ca-file"):
        assert flag in proc.stdout


def test_cli_says_early_when_no_broker_answers(tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:  # a port where nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = subprocess.run([sys.executable, "-m", "edge.subscribe", "--broker", f"mqtt://127.0.0.1:{port}",
                             "--timeout-s", "6"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 3
    assert f"not connected to the broker 127.0.0.1:{port} after 5 s, still trying" in result.stderr
