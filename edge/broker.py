"""Reaching an MQTT broker: the broker URI, credentials, readable CONNACK reasons and paho's log.

Shared by the publisher (edge/mqtt.py) and the subscriber (edge/subscribe.py); no paho import here.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

PASSWORD_ENV = "AELF_MQTT_PASSWORD"


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
    """paho logs every failed reconnect attempt at ERROR; we log one clear line per outage instead.

    The record is demoted to DEBUG and then dropped unless the logger is enabled for DEBUG: the level
    check happened before the filter ran, so a demoted record would otherwise print at INFO verbosity.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and "not connected" in record.getMessage():
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


def paho_logger(name: str) -> logging.Logger:
    """The logger handed to paho's ``enable_logger``: its packet trace shows only at DEBUG verbosity."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, _QuietReconnects) for f in logger.filters):
        logger.addFilter(_QuietReconnects())
    return logger
