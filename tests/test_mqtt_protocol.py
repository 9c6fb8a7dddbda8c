"""MQTT 5 -> 3.1.1 fallback. mosquitto 2 accepts every protocol version and cannot be told to refuse MQTT 5,
so a small TCP front answers an MQTT 5 CONNECT exactly as a 3.1.1-only broker does (CONNACK return code
0x01, "unacceptable protocol version", then close) and pipes 3.1.1 connections to the real mosquitto."""
# ruff: noqa: F811  (pytest fixtures imported from mqtt_fixtures are re-bound as test arguments)

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest
from mqtt_fixtures import broker, log_watcher, make_alert, mqtt_section, needs_mosquitto  # noqa: F401

from edge.mqtt import MqttPublisher
from edge.subscribe import AlertSink, Subscriber

pytestmark = [needs_mosquitto, pytest.mark.mqtt]


class V311OnlyFront:
    """Listens on a free loopback port; refuses MQTT 5 CONNECTs, forwards everything else to `upstream_port`."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.refused_v5 = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        first = conn.recv(65536)
        # CONNECT: fixed header (1 byte + remaining-length varint), then "\x00\x04MQTT" and the level byte.
        i = 1
        while first[i] & 0x80:
            i += 1
        level = first[i + 1 + 6]
        if level == 5:
            self.refused_v5 += 1
            conn.sendall(b"\x20\x02\x00\x01")
            conn.close()
            return
        up = socket.create_connection(("127.0.0.1", self.upstream_port))
        up.sendall(first)

        def pipe(a: socket.socket, b: socket.socket) -> None:
            try:
                while data := a.recv(65536):
                    b.sendall(data)
            except OSError:
                pass
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        threading.Thread(target=pipe, args=(conn, up), daemon=True).start()
        threading.Thread(target=pipe, args=(up, conn), daemon=True).start()

    def close(self) -> None:
        self.sock.close()


def test_falls_back_to_311_when_the_broker_refuses_5(broker, tmp_path: Path, log_watcher) -> None:
    front = V311OnlyFront(broker.port)
    sink = AlertSink(None)
    sub = Subscriber(broker.uri, sink, on_line=lambda line: None).start()  # straight to mosquitto
    pub = MqttPublisher("cam1", mqtt_section(f"mqtt://127.0.0.1:{front.port}", tmp_path / "o.sqlite3",
                                             reconnect_min_s=0.2, reconnect_max_s=1.0))
    try:
        assert sub.subscribed.wait(10)
        alert = make_alert()
        pub.publish_alert(alert)  # stored while the protocol is being negotiated
        assert pub.wait_connected(15), log_watcher.messages
        assert front.refused_v5 >= 1 and pub.protocol == "3.1.1"
        assert log_watcher.wait_for("refused MQTT 5; falling back to MQTT 3.1.1", 1)
        assert sink.wait_for(lambda s: [a["alert_id"] for a in s.alerts] == [alert["alert_id"]], 10)
        assert pub.flush(10)
    finally:
        pub.close(timeout_s=2)
        sub.stop()
        front.close()


def test_mqtt5_is_used_when_the_broker_accepts_it(broker, tmp_path: Path) -> None:
    pub = MqttPublisher("cam1", mqtt_section(broker.uri, tmp_path / "o.sqlite3"))
    try:
        assert pub.wait_connected(10) and pub.protocol == "5"
    finally:
        pub.close(timeout_s=2)
