"""MQTT names: the broker URI and the topic levels a device id or prefix may be (pure: no paho, no sockets).

Shared by the configuration's validation (edge/config.py), the publisher and the subscriber, so a name
that passes the config check is one the runtime accepts.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit


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


def topic_part_problem(name: str, value: str) -> str | None:
    """Why ``value`` cannot be the ``name`` ("device_id" or "topic_prefix") topic level, or None when it can.

    Both must be non-empty and free of the wildcards '#', '+' and NUL; only the prefix may contain '/'.
    """
    forbidden = "#+\0" if name == "topic_prefix" else "/#+\0"
    if not value:
        return "must not be empty (it is an MQTT topic level)"
    if any(c in value for c in forbidden):
        shown = "'#' or '+'" if name == "topic_prefix" else "'/', '#' or '+'"
        return f"must not contain {shown} (it is an MQTT topic level)"
    return None
