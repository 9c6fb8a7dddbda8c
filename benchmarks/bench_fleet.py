"""Fleet ingest under load and faults: simulated devices -> mosquitto -> 3 ingest workers -> SQLite / PostgreSQL.

    python -m benchmarks.bench_fleet [--devices 200] [--rate-hz 1] [--duration-s 180] [--db sqlite,postgresql]

Each device is the project's own publisher (edge.mqtt.MqttPublisher with its durable outbox), spread
over several device processes; the ingest workers are ``python -m edge.ingest`` processes; the broker
is a real mosquitto, PostgreSQL a real server in a temporary folder (fsync on). Per database:

1. load: every device publishes ``--rate-hz`` alerts/s for ``--duration-s``; stored, lost (produced,
   not stored), duplicate rows, capture-to-commit latency (the alert's capture_time to its row's
   stored_at), rows/s, and the CPU each part used (broker, workers, database, devices);
2. drain: the workers stopped while the devices publish for ``--drain-s``, then started: the rate at
   which the backlog is written is what the workers + database sustain (where it saturates);
3. faults: the devices publish through a vehicle broker bridged to the central one over a link that
   is cut for ``--cut-s``; one worker is SIGKILLed and restarted; the database is restarted
   (PostgreSQL); lost and duplicate rows after everything drained.

Prints a table and appends it to benchmarks/RESULTS.md with the command.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from benchmarks.common import REPO, add_results_args, command_line, publish, quantile, section_header
from testbed.mosquitto import Mosquitto, bridge_lines
from testbed.postgres import Postgres, why_no_postgres
from testbed.tcp_relay import TcpRelay

DEVICES_PER_PROCESS = 50
WORKERS = 3


# ---------------------------------------------------------------------------------------- devices
def make_alert(device_id: str, sequence: int) -> dict:
    """A schema-valid alert of 3 cracks captured now (the size of a typical daemon alert)."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    severity = ("low", "medium", "high")[sequence % 3]
    cracks = [{"bbox": [40 * i, 100, 300, 12], "area_px": 900 + i, "length_px": 290.0 + i, "max_width_px": 4.0 + i,
               "mean_width_px": 2.5, "mean_probability": 0.87, "severity": severity} for i in range(3)]
    return {"schema_version": 1, "alert_id": uuid.uuid4().hex, "device_id": device_id, "sequence": sequence,
            "created_at": stamp, "capture_time": stamp, "source": "rtsp://camera/stream", "frame_index": sequence,
            "frame_size": {"width": 1920, "height": 1080},
            "model": {"name": "aelf-unet-w16", "sha256": "0" * 64, "threshold": 0.35, "precision": "int8"},
            "severity": severity, "coverage": 0.004, "gsd_mm_per_px": None, "cracks": cracks}


def run_devices(broker: str, first: int, count: int, rate_hz: float, duration_s: float, workdir: Path) -> None:
    """Device-process body: ``count`` publishers, each ``rate_hz`` alerts/s, evenly staggered; then close."""
    from edge.config import MqttConfig, OutboxConfig
    from edge.mqtt import MqttPublisher

    pubs = [MqttPublisher(f"dev{first + i:04d}", MqttConfig(
        broker_uri=broker, reconnect_min_s=0.5, reconnect_max_s=5,
        outbox=OutboxConfig(path=str(workdir / f"outbox-{first + i:04d}.sqlite3")))) for i in range(count)]
    produced: list[str] = []
    t0 = time.monotonic()
    ticks = int(duration_s * rate_hz)
    wait = threading.Event()
    for k in range(ticks):
        for i, pub in enumerate(pubs):
            delay = t0 + (k + i / count) / rate_hz - time.monotonic()
            if delay > 0:
                wait.wait(delay)
            alert = make_alert(pub.device_id, k)
            pub.publish_alert(alert)
            produced.append(alert["alert_id"])
    left = 0
    for pub in pubs:
        pub.close(timeout_s=60)
        left += pub.backlog().alerts
    (workdir / f"produced-{first}.json").write_text(json.dumps({"ids": produced, "left_in_outboxes": left}))


# ---------------------------------------------------------------------------------------- parts
def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes, seconds (0 for those gone)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


