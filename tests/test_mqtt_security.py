"""A real mosquitto with TLS (generated CA, server and client certificates) + password file + ACL."""
# ruff: noqa: F811  (pytest fixtures imported from mqtt_fixtures are re-bound as test arguments)

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from mqtt_fixtures import log_watcher, make_alert, make_tls_material, mqtt_section, needs_mosquitto  # noqa: F401

from edge.mqtt import MqttPublisher
from edge.subscribe import AlertSink, Subscriber
from testbed.mosquitto import Mosquitto

pytestmark = [needs_mosquitto, pytest.mark.mqtt]

ACL = """\
user cam1
topic readwrite crack/cam1/#

user viewer
topic read crack/#
"""


@pytest.fixture()
def secure_broker(tmp_path: Path):
    """mosquitto with mqtts on a free port, client certificates required, users cam1/viewer, an ACL."""
    if shutil.which("mosquitto_passwd") is None:
        pytest.skip("mosquitto_passwd not installed (Debian package 'mosquitto')")
    tls = make_tls_material(tmp_path / "tls")
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwd), "cam1", "cam1-secret"], check=True)
    subprocess.run(["mosquitto_passwd", "-b", str(passwd), "viewer", "viewer-secret"], check=True)
    acl = tmp_path / "acl"
    acl.write_text(ACL)
    mosq = Mosquitto(tmp_path / "broker", password_file=passwd, acl_file=acl, require_certificate=True,
                     tls={"ca": tls["ca"], "cert": tls["server_cert"], "key": tls["server_key"]}).start()
    (tmp_path / "cam1.pw").write_text("cam1-secret\n")
    (tmp_path / "wrong.pw").write_text("guess\n")
    yield mosq, tls, tmp_path
    mosq.stop()


def _publisher(mosq, tls, tmp_path: Path, device: str, password_file: str, **kw) -> MqttPublisher:
    section = mqtt_section(mosq.uri, tmp_path / f"{device}-{password_file}.sqlite3", username="cam1",
                           password_file=str(tmp_path / password_file), reconnect_min_s=0.2, reconnect_max_s=1.0,
                           tls={"ca_file": tls["ca"], "certfile": tls["client_cert"], "keyfile": tls["client_key"]},
                           **kw)
    return MqttPublisher(device, section)


def _viewer(mosq, tls, tmp_path: Path) -> tuple[AlertSink, Subscriber]:
    sink = AlertSink(None)
    sub = Subscriber(mosq.uri, sink, username="viewer", password="viewer-secret", ca_file=tls["ca"],
                     certfile=tls["client_cert"], keyfile=tls["client_key"], on_line=lambda line: None).start()
    assert sub.subscribed.wait(10), f"viewer not subscribed; broker log: {mosq.log_text()[-1000:]}"
    return sink, sub


def test_right_credentials_over_tls_deliver(secure_broker) -> None:
    mosq, tls, tmp_path = secure_broker
    sink, sub = _viewer(mosq, tls, tmp_path)
    pub = _publisher(mosq, tls, tmp_path, "cam1", "cam1.pw")
    try:
        assert pub.wait_connected(10), mosq.log_text()[-1000:]
        alert = make_alert("cam1")
        pub.publish_alert(alert)
        assert sink.wait_for(lambda s: [a["alert_id"] for a in s.alerts] == [alert["alert_id"]], 10)
        assert sink.wait_for(lambda s: s.device_status.get("cam1") == "online", 5)
    finally:
        pub.close(timeout_s=2)
        sub.stop()


def test_wrong_password_is_refused_with_a_clear_message(secure_broker, log_watcher) -> None:
    mosq, tls, tmp_path = secure_broker
    pub = _publisher(mosq, tls, tmp_path, "cam1", "wrong.pw")
    try:
        assert log_watcher.wait_for("refused the connection: ", 10), log_watcher.messages
        refusal = next(m for m in log_watcher.messages if "refused the connection: " in m)
        # MQTT 5 mosquitto says "not authorized" for a wrong password (it does not reveal which users exist).
        assert "not authorized" in refusal or "bad user name or password" in refusal
        assert "password" in refusal, "the message points at the password"
        assert not pub.connected
        assert not any("guess" in m for m in log_watcher.messages), "the password is never logged"
    finally:
        pub.close(timeout_s=1)


