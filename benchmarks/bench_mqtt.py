"""MQTT alert delivery benchmark against a real local mosquitto: load (no loss, latency) and a broker outage.

    python -m benchmarks.bench_mqtt                       # 1,000 alerts/s for 10 s, then a 10 s outage run
    python -m benchmarks.bench_mqtt --rate 1000 --duration-s 10 --outage-s 10 --no-append

Load phase: MqttPublisher (outbox + QoS 1) publishes `--rate` alerts/s for `--duration-s`; the
subscriber (edge.subscribe.AlertSink: schema validation + de-dup) records each alert's receipt time.
Latency = receipt time - the alert's created_at (same clock, one machine). Outage phase: alerts at
`--outage-rate`/s while the broker is stopped for `--outage-s` s and then restarted; every alert must
arrive once after de-duplication. Prints a table and appends it to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
from tqdm import tqdm

from benchmarks.common import add_results_args, command_line, publish, section_header
from edge.config import MqttConfig, OutboxConfig
from edge.mqtt import MqttPublisher
from edge.subscribe import AlertSink, Subscriber
from testbed.mosquitto import Mosquitto


def bench_alert(sequence: int) -> dict:
    """A schema-valid alert (edge/schemas/alert.schema.json) with one crack, as the daemon publishes."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    crack = {"bbox": [0, 5, 40, 8], "area_px": 120, "length_px": 40.0, "max_width_px": 3.0, "mean_width_px": 2.0,
             "mean_probability": 0.9, "severity": "low"}
    return {
        "schema_version": 1, "alert_id": uuid.uuid4().hex, "device_id": "bench", "sequence": sequence,
        "created_at": stamp, "capture_time": stamp, "source": "file:///data/road.mp4", "frame_index": sequence,
        "frame_size": {"width": 1920, "height": 1080},
        "model": {"name": "aelf-unet-w8", "sha256": "0" * 64, "threshold": 0.5, "precision": "fp32"},
        "severity": "low", "coverage": 0.01, "gsd_mm_per_px": None, "cracks": [crack],
    }


class TimedSink(AlertSink):
    """AlertSink that also records when each new alert arrived (and counts raw deliveries)."""

    def __init__(self) -> None:
        super().__init__(None)
        self.latency_s: list[float] = []
        self.first_t = self.last_t = 0.0
        self.deliveries = 0

    def handle_alert(self, topic: str, payload: bytes):  # noqa: ANN201 - same as the parent
        now = time.time()
        self.deliveries += 1
        result = super().handle_alert(topic, payload)
        if result.kind == "new":
            created = dt.datetime.fromisoformat(result.alert["created_at"].replace("Z", "+00:00")).timestamp()
            self.latency_s.append(now - created)
            self.first_t = self.first_t or now
            self.last_t = now
        return result


def paced_publish(pub: MqttPublisher, rate: float, duration_s: float, label: str,
                  during: list[tuple[float, callable]] | None = None) -> list[str]:
    """Publish alerts at `rate`/s for `duration_s`; run each (at_s, action) of `during` once when due."""
    n = int(rate * duration_s)
    ids, pending = [], sorted(during or [], key=lambda x: x[0])
    t0 = time.monotonic()
    for i in tqdm(range(n), desc=label, unit="alert", mininterval=1.0):
        while pending and time.monotonic() - t0 >= pending[0][0]:
            pending.pop(0)[1]()
        delay = t0 + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)  # pacing the load generator, not waiting for a result
        alert = bench_alert(i)
        pub.publish_alert(alert)
        ids.append(alert["alert_id"])
    for _, action in pending:
        action()
    return ids


def run_phase(workdir: Path, name: str, rate: float, duration_s: float, outage_s: float = 0.0,
              drain_timeout_s: float = 120.0) -> dict:
    broker = Mosquitto(workdir / f"broker-{name}").start()
    sink = TimedSink()
    sub = Subscriber(broker.uri, sink, client_id=f"bench-sub-{name}", session_expiry_s=600,
                     on_line=lambda line: None).start()
    if not sub.subscribed.wait(10):
        raise RuntimeError("subscriber did not subscribe")
    section = MqttConfig(broker_uri=broker.uri, max_inflight=100, reconnect_min_s=0.2, reconnect_max_s=2.0,
                         stats_interval_s=0, outbox=OutboxConfig(path=str(workdir / f"outbox-{name}.sqlite3")))
    pub = MqttPublisher("bench", section)
    pub.wait_connected(10)
    during = []
    if outage_s > 0:
        start = (duration_s - outage_s) / 2
        during = [(start, broker.stop), (start + outage_s, broker.start)]
    t0 = time.monotonic()
    ids = paced_publish(pub, rate, duration_s, name, during)
    publish_s = time.monotonic() - t0
    sink.wait_for(lambda s: len(s.alerts) >= len(ids), drain_timeout_s)
    got = {a["alert_id"] for a in sink.alerts}
    pub.close(timeout_s=5)
    sub.stop()
    broker.stop()
    lat_ms = np.array(sink.latency_s) * 1000.0
    return {
        "phase": name, "rate": rate, "duration_s": duration_s, "outage_s": outage_s, "sent": len(ids),
        "received": len(got & set(ids)), "lost": len(set(ids) - got), "raw_deliveries": sink.deliveries,
        "duplicates_dropped": sink.duplicates, "publish_s": publish_s,
        "throughput": len(got) / max(1e-9, sink.last_t - sink.first_t) if len(got) > 1 else 0.0,
        "p50_ms": float(np.percentile(lat_ms, 50)) if lat_ms.size else float("nan"),
        "p99_ms": float(np.percentile(lat_ms, 99)) if lat_ms.size else float("nan"),
        "max_ms": float(lat_ms.max()) if lat_ms.size else float("nan"),
    }


def table(rows: list[dict]) -> str:
    head = ("| phase | rate (alerts/s) | duration (s) | outage (s) | sent | received | lost | duplicates dropped "
            "| throughput (alerts/s) | latency p50 (ms) | p99 (ms) | max (ms) |")
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        lines.append(f"| {r['phase']} | {r['rate']:.0f} | {r['duration_s']:.0f} | {r['outage_s']:.0f} | {r['sent']} "
                     f"| {r['received']} | {r['lost']} | {r['duplicates_dropped']} | {r['throughput']:.0f} "
                     f"| {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['max_ms']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_mqtt", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=float, default=1000.0, help="load phase alerts per second (default: %(default)s)")
    p.add_argument("--duration-s", type=float, default=10.0, help="load phase length, s (default: %(default)s)")
    p.add_argument("--outage-s", type=float, default=10.0,
                   help="broker down this long in the outage phase, s; 0 skips the phase (default: %(default)s)")
    p.add_argument("--outage-rate", type=float, default=50.0,
                   help="alerts per second during the outage phase (default: %(default)s)")
    add_results_args(p)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-mqtt-") as tmp:
        rows = [run_phase(Path(tmp), "load", args.rate, args.duration_s)]
        if args.outage_s > 0:
            rows.append(run_phase(Path(tmp), "outage", args.outage_rate, args.outage_s + 4.0, args.outage_s))
    notes = ["mosquitto on 127.0.0.1 (same machine). Latency: alert created_at -> validated at the subscriber "
             "(QoS 1, outbox commit synchronous=NORMAL)."]
    header = section_header("MQTT alert delivery (bench_mqtt.py)", command_line(__file__, argv), notes)
    publish(header + table(rows), args)
    ok = all(r["lost"] == 0 for r in rows)
    print("no loss" if ok else "LOSS: some alerts did not arrive")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
