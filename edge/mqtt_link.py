"""The publisher's link to the broker: one paho client, its callbacks, and the MQTT 5 -> 3.1.1 fallback.

`BrokerLink` connects in paho's network thread, reconnects with back-off, and says in one line per
cause why it cannot connect or was refused (edge/broker.py words it). It knows nothing of alerts: it
hands what the broker sends back (CONNACK success, PUBACKs, messages) to a `LinkEvents` (the
publisher), and every callback is guarded so an exception never stops paho's network thread.
"""

from __future__ import annotations

import logging
import ssl
import sys
import threading
from typing import Any, Protocol

from edge.broker import (
    PUBLISHER_SETTINGS,
    connack_text,
    connect_failure_text,
    guarded,
    paho_logger,
)
from edge.config import MqttConfig
from edge.mqtt_names import BrokerAddress
from edge.topics import STATUS_QOS, Topics

log = logging.getLogger("edge.mqtt")
_guarded = guarded(log, "the network loop goes on; alerts stay queued")


class LinkEvents(Protocol):
    """What the link reports to its owner (called in paho's network thread)."""

    def link_up(self) -> None:
        """The broker accepted the connection (before `connected` is set)."""

    def published(self, mid: int, reason_code: Any) -> None:
        """The broker acknowledged the publish `mid` (PUBACK; `reason_code` is MQTT 5's verdict)."""

    def message(self, topic: str, payload: bytes) -> None:
        """The broker sent a message on a subscription (MQTT 3.1.1: the echo of an alert)."""

    def wake(self) -> None:
        """Something changed that the sender thread should look at."""


class BrokerLink:
    """One paho client for `config`, its connection state and its protocol (MQTT 5 or 3.1.1)."""

    def __init__(self, config: MqttConfig, topics: Topics, address: BrokerAddress, client_id: str,
                 password: str | None, events: LinkEvents) -> None:
        self.config = config
        self.topics = topics
        self.address = address
        self.client_id = client_id
        self.events = events
        self._password = password
        self.protocol = "3.1.1" if config.protocol == "3.1.1" else "5"
        self.connected = threading.Event()
        self.ever_connected = False
        self.fallback_requested = False  # the broker refused MQTT 5: the sender thread switches (not paho's)
        self.callback_errors = 0
        self.closing = False
        self._last_refusal: str | None = None
        self._client = self._make_client()

    def start(self) -> None:
        """Start paho's network thread (it connects, reconnects and reads acknowledgements)."""
        self._client.loop_start()

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool = False) -> Any:
        """paho's publish (never blocks on the network); returns its MQTTMessageInfo."""
        return self._client.publish(topic, payload, qos=qos, retain=retain)

    def fall_back_to_311(self) -> None:
        """Replace the MQTT 5 client by a 3.1.1 one (called by the sender thread after a refusal)."""
        self.fallback_requested = False
        self._client.loop_stop()
        self.protocol = "3.1.1"
        self._client = self._make_client()
        self._client.loop_start()

    def close(self, timeout_s: float) -> None:
        """Publish "offline" (retained) when connected, disconnect and stop paho's thread."""
        self.closing = True
        if self.connected.is_set():
            info = self._client.publish(self.topics.status, "offline", qos=STATUS_QOS, retain=True)
            info.wait_for_publish(timeout=max(0.1, timeout_s))
            self._client.disconnect()
        self._client.loop_stop()

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
        client.on_message = self._on_message
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
                self.fallback_requested = True
                self.events.wake()
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
        self.ever_connected = True
        log.info("MQTT connected to %s (MQTT %s) as %s", where, self.protocol, self.client_id)
        if self.protocol == "3.1.1":  # the broker's echo is the only proof it accepted an alert
            client.subscribe(self.topics.alert, qos=1)
        self.events.link_up()
        self.connected.set()
        self.events.wake()

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
        was_connected = self.connected.is_set()
        self.connected.clear()
        if self.closing:
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
        self.events.published(mid, reason_code)

    @_guarded
    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        self.events.message(message.topic, message.payload)
