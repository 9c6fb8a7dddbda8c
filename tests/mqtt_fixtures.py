"""Pytest fixtures for the MQTT tests over the shared testbed: a real mosquitto, a log watcher, TLS material.

Import the fixtures into a test module with `from mqtt_fixtures import broker  # noqa: F401`. The
helpers the benchmarks use too (alerts, config sections, the publisher daemon) live in
testbed/mqtt.py and are imported here under their names for the tests.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import threading
from pathlib import Path

import pytest

from testbed.mosquitto import Mosquitto, find_mosquitto
from testbed.mqtt import REPO, Daemon, make_alert, mqtt_section, outbox_at  # noqa: F401 - for the test modules

needs_mosquitto = pytest.mark.skipif(
    find_mosquitto() is None, reason="mosquitto binary not installed (Debian package 'mosquitto'; .ci/run installs it)"
)


@pytest.fixture()
def broker(tmp_path: Path):
    """A running mosquitto on a free 127.0.0.1 port (anonymous, persistence on), stopped afterwards."""
    if find_mosquitto() is None:
        pytest.skip("mosquitto binary not installed (Debian package 'mosquitto')")
    mosq = Mosquitto(tmp_path / "broker").start()
    yield mosq
    mosq.stop()


def pace(seconds: float) -> None:
    """Let time pass on purpose (an outage's length, alert pacing), not to wait for something to happen."""
    threading.Event().wait(seconds)


class LogWatcher(logging.Handler):
    """Collects log records and lets a test wait until one contains a given text."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.messages: list[str] = []
        self._cond = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        with self._cond:
            self.messages.append(record.getMessage())
            self._cond.notify_all()

    def wait_for(self, text: str, timeout_s: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: any(text in m for m in self.messages), timeout=timeout_s)


@pytest.fixture()
def log_watcher():
    """A LogWatcher attached to the edge.* loggers for the test's duration."""
    watcher = LogWatcher()
    logger = logging.getLogger("edge")
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(watcher)
    yield watcher
    logger.removeHandler(watcher)
    logger.setLevel(old_level)


def make_tls_material(directory: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate (PEM files)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
        return path

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder().subject_name(name("aelf test CA")).issuer_name(name("aelf test CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = {"ca": directory / "ca.crt"}
    paths["ca"].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    for role, cn in (("server", "localhost"), ("client", "cam1")):
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder().subject_name(name(cn)).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        )
        if role == "server":
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        (directory / f"{role}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        paths[role + "_cert"] = directory / f"{role}.crt"
        paths[role + "_key"] = write_key(key, directory / f"{role}.key")
    return paths
