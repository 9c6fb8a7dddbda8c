"""Fault scenarios against a real mosquitto and real SQLite: each returns produced / received / duplicates.

Shared by the fault-injection tests (tests/faults/) and benchmarks/bench_reliability.py, so the table a
user reruns is the same code the tests assert on. Every scenario counts an alert as received once per
distinct ``alert_id`` (the documented at-least-once de-duplication); deliveries beyond the first are
counted as duplicates. Timeouts, keep-alives and back-offs are small so a scenario takes seconds.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from edge.mqtt import MqttPublisher
from edge.subscribe import AlertSink, Subscriber
from testbed.mosquitto import Mosquitto
from testbed.mqtt import Daemon, LogWatcher, make_alert, make_tls_material, mqtt_section, outbox_at

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

    def __init__(self, broker: Mosquitto, name: str, **credentials: str) -> None:
        self.sink = AlertSink(None)
        self.sub = Subscriber(broker.uri, self.sink, client_id=f"fault-{name}"[:60], session_expiry_s=600,
                              on_line=lambda line: None, allow_insecure_credentials=True, **credentials).start()
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


def _publisher(broker: Mosquitto, outbox_path: Path, device: str = "cam1", **kw: object) -> MqttPublisher:
    outbox_kw = kw.pop("outbox", None)
    return MqttPublisher(device, mqtt_section(broker.uri, outbox_path, outbox=outbox_kw, **{**FAST, **kw}))


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
        assert pub.outbox is not None
        recovered, unreadable = pub.outbox.recovered, pub.outbox.unrecoverable
        rx.wait_for(salvaged | new_ids)
        pub.flush(WAIT_S)
        return rx.tally("corrupt outbox (8 KiB overwritten)", ids, recovered=recovered, reported_lost=unreadable,
                        moved_aside=pub.outbox.damaged_copy is not None)
    finally:
        pub.close(timeout_s=2)
        rx.stop()
        broker.stop()


def _stored_alerts(outbox: Path, n: int, n_cracks: int = 12) -> list[dict]:
    """`n` alerts written to a fresh outbox at `outbox` (then closed): what a daemon had queued."""
    box = outbox_at(outbox)
    alerts = [make_alert(sequence=i, n_cracks=n_cracks) for i in range(n)]
    with contextlib.closing(box):
        for alert in alerts:
            box.put(alert)
    return alerts


TRUNCATIONS = {"half": lambda size: size // 2, "16k": lambda size: size - 16384, "4k": lambda size: size - 4096}


def truncated_outbox(workdir: Path, cut: str) -> Tally:
    """An outbox holding 90 alerts is cut short (to half its length, or by 16 KiB / 4 KiB at its end)
    and the daemon starts on it: what the bytes still hold is delivered, the rest is reported lost."""
    broker = _broker(workdir)
    outbox = workdir / "outbox.sqlite3"
    stored = _stored_alerts(outbox, 90)
    os.truncate(outbox, TRUNCATIONS[cut](outbox.stat().st_size))
    rx = Receiver(broker, f"truncated-{cut}")
    pub = _publisher(broker, outbox)
    try:
        assert pub.outbox is not None
        salvaged = {r.alert_id for r in pub.outbox.pending(100)}
        rx.wait_for(salvaged)
        pub.flush(WAIT_S)
        return rx.tally(f"outbox truncated ({cut})", {a["alert_id"] for a in stored},
                        recovered=pub.outbox.recovered, reported_lost=pub.outbox.unrecoverable,
                        loss_counted=not pub.outbox.uncounted_loss)
    finally:
        pub.close(timeout_s=2)
        rx.stop()
        broker.stop()


def damaged_payloads(workdir: Path) -> Tally:
    """4 bytes change inside 3 of 30 stored alert payloads (SQLite's quick_check still says ok): the
    3 are quarantined and reported, never published garbled; the other 27 arrive."""
    broker = _broker(workdir)
    outbox = workdir / "outbox.sqlite3"
    stored = _stored_alerts(outbox, 30)
    data = bytearray(outbox.read_bytes())
    for alert in stored[5:8]:
        at = data.find(f'"alert_id":"{alert["alert_id"]}"'.encode())
        data[at + 200:at + 204] = b"\xff\xfe\x00\x01"  # inside its cracks: not UTF-8 any more
    outbox.write_bytes(bytes(data))
    check = sqlite3.connect(outbox)
    quick_check = check.execute("PRAGMA quick_check").fetchone()[0]
    check.close()
    rx = Receiver(broker, "damaged-payloads")
    pub = _publisher(broker, outbox)
    try:
        ids = {a["alert_id"] for a in stored}
        rx.wait_for(ids - {a["alert_id"] for a in stored[5:8]})
        pub.flush(WAIT_S)
        assert pub.outbox is not None
        return rx.tally("4 bytes changed in 3 stored payloads", ids, quick_check=quick_check,
                        reported_lost=pub.outbox.corrupted, garbled_published=len(rx.sink.invalid))
    finally:
        pub.close(timeout_s=2)
        rx.stop()
        broker.stop()


def freed_disk(workdir: Path) -> Tally:
    """The outbox's file system fills up while the broker is down; after the filler is deleted a second
    outage of 80 alerts must fit in the freed space (the write-ahead log must not eat it)."""
    broker = _broker(workdir)
    rx = Receiver(broker, "freed-disk")
    with small_filesystem(1024) as fs:
        pub = _publisher(broker, fs / "outbox.sqlite3", outbox={"wal_max_bytes": 64 * 1024})
        try:
            broker.stop()
            ids = _produce(pub, 5)
            filler = fill(fs)
            ids |= _produce(pub, 10, start=5)  # held in memory
            full_seen = pub.storage_error is not None
            filler.unlink()
            ids |= _produce(pub, 80, start=15)  # the second outage: into the freed space
            state = pub.stats()
            broker.start()
            rx.wait_for(ids)
            pub.flush(WAIT_S)
            return rx.tally("freed disk works again", ids, full_seen=full_seen,
                            error_after_freeing=state["outbox_storage_error"],
                            in_file_after_freeing=state["outbox_pending"], held=state["alerts_held_in_memory"])
        finally:
            pub.close(timeout_s=2)
            rx.stop()
            broker.stop()


def storage_fails_at_start(workdir: Path) -> Tally:
    """The outbox's directory cannot be made at start (its parent is a file): the daemon starts anyway,
    holds alerts in memory and delivers them; once the directory can be made the file is used."""
    broker = _broker(workdir)
    rx = Receiver(broker, "storage-at-start")
    blocker = workdir / "state"
    blocker.write_text("a file where the outbox's directory should be")
    pub = _publisher(broker, blocker / "outbox.sqlite3", outbox={"reopen_interval_s": 0.2})
    try:
        started_without = pub.outbox is None
        ids = _produce(pub, 5)
        rx.wait_for(ids)
        blocker.unlink()
        pub.wait_outbox(WAIT_S)
        ids |= _produce(pub, 5, start=5)
        in_file = pub.outbox is not None and (blocker / "outbox.sqlite3").is_file()
        rx.wait_for(ids)
        pub.flush(WAIT_S)
        return rx.tally("outbox cannot be opened at start", ids, started_without_outbox=started_without,
                        reopened=in_file)
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


def echo_denied_311(workdir: Path) -> Tally:
    """MQTT 3.1.1, and the broker lets the camera write its alert topic but not read it back: the echo that
    proves acceptance never comes. Every alert still reaches the subscriber (newer ones are not starved
    by re-sends of older ones), the cause is logged once, and granting read empties the outbox."""
    if shutil.which("mosquitto_passwd") is None:
        raise PermissionError("mosquitto_passwd not installed (Debian package 'mosquitto')")
    passwd, acl = workdir / "passwd", workdir / "acl"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwd), "cam1", "cam1-secret"], check=True)
    subprocess.run(["mosquitto_passwd", "-b", str(passwd), "viewer", "viewer-secret"], check=True)
    (workdir / "cam1.pw").write_text("cam1-secret\n")
    viewer = "user viewer\ntopic read crack/#\n"
    acl.write_text(f"user cam1\ntopic write crack/cam1/alert\ntopic readwrite crack/cam1/status\n{viewer}")
    broker = _broker(workdir, password_file=passwd, acl_file=acl)
    rx = Receiver(broker, "echo-denied", username="viewer", password="viewer-secret")
    pub = _publisher(broker, workdir / "outbox.sqlite3", protocol="3.1.1", username="cam1",
                     password_file=str(workdir / "cam1.pw"), allow_insecure_credentials=True,
                     max_inflight=3, echo_timeout_s=0.3)
    try:
        ids = _produce(pub, 12)
        all_arrived = rx.wait_for(ids)
        kept = pub.waiting()
        acl.write_text(f"user cam1\ntopic readwrite crack/cam1/#\n{viewer}")
        broker.reload()
        emptied = pub.flush(WAIT_S)
        return rx.tally("3.1.1, no read access to its own alert topic", ids, all_arrived_while_denied=all_arrived,
                        kept_while_unconfirmed=kept, emptied_after_grant=emptied)
    finally:
        pub.close(timeout_s=2)
        rx.stop()
        broker.stop()


def wrong_ca(workdir: Path) -> Tally:
    """The camera trusts the wrong CA for an mqtts:// broker: alerts wait in the outbox and the cause is
    named (a certificate problem, which file, which setting); restarted with the right CA, all arrive."""
    try:
        tls = make_tls_material(workdir / "tls")
        other = make_tls_material(workdir / "other-ca")
    except ImportError as exc:
        raise PermissionError(f"the [dev] extra's cryptography is needed to make certificates: {exc}") from exc
    broker = _broker(workdir, tls={"ca": tls["ca"], "cert": tls["server_cert"], "key": tls["server_key"]})
    rx = Receiver(broker, "wrong-ca", ca_file=str(tls["ca"]))
    watcher = LogWatcher()
    logging.getLogger("edge.mqtt").addHandler(watcher)
    outbox = workdir / "outbox.sqlite3"
    started = time.monotonic()
    pub = _publisher(broker, outbox, tls={"ca_file": other["ca"]})
    try:
        named = watcher.wait_for("TLS certificate problem", WAIT_S)
        named_after_s = time.monotonic() - started
        line = next((m for m in watcher.messages if "TLS certificate problem" in m), "")
        ids = _produce(pub, 5)
        pub.close(timeout_s=0)
        pub = _publisher(broker, outbox, tls={"ca_file": tls["ca"]})
        rx.wait_for(ids)
        pub.flush(WAIT_S)
        return rx.tally("wrong CA, then the right one", ids, cause_named=named and "mqtt.tls.ca_file" in line,
                        named_after_s=round(named_after_s, 1))
    finally:
        logging.getLogger("edge.mqtt").removeHandler(watcher)
        pub.close(timeout_s=2)
        rx.stop()
        broker.stop()


SCENARIOS: dict[str, Callable[[Path], Tally]] = {
    "broker_stop_start": broker_stop_start,
    "broker_sigkill": broker_sigkill,
    "daemon_sigkill_restart": daemon_sigkill_restart,
    "disk_full": disk_full,
    "corrupt_outbox": corrupt_outbox,
    "truncated_outbox_half": lambda w: truncated_outbox(w, "half"),
    "truncated_outbox_16k": lambda w: truncated_outbox(w, "16k"),
    "truncated_outbox_4k": lambda w: truncated_outbox(w, "4k"),
    "damaged_payloads": damaged_payloads,
    "freed_disk": freed_disk,
    "storage_fails_at_start": storage_fails_at_start,
    "acl_denial_311": lambda w: acl_denial(w, "3.1.1"),
    "acl_denial_5": lambda w: acl_denial(w, "5"),
    "echo_denied_311": echo_denied_311,
    "wrong_ca": wrong_ca,
    "device_id_change": device_id_change,
    "hostile_payloads": hostile_subscriber_input,
}
