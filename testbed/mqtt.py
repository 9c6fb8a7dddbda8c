"""MQTT helpers for tests and benchmarks: valid alerts, config sections, an outbox, a publisher daemon,
a log watcher and TLS material.

:class:`Daemon` runs ``testbed/mqtt_daemon.py`` (an MqttPublisher + outbox, as the edge daemon runs
them) in a subprocess of its own, so a test or benchmark can SIGKILL it mid-delivery.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DAEMON_SCRIPT = Path(__file__).resolve().parent / "mqtt_daemon.py"


def make_alert(device_id: str = "cam1", sequence: int = 0, severity: str = "low", n_cracks: int = 1,
               created_at: dt.datetime | None = None) -> dict:
    """A schema-valid alert (edge/schemas/alert.schema.json) with `n_cracks` cracks of `severity`."""
    now = created_at or dt.datetime.now(dt.timezone.utc)
    stamp = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    cracks = [
        {"bbox": [10 * i, 5, 40, 8], "area_px": 120 + i, "length_px": 40.0 + i, "max_width_px": 3.0 + i % 5,
         "mean_width_px": 2.0, "mean_probability": 0.9, "severity": severity}
        for i in range(n_cracks)
    ]
    return {
        "schema_version": 1, "alert_id": uuid.uuid4().hex, "device_id": device_id, "sequence": sequence,
        "created_at": stamp, "capture_time": stamp, "source": "file:///data/road.mp4", "frame_index": sequence,
        "frame_size": {"width": 1920, "height": 1080},
        "model": {"name": "aelf-unet-w8", "sha256": "0" * 64, "threshold": 0.5, "precision": "fp32"},
        "severity": severity, "coverage": 0.01, "gsd_mm_per_px": None, "cracks": cracks,
    }


class Daemon:
    """testbed/mqtt_daemon.py in a subprocess: an MqttPublisher + outbox, as the edge daemon runs them."""

    def __init__(self, broker_uri: str, outbox: Path, *, device_id: str = "cam1", alerts: int = 0,
                 keepalive_s: int = 30) -> None:
        env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        self.proc = subprocess.Popen(
            [sys.executable, str(DAEMON_SCRIPT), "--broker", broker_uri, "--outbox", str(outbox),
             "--device", device_id, "--alerts", str(alerts), "--keepalive-s", str(keepalive_s)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env,
        )

        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._reader.start()

    def _read_stdout(self) -> None:
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.strip())
                self._cond.notify_all()
        with self._cond:
            self.lines.append("<exit>")
            self._cond.notify_all()

    def wait_line(self, prefix: str, timeout_s: float) -> str:
        """The first stdout line starting with `prefix` (raises with the daemon's stderr on timeout/exit)."""
        with self._cond:
            self._cond.wait_for(lambda: any(x.startswith((prefix, "<exit>")) for x in self.lines), timeout_s)
            found = [x for x in self.lines if x.startswith(prefix)]
        if found:
            return found[0]
        self.kill()
        raise RuntimeError(f"daemon printed no {prefix!r} line in {timeout_s} s; stdout {self.lines}; "
                           f"stderr: {self.stderr_text[-2000:]}")

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, no 'offline' from the daemon itself."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self._reader.join(timeout=10)
        if not self.proc.stderr.closed:
            self.stderr_text = self.proc.stderr.read()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            stream.close()

    stderr_text = ""


def outbox_at(path: Path | str, **kw):
    """An Outbox on `path` with the [mqtt.outbox] options in `kw` (edge/config.py's OutboxConfig)."""
    from edge.config import OutboxConfig
    from edge.outbox import Outbox

    return Outbox(OutboxConfig(path=str(path), **kw))


def mqtt_section(uri: str, outbox_path: Path | str, *, outbox: dict | None = None, tls: dict | None = None, **kw):
    """An [mqtt] section for `uri` with its outbox at `outbox_path`; `kw` are MqttConfig fields."""
    from edge.config import MqttConfig, OutboxConfig, TlsConfig

    tls_cfg = TlsConfig(**{k: None if v is None else str(v) for k, v in (tls or {}).items()})
    return MqttConfig(broker_uri=uri, outbox=OutboxConfig(path=str(outbox_path), **(outbox or {})), tls=tls_cfg, **kw)


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
