"""A real PostgreSQL server for tests and benchmarks: initdb + pg_ctl in a temporary folder, loopback port.

`Postgres().start()` creates a cluster (trust authentication, user ``postgres``) in a new folder under
the system temp directory, starts it on a free 127.0.0.1 port and returns when it accepts connections
(``pg_ctl -w``: no sleeps). ``restart()`` stops (fast: connections cut) and starts it again; ``remove()``
stops it and deletes the folder. The binaries come from Debian's ``postgresql`` package
(/usr/lib/postgresql/<version>/bin). PostgreSQL refuses to run as root: as root the server runs as
``nobody`` (through ``runuser``), which owns the folder.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from testbed.mosquitto import free_port

RUN_AS_WHEN_ROOT = "nobody"


def find_pg_bin() -> Path | None:
    """The folder holding initdb and pg_ctl (newest installed version), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb and shutil.which("pg_ctl") else None


def why_no_postgres() -> str | None:
    """Why a test cannot start PostgreSQL here (None when it can)."""
    if find_pg_bin() is None:
        return "PostgreSQL server binaries not installed (Debian package 'postgresql'; .ci/run installs it)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser: PostgreSQL refuses to run as root"
    return None


class Postgres:
    """One PostgreSQL cluster in its own temporary folder on 127.0.0.1:`port`."""

    def __init__(self, *, fsync: bool = False, port: int | None = None) -> None:
        bin_dir = find_pg_bin()
        if bin_dir is None:
            raise FileNotFoundError("initdb/pg_ctl not found: install the Debian package 'postgresql'")
        self.bin = bin_dir
        self.port = port or free_port()
        self.root = Path(tempfile.mkdtemp(prefix="aelf-pg-"))
        self.data = self.root / "data"
        self.log_path = self.root / "postgres.log"
        self.fsync = fsync
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam(RUN_AS_WHEN_ROOT)
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._as_user = ["runuser", "-u", RUN_AS_WHEN_ROOT, "--"]

    @property
    def url(self) -> str:
        """postgresql://postgres@127.0.0.1:<port>/postgres"""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout_s: float = 120) -> None:
        proc = subprocess.run([*self._as_user, *args], capture_output=True, text=True, timeout=timeout_s,
                              cwd=self.root)
        if proc.returncode != 0:
            log = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed ({proc.returncode}): {proc.stderr[-2000:]} {log}")

    def start(self) -> Postgres:
        """initdb (first time), then start and wait until the server accepts connections."""
        if not (self.data / "PG_VERSION").exists():
            self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
                      "--no-sync", "-E", "UTF8", "--locale=C.UTF-8")
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root} "
                   f"-c fsync={'on' if self.fsync else 'off'} -c max_connections=200")
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log_path), "-w", "-t", "60",
                  "-o", options, "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        """pg_ctl stop (fast: cut connections, clean shutdown; immediate: like a crash)."""
        if (self.data / "postmaster.pid").exists():
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self) -> Postgres:
        self.stop()
        return self.start()

    def remove(self) -> None:
        """Stop the server and delete its folder."""
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
