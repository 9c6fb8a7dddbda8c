"""Reaching an MQTT broker: credentials, readable CONNACK reasons and connection failures, paho's log.

Shared by the publisher (edge/mqtt_link.py) and the subscriber (edge/subscribe.py): the password,
what a CONNACK or a failed connection attempt means in words, the guard around paho callbacks and the
filter on paho's log. No paho import here.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.mqtt_names import BrokerAddress, MqttConfigError

PASSWORD_ENV = "AELF_MQTT_PASSWORD"


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


@dataclass(frozen=True)
class SettingNames:
    """What the user sets to fix a connection, as that program spells it (config key or CLI flag)."""

    uri: str
    ca_file: str
    client_cert: str


PUBLISHER_SETTINGS = SettingNames("mqtt.broker_uri", "mqtt.tls.ca_file", "mqtt.tls.certfile / keyfile")
SUBSCRIBER_SETTINGS = SettingNames("--broker", "--ca-file", "--certfile / --keyfile")

_UNTRUSTED_ISSUER = (18, 19, 20, 21)  # X509_V_ERR_*: self-signed leaf/chain, unknown local issuer, unverifiable


def connect_failure_text(exc: BaseException | None, address: BrokerAddress, names: SettingNames,
                         ca_file: str | os.PathLike | None = None) -> str:
    """Why a connection attempt failed, for a person: the cause (certificate, port, host, network) and
    the setting that fixes it. `exc` is what the socket / TLS layer raised (None: unknown)."""
    where = f"{address.host}:{address.port}"
    trusted = f"the CA in {ca_file}" if ca_file else "the system's CA store"
    if isinstance(exc, ssl.SSLCertVerificationError):
        code, message = exc.verify_code, exc.verify_message
        if code in _UNTRUSTED_ISSUER:
            return (f"TLS certificate problem: the broker's certificate is not signed by {trusted} ({message}); "
                    f"set {names.ca_file} to the CA certificate that signed the broker's certificate")
        if code == 10:
            return (f"TLS certificate problem: the broker's certificate has expired ({message}); renew it on the "
                    "broker, or check this device's clock")
        if code == 9:
            return (f"TLS certificate problem: the broker's certificate is not valid yet ({message}); check this "
                    "device's clock")
        if code == 62 or "hostname" in str(message).lower() or "ip address mismatch" in str(message).lower():
            return (f"TLS certificate problem: the broker's certificate is not issued for {address.host!r} "
                    f"({message}); put the name the certificate is issued for in {names.uri}")
        return f"TLS certificate problem: the broker's certificate was rejected ({message})"
    if isinstance(exc, ssl.SSLError):
        reason = str(getattr(exc, "reason", "") or exc).upper()
        if "WRONG_VERSION_NUMBER" in reason or "RECORD_LAYER_FAILURE" in reason or "UNEXPECTED_EOF" in reason:
            return (f"TLS problem: {where} does not answer TLS ({exc}); it is probably a plain MQTT port: use "
                    f"its TLS port, or mqtt:// in {names.uri}")
        if "CERTIFICATE_REQUIRED" in reason:
            return (f"TLS certificate problem: the broker requires a client certificate ({exc}); set "
                    f"{names.client_cert}")
        if "HANDSHAKE_FAILURE" in reason:
            return (f"TLS problem: the broker ended the handshake ({exc}): it may require a client certificate "
                    f"({names.client_cert}) or share no TLS version / cipher with this client")
        if "UNKNOWN_CA" in reason or "BAD_CERTIFICATE" in reason or "CERTIFICATE_UNKNOWN" in reason:
            return (f"TLS certificate problem: the broker rejected this client's certificate ({exc}); have "
                    f"{names.client_cert} signed by the CA the broker trusts")
        return f"TLS problem: {exc}"
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused: nothing listens on {where} (is the broker running, is the port right?)"
    if isinstance(exc, socket.gaierror):
        return f"host name {address.host!r} does not resolve ({exc.strerror}); check {names.uri}"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return f"no answer from {where} (timed out): wrong host or port, a firewall, or no network"
    if isinstance(exc, OSError) and exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return f"{where} cannot be reached ({exc.strerror}): no route to it (network down?)"
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}"
    return "not reachable"


def guarded(logger: logging.Logger, consequence: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Decorator for the methods paho calls back: an exception is logged with its traceback and
    `consequence` (what happens next, for the reader) and counted in ``self.callback_errors``; it is
    never raised into paho's network thread, which would stop (a publisher or subscriber gone deaf)."""

    def decorate(method: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(method)
        def wrapper(self: Any, *args: Any) -> None:
            try:
                method(self, *args)
            except Exception:
                self.callback_errors += 1
                logger.exception("%s failed (%s)", method.__name__, consequence)

        return wrapper

    return decorate


class _QuietReconnects(logging.Filter):
    """paho logs every failed reconnect attempt, and every connection the broker drops ("failed to
    receive on socket"), at ERROR; we log one clear line per outage and per cause instead.

    The record is demoted to DEBUG and then dropped unless the logger is enabled for DEBUG: the level
    check happened before the filter ran, so a demoted record would otherwise print at INFO verbosity.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.levelno >= logging.ERROR and ("not connected" in message or "failed to receive on socket" in message):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


def paho_logger(name: str) -> logging.Logger:
    """The logger handed to paho's ``enable_logger``: its packet trace shows only at DEBUG verbosity."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, _QuietReconnects) for f in logger.filters):
        logger.addFilter(_QuietReconnects())
    return logger
