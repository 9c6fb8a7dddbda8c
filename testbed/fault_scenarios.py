"""Fault scenarios against a real mosquitto and real SQLite: each returns produced / received / duplicates.

Shared by the fault-injection tests (tests/faults/) and benchmarks/bench_reliability.py, so the table a
user reruns is the same code the tests assert on. Every scenario counts an alert as received once per
distinct ``alert_id`` (the documented at-least-once de-duplication); deliveries beyond the first are
counted as duplicates. Timeouts, keep-alives and back-offs are small so a scenario takes seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from edge.mqtt import MqttPublisher
from edge.subscribe import AlertSink, Subscriber
from testbed.mosquitto import Mosquitto
from testbed.mqtt import Daemon, make_alert, mqtt_section, outbox_at

WAIT_S = 60.0  # upper bound of any wait for an event (a loaded CI machine); scenarios take seconds
FAST = {"reconnect_min_s": 0.1, "reconnect_max_s": 0.5, "keepalive_s": 5, "stats_interval_s": 0}


@dataclass
class Tally:
    """What one scenario produced and what a de-duplicating subscriber received."""

    scenario: str
    produced: int
    received: int  # distinct produced alert_ids that arrived
    duplicates: int  # deliveries beyond the first of an alert_id (removed by the subscriber's de-duplication)
    foreign: int = 0  # alerts that arrived but were never produced (must be 0)
    unique_after_dedup: int = 0  # distinct alert_ids among the alerts the subscriber kept
    duplicated_after_dedup: int = 0  # alerts the subscriber kept more than once (must be 0)
    notes: dict[str, object] = field(default_factory=dict)

    @property
    def lost(self) -> int:
        return self.produced - self.received

    def row(self) -> str:
        extra = ", ".join(f"{k}={v}" for k, v in self.notes.items())
        return (f"| {self.scenario} | {self.produced} | {self.received} | {self.lost} | {self.duplicates} | "
                f"{self.duplicated_after_dedup} | {extra} |")


class Receiver:
    """A subscriber with a persistent session (the broker queues alerts for it across its restarts)."""

    def __init__(self, broker: Mosquitto, name: str) -> None:
        self.sink = AlertSink(None)
        self.sub = Subscriber(broker.uri, self.sink, client_id=f"fault-{name}"[:60], session_expiry_s=600,
                              on_line=lambda line: None).start()
        if not self.sub.subscribed.wait(WAIT_S):
            raise TimeoutError("receiver did not subscribe")

    def wait_for(self, ids: set[str], timeout_s: float = WAIT_S) -> bool:
        return self.sink.wait_for(lambda s: ids <= s.seen, timeout_s)

    def tally(self, scenario: str, ids: set[str], **notes: object) -> Tally:
        kept = [a["alert_id"] for a in self.sink.alerts]
        return Tally(scenario, len(ids), len(ids & self.sink.seen), self.sink.duplicates,
                     foreign=len(set(kept) - ids), unique_after_dedup=len(set(kept)),
                     duplicated_after_dedup=len(kept) - len(set(kept)), notes=dict(notes))

    def stop(self) -> None:
        self.sub.stop()


def _broker(workdir: Path, **kw: object) -> Mosquitto:
    return Mosquitto(workdir / "broker", save_every_change=True, **kw).start()


def _publisher(broker: Mosquitto, outbox: Path, device: str = "cam1", **kw: object) -> MqttPublisher:
    outbox_kw = kw.pop("outbox", None)
    return MqttPublisher(device, mqtt_section(broker.uri, outbox, outbox=outbox_kw, **{**FAST, **kw}))


def _produce(pub: MqttPublisher, n: int, start: int = 0, device: str = "cam1") -> set[str]:
    alerts = [make_alert(device, sequence=start + i, n_cracks=3) for i in range(n)]
    for alert in alerts:
        pub.publish_alert(alert)
    return {a["alert_id"] for a in alerts}


# ----------------------------------------------------------------------------- broker faults


def broker_stop_start(workdir: Path) -> Tally:
    """The broker stops cleanly while alerts keep coming, then starts again."""
    broker = _broker(workdir)
    rx = Receiver(broker, "stop-start")
    pub = _publisher(broker, workdir / "outbox.sqlite3")
    try:
        ids = _produce(pub, 10)
        broker.stop()
        ids |= _produce(pub, 10, start=10)
        broker.start()
        rx.wait_for(ids)
        pub.flush(WAIT_S)
        return rx.tally("broker stop / start", ids, outbox_left=pub.waiting())
    finally:
        pub.close(timeout_s=2)
        rx.stop()
        broker.stop()


def broker_sigkill(workdir: Path) -> Tally:
    """The broker is SIGKILLed (no clean shutdown) while alerts keep coming, then starts again."""
    broker = _broker(workdir)
    rx = Receiver(broker, "sigkill")
    pub = _publisher(broker, workdir / "outbox.sqlite3")
    try:
        ids = _produce(pub, 10)
        rx.wait_for(ids)
        broker.kill()
        ids |= _produce(pub, 10, start=10)
        broker.start()
        rx.wait_for(ids)
        pub.flush(WAIT_S)
        return rx.tally("broker SIGKILL", ids, outbox_left=pub.waiting())
    finally:
        pub.close(timeout_s=2)
        rx.stop()
        broker.stop()


def daemon_sigkill_restart(workdir: Path) -> Tally:
    """The daemon process is SIGKILLed right after storing 50 alerts (some sent, some not), then restarted."""
    broker = _broker(workdir)
    rx = Receiver(broker, "daemon-kill")
    outbox = workdir / "daemon.sqlite3"
    try:
        first = Daemon(broker.uri, outbox, alerts=50)
        first.wait_line("stored 50", WAIT_S)
        first.kill()
        box = outbox_at(outbox)
        with contextlib.closing(box):
            left = len(box)
        produced = {line.split()[1] for line in first.lines if line.startswith("alert ")}
        second = Daemon(broker.uri, outbox)
        try:
            second.wait_line("connected", WAIT_S)
            rx.wait_for(produced)
        finally:
            second.kill()
        return rx.tally("daemon SIGKILL + restart", produced, left_after_kill=left)
    finally:
        rx.stop()
        broker.stop()


# ----------------------------------------------------------------------------- storage faults


@contextlib.contextmanager
def small_filesystem(size_kib: int) -> Iterator[Path]:
    """A tmpfs of `size_kib` KiB mounted on a fresh directory (root only), unmounted afterwards."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        raise PermissionError("mounting a small tmpfs needs root and mount(8)")
    mount_point = Path(tempfile.mkdtemp(prefix="aelf-small-fs-"))
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(mount_point)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        mount_point.rmdir()
        raise PermissionError(f"cannot mount a tmpfs: {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)
        mount_point.rmdir()


def fill(directory: Path) -> Path:
    """Fill the file system of `directory` to the last byte with one file; return it (delete it to free)."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for block in (65536, 4096, 512, 1):  # unbuffered writes, smaller and smaller until none fits
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * block)
    finally:
        os.close(fd)
    return filler


def disk_full(workdir: Path) -> Tally:
    """The outbox's file system fills up while the broker is down; space comes back after it is up."""
    broker = _broker(workdir)
    rx = Receiver(broker, "disk-full")
    with small_filesystem(1024) as fs:
        pub = _publisher(broker, fs / "outbox.sqlite3")
        try:
            broker.stop()
            ids = _produce(pub, 5)  # stored in the file
            filler = fill(fs)
            ids |= _produce(pub, 10, start=5)  # the file cannot take them: held in memory
            state = pub.stats()
            broker.start()
            rx.wait_for(ids)
            filler.unlink()
            ids |= _produce(pub, 5, start=15)  # space again: stored in the file
            rx.wait_for(ids)
            emptied = pub.flush(WAIT_S)
            return rx.tally("disk full under the outbox", ids, storage_error_seen=state["outbox_storage_error"] is not None,
                            held_in_memory=state["alerts_held_in_memory"], outbox_emptied=emptied)
        finally:
            pub.close(timeout_s=2)
            rx.stop()
            broker.stop()


def corrupt_outbox(workdir: Path) -> Tally:
    """8 KiB in the middle of an outbox holding 40 alerts is overwritten; the daemon starts on it."""
    broker = _broker(workdir)
    outbox = workdir / "outbox.sqlite3"
    box = outbox_at(outbox)
    stored = [make_alert(sequence=i, n_cracks=12) for i in range(40)]
    for alert in stored:
        box.put(alert)
    box.close()
    size = outbox.stat().st_size
    with open(outbox, "r+b") as fh:
        fh.seek(size // 2)
        fh.write(os.urandom(8192))
    rx = Receiver(broker, "corrupt")
    pub = _publisher(broker, outbox)
    try:
        salvaged = {r.alert_id for r in pub.outbox.pending(100)}
        new_ids = _produce(pub, 10, start=40)
        ids = {a["alert_id"] for a in stored} | new_ids
        recovered, unreadable = pub.outbox.recovered, pub.outbox.unrecoverable
        rx.wait_for(salvaged | new_ids)
        pub.flush(WAIT_S)
        tally = rx.tally("corrupt outbox (8 KiB overwritten)", ids, recovered=recovered, unreadable=unreadable,
                         moved_aside=pub.outbox.damaged_copy is not None)
        tally.notes["destroyed_by_damage"] = tally.lost
        return tally
    finally:
        pub.close(timeout_s=2)
        rx.stop()
        broker.stop()


# ----------------------------------------------------------------------------- broker policy


def acl_denial(workdir: Path, protocol: str) -> Tally:
    """The broker's ACL denies the alert topic, then the operator fixes it (SIGHUP reload)."""
    acl = workdir / "acl"
    acl.write_text("topic read crack/#\ntopic readwrite crack/cam1/status\n")
    broker = _broker(workdir, acl_file=acl)
    rx = Receiver(broker, f"acl-{protocol}")
    pub = _publisher(broker, workdir / "outbox.sqlite3", protocol=protocol, echo_timeout_s=0.5,
                     reconnect_max_s=0.5)
    try:
        if not pub.wait_connected(WAIT_S):
            raise TimeoutError("publisher did not connect")
        ids = _produce(pub, 5)
        kept = not pub.flush(3.0)  # denied: nothing may leave the outbox
        kept_count = pub.waiting()
        acl.write_text("topic read crack/#\ntopic readwrite crack/cam1/#\n")
        broker.reload()
        rx.wait_for(ids)
        pub.flush(WAIT_S)
        return rx.tally(f"ACL denies the topic, MQTT {protocol}", ids, kept_while_denied=kept_count if kept else 0)
    finally:
        pub.close(timeout_s=2)
        rx.stop()
        broker.stop()


def device_id_change(workdir: Path) -> Tally:
    """Alerts queued by device 'vm' stay queued when the daemon restarts as 'nc-cam1' (and reach 'vm' later)."""
    broker = _broker(workdir)
    outbox = workdir / "outbox.sqlite3"
    rx = Receiver(broker, "device-change")
    broker.stop()
    old = _publisher(broker, outbox, device="vm")
    vm_ids = _produce(old, 9, device="vm")
    old.close(timeout_s=0)  # the broker is down: all 9 stay queued
    broker.start()
    new = _publisher(broker, outbox, device="nc-cam1")
    try:
        cam_ids = _produce(new, 3, device="nc-cam1")
        rx.wait_for(cam_ids)
        new.flush(WAIT_S)
        vm_kept = new.outbox.other_devices("nc-cam1").get("vm", 0)
    finally:
        new.close(timeout_s=2)
    back = _publisher(broker, outbox, device="vm")
    try:
        rx.wait_for(vm_ids)
        back.flush(WAIT_S)
        misrouted = [a for a in rx.sink.alerts if a["alert_id"] in vm_ids and a["device_id"] != "vm"]
        return rx.tally("device id changed with alerts queued", vm_ids | cam_ids, vm_kept_by_other=vm_kept,
                        misrouted=len(misrouted), invalid=len(rx.sink.invalid))
    finally:
        back.close(timeout_s=2)
        rx.stop()
        broker.stop()


# ----------------------------------------------------------------------------- hostile input


def hostile_payloads() -> list[tuple[str, bytes]]:
    """Messages an attacker (or a broken client) can publish on an alert topic."""
    valid = make_alert()
    surrogate = json.dumps({**valid, "alert_id": "\ud800" + "a" * 31}).encode("ascii")  # \\ud800 escape, ASCII
    return [
        ("deep nesting", b"[" * 1100 + b"]" * 1100),
        ("deep nesting in an object", b'{"a":' * 1100 + b"1" + b"}" * 1100),
        ("huge integer", b'{"n": ' + b"9" * 5000 + b"}"),
        ("huge float", json.dumps({**valid, "coverage": 0}, separators=(",", ":")).encode()
         .replace(b'"coverage":0', b'"coverage":1e999')),
        ("NaN", b'{"coverage": NaN}'),
        ("bad UTF-8", b'{"alert_id": "\xff\xfe"}'),
        ("lone surrogate in alert_id", surrogate),
        ("10 MB payload", b'{"pad": "' + b"x" * (10 * 1024 * 1024) + b'"}'),
        ("binary", os.urandom(4096)),
        ("empty", b""),
    ]


def hostile_subscriber_input(workdir: Path) -> Tally:
    """Every hostile payload, each followed by a valid alert, to a running subscriber: none may make it deaf."""
    import paho.mqtt.client as mqtt

    broker = _broker(workdir)
    rx = Receiver(broker, "hostile")
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fault-attacker")
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        ids: set[str] = set()
        hostile = hostile_payloads()
        for i, (_, payload) in enumerate(hostile):
            client.publish("crack/cam1/alert", payload, qos=1).wait_for_publish(WAIT_S)
            alert = make_alert(sequence=i)
            client.publish("crack/cam1/alert", json.dumps(alert).encode(), qos=1).wait_for_publish(WAIT_S)
            ids.add(alert["alert_id"])
        rx.wait_for(ids)
        rx.sink.wait_for(lambda s: len(s.invalid) >= len(hostile), WAIT_S)
        return rx.tally("hostile payloads to the subscriber", ids, hostile=len(hostile),
                        rejected=len(rx.sink.invalid), callback_errors=rx.sub.callback_errors)
    finally:
        client.loop_stop()
        client.disconnect()
        rx.stop()
        broker.stop()


SCENARIOS: dict[str, Callable[[Path], Tally]] = {
    "broker_stop_start": broker_stop_start,
    "broker_sigkill": broker_sigkill,
    "daemon_sigkill_restart": daemon_sigkill_restart,
    "disk_full": disk_full,
    "corrupt_outbox": corrupt_outbox,
    "acl_denial_311": lambda w: acl_denial(w, "3.1.1"),
    "acl_denial_5": lambda w: acl_denial(w, "5"),
    "device_id_change": device_id_change,
    "hostile_payloads": hostile_subscriber_input,
}
