"""A real mosquitto broker for tests and benchmarks: generated config, free loopback port, no sleeps.

`Mosquitto(workdir).start()` writes `mosquitto.conf`, starts `mosquitto -c`, and polls a TCP connect
until the listener accepts (deadline, no fixed sleep). `stop()` sends SIGTERM (the broker saves its
persistence file), `restart()` starts it again on the same port. Used by tests/mqtt_fixtures.py,
testbed/fault_scenarios.py and benchmarks/bench_mqtt.py.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

MOSQUITTO_CANDIDATES = ("mosquitto", "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


def find_mosquitto() -> str | None:
    """Path of the mosquitto binary, or None (Debian package `mosquitto`)."""
    for name in MOSQUITTO_CANDIDATES:
        path = shutil.which(name) or (name if os.path.isfile(name) and os.access(name, os.X_OK) else None)
        if path:
            return path
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Mosquitto:
    """One mosquitto process on 127.0.0.1:`port` with a config made from the keyword arguments."""

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        persistence: bool = True,
        password_file: Path | None = None,
        acl_file: Path | None = None,
        tls: dict[str, Path] | None = None,
        require_certificate: bool = False,
        message_size_limit: int = 0,
        save_every_change: bool = False,
        extra_lines: tuple[str, ...] | list[str] = (),
    ) -> None:
        binary = find_mosquitto()
        if binary is None:
            raise FileNotFoundError("mosquitto not found: install the Debian package 'mosquitto'")
        self.binary = binary
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.tls = tls
        self.conf_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        lines = [
            f"listener {self.port} 127.0.0.1",
            f"allow_anonymous {'false' if password_file else 'true'}",
            f"persistence {'true' if persistence else 'false'}",
            f"persistence_location {self.workdir}/",
            # Started as root, mosquitto would drop to user 'mosquitto' and could not write its
            # persistence file in our temporary directory: stay the user who runs the tests.
            f"user {getpass.getuser()}",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "max_queued_messages 100000",
            "max_inflight_messages 0",
        ]
        if message_size_limit:
            lines.append(f"message_size_limit {message_size_limit}")
        if save_every_change:  # sessions and queued messages survive even a SIGKILL of the broker
            lines += ["autosave_interval 1", "autosave_on_changes true"]
        if password_file:
            lines.append(f"password_file {password_file}")
        if acl_file:
            lines.append(f"acl_file {acl_file}")
        if tls:
            lines += [f"cafile {tls['ca']}", f"certfile {tls['cert']}", f"keyfile {tls['key']}"]
            if require_certificate:
                lines.append("require_certificate true")
        lines += list(extra_lines)  # e.g. a bridge section (bridge_lines below)
        self.conf_path.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        """mqtt://127.0.0.1:port (mqtts:// when TLS is configured)."""
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 10.0) -> Mosquitto:
        """Start the broker and return once it accepts TCP connections (or raise with its log)."""
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the child's lifetime
        self.proc = subprocess.Popen([self.binary, "-c", str(self.conf_path)], stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: {self.log_path.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                # The broker is still binding its socket: wait for that process, a bounded poll.
                try:
                    self.proc.wait(timeout=0.02)
                except subprocess.TimeoutExpired:
                    pass
        self.stop()
        raise TimeoutError(f"mosquitto did not accept connections on port {self.port} in {timeout_s} s")

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM (the broker writes its persistence file) and wait for the process to end."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=timeout_s)

    def kill(self) -> None:
        """SIGKILL: no persistence file written at exit, connections cut without a DISCONNECT."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.kill()
        self.proc.wait(timeout=10)

    def reload(self) -> None:
        """SIGHUP: mosquitto re-reads its password and ACL files."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGHUP)

    def restart(self) -> Mosquitto:
        """Stop (if running) and start again on the same port with the same config."""
        self.stop()
        return self.start()

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        """What the broker logged so far (errors, warnings, notices)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


DEPLOY_BRIDGE_CONF = Path(__file__).resolve().parents[1] / "deploy" / "mosquitto-bridge.conf"


def bridge_lines(name: str, remote_port: int, *, conf: Path = DEPLOY_BRIDGE_CONF) -> list[str]:
    """The bridge section of deploy/mosquitto-bridge.conf, pointed at 127.0.0.1:`remote_port`.

    Only what a loopback test must change is changed: the address, the client ids (from `name`),
    shorter reconnect / keep-alive timers, and no TLS / credentials (the loopback broker has none); every other bridge setting is the example's, so the test
    runs the shipped configuration. Comments and commented-out lines are dropped.
    """
    lines = [line.strip() for line in conf.read_text().splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]  # mosquitto: comments are whole lines
    section = lines[next(i for i, line in enumerate(lines) if line.startswith("connection ")):]
    replace = {"address": f"address 127.0.0.1:{remote_port}", "remote_clientid": f"remote_clientid {name}",
               "local_clientid": f"local_clientid {name}-local", "restart_timeout": "restart_timeout 1",
               "keepalive_interval": "keepalive_interval 5"}
    loopback_has_no_tls = ("bridge_cafile", "bridge_capath", "bridge_certfile", "bridge_keyfile", "remote_username",
                           "remote_password")
    return [replace.get(line.split()[0], line) for line in section if line.split()[0] not in loopback_has_no_tls]