class Rig:
    """Central broker, optional vehicle broker + cuttable link, database, ingest workers, device processes."""

    def __init__(self, db_kind: str, workdir: Path, *, bridged: bool) -> None:
        self.workdir = workdir
        self.central = Mosquitto(workdir / "central", persistence=True).start()
        self.link = self.vehicle = None
        if bridged:
            self.link = TcpRelay(self.central.port).start()
            self.vehicle = Mosquitto(workdir / "vehicle", extra_lines=bridge_lines("vehicle", self.link.port)).start()
        self.pg = None
        if db_kind == "postgresql":
            self.pg = Postgres(fsync=True).start()
            self.db_url = self.pg.url
        else:
            self.db_url = f"sqlite:///{workdir / 'alerts.db'}"
        self.workers: dict[int, subprocess.Popen] = {}
        self._seen: dict[int, int] = {}

    @property
    def device_broker(self) -> str:
        return (self.vehicle or self.central).uri

    def start_worker(self, index: int) -> None:
        log = open(self.workdir / f"ingest-{index}.log", "ab")  # noqa: SIM115 - the child's stderr
        self.workers[index] = subprocess.Popen(
            ["nice", "-n", "19", sys.executable, "-m", "edge.ingest", "--broker", self.central.uri, "--db", self.db_url,
             "--index", str(index), "--client-id", f"bench-ingest-{index}",
             "--snapshot-dir", str(self.workdir / "snapshots")], cwd=REPO, stdout=log, stderr=log)
        log.close()

    def _subscriptions_logged(self, index: int) -> int:
        path = self.workdir / f"ingest-{index}.log"
        return path.read_text(errors="replace").count("subscribed to") if path.exists() else 0

    def wait_subscribed(self, index: int, timeout_s: float = 60) -> None:
        """Wait for the worker started last under ``index`` to log its subscription (bounded poll)."""
        deadline = time.monotonic() + timeout_s
        while self._subscriptions_logged(index) <= self._seen.get(index, 0):
            if self.workers[index].poll() is not None:
                raise RuntimeError(f"ingest worker {index} exited: see {self.workdir}/ingest-{index}.log")
            if time.monotonic() > deadline:
                raise TimeoutError(f"ingest worker {index} did not subscribe in {timeout_s} s")
            threading.Event().wait(0.1)
        self._seen[index] = self._subscriptions_logged(index)

    def stop_worker(self, index: int, sig: int = signal.SIGTERM) -> None:
        proc = self.workers[index]
        proc.send_signal(sig)
        proc.wait(60)

    def start_devices(self, n_devices: int, rate_hz: float, duration_s: float) -> list[subprocess.Popen]:
        procs = []
        for first in range(0, n_devices, DEVICES_PER_PROCESS):
            count = min(DEVICES_PER_PROCESS, n_devices - first)
            procs.append(subprocess.Popen(
                ["nice", "-n", "19", sys.executable, "-m", "benchmarks.bench_fleet", "--simulate-devices",
                 f"{first},{count}", "--broker", self.device_broker, "--rate-hz", str(rate_hz),
                 "--duration-s", str(duration_s), "--workdir", str(self.workdir)], cwd=REPO))
        return procs

    def produced(self) -> tuple[list[str], int]:
        ids, left = [], 0
        for path in sorted(self.workdir.glob("produced-*.json")):
            doc = json.loads(path.read_text())
            ids += doc["ids"]
            left += doc["left_in_outboxes"]
            path.unlink()
        return ids, left

    def rows(self) -> list[tuple[str, dt.datetime, dt.datetime]]:
        from sqlalchemy import select

        from edge.ingest import schema
        from edge.ingest.dburl import create_db_engine

        engine = create_db_engine(self.db_url, write=False)
        try:
            with engine.connect() as conn:
                a = schema.alerts
                return [tuple(r) for r in conn.execute(select(a.c.alert_id, a.c.capture_time, a.c.stored_at))]
        except Exception:  # noqa: BLE001 - restarting database: ask again
            return []
        finally:
            engine.dispose()

    def wait_stored(self, n: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and len(self.rows()) < n:
            threading.Event().wait(1.0)

    def cpu_parts(self) -> dict[str, list[int]]:
        parts = {"broker": [self.central.proc.pid], "workers": [p.pid for p in self.workers.values()]}
        if self.pg is not None:
            pid = int((self.pg.data / "postmaster.pid").read_text().split()[0])
            parts["database"] = [pid, *children(pid)]
        return parts

    def close(self) -> None:
        for proc in self.workers.values():
            if proc.poll() is None:
                proc.terminate()
                proc.wait(60)
        if self.link is not None:
            self.link.cut()
        for broker in (self.vehicle, self.central):
            if broker is not None:
                broker.stop()
        if self.pg is not None:
            self.pg.remove()


def worker_counters(workdir: Path) -> dict[str, int]:
    """Sum of the 'stopped: {...}' counters the workers logged (duplicates = redeliveries absorbed)."""
    total: dict[str, int] = {}
    for path in workdir.glob("ingest-*.log"):
        for line in path.read_text(errors="replace").splitlines():
            if "stopped: {" in line:
                for k, v in json.loads(line.split("stopped: ", 1)[1].replace("'", '"')).items():
                    total[k] = total.get(k, 0) + v
    return total


# ---------------------------------------------------------------------------------------- phases
def load_phase(db_kind: str, args: argparse.Namespace, root: Path) -> dict:
    rig = Rig(db_kind, root / f"load-{db_kind}", bridged=False)
    try:
        for i in range(WORKERS):
            rig.start_worker(i)
        for i in range(WORKERS):
            rig.wait_subscribed(i)
        parts = rig.cpu_parts()
        cpu0 = {k: cpu_seconds(v) for k, v in parts.items()}
        t0 = time.monotonic()
        devices = rig.start_devices(args.devices, args.rate_hz, args.duration_s)
        dev_cpu = 0.0
        while any(p.poll() is None for p in devices):
            dev_cpu = max(dev_cpu, cpu_seconds([p.pid for p in devices]))  # last reading before they exit
            threading.Event().wait(1.0)
        produced, left = rig.produced()
        rig.wait_stored(len(produced), 120)
        wall = time.monotonic() - t0
        parts = rig.cpu_parts()
        cpu = {k: (cpu_seconds(v) - cpu0.get(k, 0.0)) / wall * 100 for k, v in parts.items()}
        cpu["devices"] = dev_cpu / wall * 100
        rows = rig.rows()
        ids = [r[0] for r in rows]
        latencies = [(s - c).total_seconds() for _, c, s in rows]
        stored_times = sorted(s for _, _, s in rows)
        span = (stored_times[-1] - stored_times[0]).total_seconds() if len(stored_times) > 1 else float("nan")
        result = {"db": db_kind, "produced": len(produced), "stored": len(set(ids) & set(produced)),
                  "lost": len(set(produced) - set(ids)), "duplicate_rows": len(ids) - len(set(ids)),
                  "left_in_outboxes": left, "p50_s": quantile(latencies, 0.5), "p99_s": quantile(latencies, 0.99),
                  "rows_per_s": len(rows) / span, "cpu": cpu}
        # drain: workers stopped while devices publish; then the backlog is written as fast as it goes
        for i in range(WORKERS):
            rig.stop_worker(i)
        devices = rig.start_devices(args.devices, args.rate_hz, args.drain_s)
        for p in devices:
            p.wait()
        backlog, _ = rig.produced()
        before = {r[0] for r in rig.rows()}
        for i in range(WORKERS):
            rig.start_worker(i)
        for i in range(WORKERS):
            rig.wait_subscribed(i)
        parts = rig.cpu_parts()
        cpu0 = {k: cpu_seconds(v) for k, v in parts.items()}
        t1 = time.monotonic()
        rig.wait_stored(len(before) + len(backlog), 600)
        drain_wall = time.monotonic() - t1
        new = sorted(s for a, _, s in rig.rows() if a not in before)
        span = (new[-1] - new[0]).total_seconds() if len(new) > 1 else float("nan")
        # rows/s from the rows' own commit times: first to last row of the backlog
        result.update({"drain_backlog": len(backlog), "drain_stored": len(new), "drain_rows_per_s": len(new) / span,
                       "drain_cpu": {k: (cpu_seconds(v) - cpu0[k]) / drain_wall * 100
                                     for k, v in rig.cpu_parts().items()}})
        return result
    finally:
        rig.close()


def fault_phase(db_kind: str, args: argparse.Namespace, root: Path) -> dict:
    rig = Rig(db_kind, root / f"faults-{db_kind}", bridged=True)
    events: list[str] = []
    try:
        for i in range(WORKERS):
            rig.start_worker(i)
        for i in range(WORKERS):
            rig.wait_subscribed(i)
        t0 = time.monotonic()
        devices = rig.start_devices(args.devices, args.rate_hz, args.duration_s)

        def at(seconds: float) -> None:
            delay = t0 + seconds - time.monotonic()
            if delay > 0:
                threading.Event().wait(delay)

        at(args.duration_s * 0.15)
        rig.stop_worker(1, signal.SIGKILL)
        events.append(f"worker 1 SIGKILLed at {time.monotonic() - t0:.0f} s")
        at(args.duration_s * 0.15 + 5)
        rig.start_worker(1)
        events.append(f"restarted at {time.monotonic() - t0:.0f} s")
        if rig.pg is not None:
            at(args.duration_s * 0.3)
            rig.pg.stop()
            events.append(f"PostgreSQL stopped at {time.monotonic() - t0:.0f} s")
            at(args.duration_s * 0.3 + 10)
            rig.pg.start()
            events.append(f"started at {time.monotonic() - t0:.0f} s")
        at(args.duration_s * 0.45)
        rig.link.cut()
        events.append(f"bridge link cut at {time.monotonic() - t0:.0f} s")
        at(args.duration_s * 0.45 + args.cut_s)
        rig.link.restore()
        events.append(f"restored at {time.monotonic() - t0:.0f} s")
        for p in devices:
            p.wait()
        produced, left = rig.produced()
        rig.wait_stored(len(produced), 300)
        ids = [r[0] for r in rig.rows()]
        for i in range(WORKERS):
            rig.stop_worker(i)
        counters = worker_counters(rig.workdir)
        return {"db": db_kind, "produced": len(produced), "stored": len(set(ids) & set(produced)),
                "lost": len(set(produced) - set(ids)), "duplicate_rows": len(ids) - len(set(ids)),
                "left_in_outboxes": left, "redeliveries_absorbed": counters.get("duplicates", 0),
                "commit_failures": counters.get("commit_failures", 0), "events": "; ".join(events)}
    finally:
        rig.close()


def format_results(load: list[dict], faults: list[dict], args: argparse.Namespace) -> str:
    lines = ["| database | produced | stored | lost | duplicate rows | capture→commit p50 | p99 | rows/s | "
             "CPU % broker / workers (3) / database / devices | drain: backlog, rows/s | drain CPU % broker / workers / database |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|"]
    for r in load:
        cpu, dcpu = r["cpu"], r["drain_cpu"]
        lines.append(
            f"| {r['db']} | {r['produced']} | {r['stored']} | {r['lost']} | {r['duplicate_rows']} | "
            f"{r['p50_s'] * 1000:.0f} ms | {r['p99_s'] * 1000:.0f} ms | {r['rows_per_s']:.0f} | "
            f"{cpu.get('broker', 0):.0f} / {cpu.get('workers', 0):.0f} / {cpu.get('database', 0):.0f} / "
            f"{cpu.get('devices', 0):.0f} | {r['drain_backlog']}, {r['drain_rows_per_s']:.0f} | "
            f"{dcpu.get('broker', 0):.0f} / {dcpu.get('workers', 0):.0f} / {dcpu.get('database', 0):.0f} |")
    lines += ["", "| database (faults) | produced | stored | lost | duplicate rows | redeliveries absorbed | "
              "failed commits retried | left in outboxes | events |", "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in faults:
        lines.append(f"| {r['db']} | {r['produced']} | {r['stored']} | {r['lost']} | {r['duplicate_rows']} | "
                     f"{r['redeliveries_absorbed']} | {r['commit_failures']} | {r['left_in_outboxes']} | {r['events']} |")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_fleet", description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", type=int, default=200, help="simulated devices (default: %(default)s)")
    p.add_argument("--rate-hz", type=float, default=1.0, help="alerts per second per device (default: %(default)s)")
    p.add_argument("--duration-s", type=float, default=180.0, help="load and fault runs, seconds (default: %(default)s)")
    p.add_argument("--drain-s", type=float, default=30.0,
                   help="devices publish this long with the workers stopped, seconds (default: %(default)s)")
    p.add_argument("--cut-s", type=float, default=60.0, help="the bridge link is down this long, seconds (default: %(default)s)")
    p.add_argument("--db", default="sqlite,postgresql", help="databases, comma-separated (default: %(default)s)")
    p.add_argument("--skip-faults", action="store_true", help="only the load and drain runs")
    p.add_argument("--simulate-devices", default=None, help=argparse.SUPPRESS)  # FIRST,COUNT: a device process
    p.add_argument("--broker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--workdir", type=Path, default=None, help=argparse.SUPPRESS)
    add_results_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.simulate_devices:
        first, count = (int(x) for x in args.simulate_devices.split(","))
        run_devices(args.broker, first, count, args.rate_hz, args.duration_s, args.workdir)
        return 0
    kinds = [k.strip() for k in args.db.split(",") if k.strip()]
    if "postgresql" in kinds and why_no_postgres():
        print(f"skipping PostgreSQL: {why_no_postgres()}", file=sys.stderr)
        kinds.remove("postgresql")
    root = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    load, faults = [], []
    for kind in kinds:
        load.append(load_phase(kind, args, root))
        print(json.dumps(load[-1], default=str), flush=True)
        if not args.skip_faults:
            faults.append(fault_phase(kind, args, root))
            print(json.dumps(faults[-1], default=str), flush=True)
    title = (f"Fleet ingest: {args.devices} devices x {args.rate_hz:g} alert/s for {args.duration_s:g} s, "
             f"{WORKERS} ingest workers, mosquitto, SQLite / PostgreSQL")
    notes = ["Devices: edge.mqtt.MqttPublisher (outbox, QoS 1), 50 per process; workers: python -m edge.ingest "
             "(batch 200 / 0.1 s); everything on this one machine under nice, beside other load",
             "Latency: alert capture_time (set when published) to the row's stored_at (its transaction)",
             f"Faults: devices -> vehicle mosquitto -> bridge over a TCP link cut for {args.cut_s:g} s -> central; "
             "worker 1 SIGKILLed and restarted 5 s later; PostgreSQL stopped 10 s (fast shutdown) and started"]
    publish(section_header(title, command_line(__file__, argv), notes) + "\n"
            + format_results(load, faults, args), args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