def test_publishing_outside_the_acl_reaches_nobody(secure_broker, log_watcher) -> None:
    mosq, tls, tmp_path = secure_broker
    sink, sub = _viewer(mosq, tls, tmp_path)
    # cam1's credentials, but configured as device cam2: crack/cam2/# is outside cam1's ACL.
    rogue = _publisher(mosq, tls, tmp_path, "cam2", "cam1.pw")
    legit = _publisher(mosq, tls, tmp_path, "cam1", "cam1.pw")
    try:
        assert rogue.wait_connected(10) and legit.wait_connected(10)
        denied = make_alert("cam2")
        rogue.publish_alert(denied)
        assert log_watcher.wait_for("refused alert row", 10), log_watcher.messages
        assert len(rogue.outbox) == 1, "a refused alert is kept (a config error must not lose alerts)"
        allowed = make_alert("cam1")
        legit.publish_alert(allowed)
        assert sink.wait_for(lambda s: len(s.alerts) >= 1, 10)
        assert [a["alert_id"] for a in sink.alerts] == [allowed["alert_id"]]
        assert "cam2" not in sink.device_status, "even cam2's status never reached the viewer"
    finally:
        rogue.close(timeout_s=0.5)
        legit.close(timeout_s=2)
        sub.stop()


def test_plain_mqtt_to_a_tls_port_gets_a_tls_hint_once(secure_broker, log_watcher) -> None:
    mosq, tls, tmp_path = secure_broker
    plain = mosq.uri.replace("mqtts://", "mqtt://")
    pub = MqttPublisher("cam1", mqtt_section(plain, tmp_path / "plain.sqlite3", reconnect_min_s=0.1,
                                             reconnect_max_s=0.2))
    try:
        assert log_watcher.wait_for("if that port is a TLS listener, use mqtts://", 10), log_watcher.messages[-5:]
        assert not pub.wait_connected(1.0)
        hints = [m for m in log_watcher.messages if "TLS listener" in m]
        assert len(hints) == 1, "one line per outage, not one per retry"
    finally:
        pub.close(timeout_s=0.5)


def test_wrong_ca_is_named_a_certificate_problem_with_the_setting_to_fix(secure_broker, log_watcher) -> None:
    mosq, tls, tmp_path = secure_broker
    other = make_tls_material(tmp_path / "other-ca")
    section = mqtt_section(mosq.uri, tmp_path / "wrong-ca.sqlite3", reconnect_min_s=0.1, reconnect_max_s=0.2,
                           tls={"ca_file": other["ca"], "certfile": tls["client_cert"], "keyfile": tls["client_key"]})
    pub = MqttPublisher("cam1", section)
    try:
        assert log_watcher.wait_for("TLS certificate problem", 10), log_watcher.messages[-5:]
        assert not pub.wait_connected(1.0)
        lines = [m for m in log_watcher.messages if "TLS certificate problem" in m]
        assert len(lines) == 1, "one line per cause, not one per retry"
        assert "not signed by the CA in" in lines[0] and str(other["ca"]) in lines[0]
        assert "set mqtt.tls.ca_file" in lines[0]
        assert not any("not reachable" in m for m in log_watcher.messages)
    finally:
        pub.close(timeout_s=0.5)


def test_subscriber_says_within_seconds_why_it_cannot_connect_and_keeps_trying(secure_broker, log_watcher) -> None:
    mosq, tls, tmp_path = secure_broker
    other = make_tls_material(tmp_path / "other-ca")
    sub = Subscriber(mosq.uri, AlertSink(None), username="viewer", password="viewer-secret", ca_file=other["ca"],
                     certfile=tls["client_cert"], keyfile=tls["client_key"], on_line=lambda line: None).start()
    try:
        assert log_watcher.wait_for("cannot connect to broker", 10), log_watcher.messages[-5:]
        line = next(m for m in log_watcher.messages if "cannot connect to broker" in m)
        assert "TLS certificate problem" in line and "set --ca-file" in line and "retrying" in line
        assert not sub.connected.is_set()
    finally:
        sub.stop()


def test_subscriber_cli_on_a_wrong_port_says_so_before_its_timeout(tmp_path: Path) -> None:
    import os
    import sys
    import time

    from mqtt_fixtures import REPO

    from testbed.mosquitto import free_port

    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "edge.subscribe", "--broker", f"mqtt://127.0.0.1:{free_port()}",
                             "--timeout-s", "60"], cwd=REPO, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        line = proc.stderr.readline()
        elapsed = time.monotonic() - started
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert "cannot connect to broker" in line and "connection refused" in line, line
    assert elapsed < 15, f"the first word came after {elapsed:.0f} s"


def test_plain_mqtt_to_a_tls_port_shows_no_paho_socket_noise(secure_broker, caplog) -> None:
    import logging

    mosq, tls, tmp_path = secure_broker
    caplog.set_level(logging.INFO)
    pub = MqttPublisher("cam1", mqtt_section(mosq.uri.replace("mqtts://", "mqtt://"), tmp_path / "p.sqlite3",
                                             reconnect_min_s=0.1, reconnect_max_s=0.2))
    try:
        assert not pub.wait_connected(2.0)
    finally:
        pub.close(timeout_s=0.5)
    shown = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert any("TLS listener" in m for m in shown)
    assert not any("failed to receive on socket" in m for m in shown), shown
