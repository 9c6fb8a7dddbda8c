"""Fault injection: real mosquitto, real SQLite, a real full file system; produced = received, no duplicate.

Each scenario lives in testbed/fault_scenarios.py (benchmarks/bench_reliability.py prints the same table).
The delivery rule under test (docs/MQTT.md): an alert leaves the outbox only when the broker accepted it
for the device that raised it; a storage failure is an explicit state; no exception in a paho callback
stops the network loop.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import mqtt_fixtures
import pytest

import testbed.fault_scenarios as fs
from edge.mqtt import MqttPublisher
from edge.outbox import OutboxError
from testbed.mosquitto import find_mosquitto, free_port
from testbed.mqtt import REPO, make_alert, mqtt_section, outbox_at

pytestmark = [pytest.mark.faults, pytest.mark.mqtt,
              pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto binary not installed")]
log_watcher = mqtt_fixtures.log_watcher  # the fixture, under its name for the tests here


def assert_exact(tally: fs.Tally, *, redelivery_allowed: bool = False) -> None:
    """Every produced alert received exactly once after de-duplication by alert_id, nothing foreign;
    without `redelivery_allowed` (a broker or daemon crash) not even a raw duplicate delivery."""
    assert (tally.received, tally.lost, tally.foreign) == (tally.produced, 0, 0), tally
    assert (tally.unique_after_dedup, tally.duplicated_after_dedup) == (tally.received, 0), tally
    if not redelivery_allowed:
        assert tally.duplicates == 0, tally


def test_broker_stop_start_loses_nothing(tmp_path: Path) -> None:
    tally = fs.broker_stop_start(tmp_path)
    # the broker stops right after the first alerts go out: one it forwarded before its PUBACK reached the
    # daemon is sent again after the restart (QoS 1 is at-least-once; the subscriber de-duplicates by alert_id)
    assert_exact(tally, redelivery_allowed=True)
    assert tally.notes["outbox_left"] == 0


def test_broker_sigkill_loses_nothing(tmp_path: Path) -> None:
    tally = fs.broker_sigkill(tmp_path)
    assert_exact(tally, redelivery_allowed=True)  # the killed broker re-sends what it had not recorded as acked
    assert tally.notes["outbox_left"] == 0


def test_daemon_sigkill_and_restart_delivers_every_stored_alert(tmp_path: Path) -> None:
    tally = fs.daemon_sigkill_restart(tmp_path)
    assert tally.produced == 50
    assert_exact(tally, redelivery_allowed=True)  # alerts sent but not yet deleted at the kill go again


def test_disk_full_holds_alerts_in_memory_and_delivers_them_once(tmp_path: Path, log_watcher) -> None:
    try:
        tally = fs.disk_full(tmp_path)
    except PermissionError as exc:
        pytest.skip(f"no small file system to fill: {exc}")
    assert_exact(tally)
    assert tally.notes["storage_error_seen"] and tally.notes["held_in_memory"] == 10
    assert tally.notes["outbox_emptied"], "deletes that failed on the full disk are retried"
    storage_lines = [m for m in log_watcher.messages if m.startswith("outbox storage failed")]
    assert len(storage_lines) == 1, storage_lines  # one clear line for the state, not one per alert
    assert "full" in storage_lines[0]


def test_corrupt_outbox_is_moved_aside_salvaged_and_does_not_spin(tmp_path: Path, log_watcher) -> None:
    tally = fs.corrupt_outbox(tmp_path)
    assert tally.notes["moved_aside"]
    assert tally.duplicates == 0
    # Everything readable arrives; only the rows the damage destroyed are missing, and they are reported.
    assert tally.received == tally.notes["recovered"] + 10, tally
    assert tally.lost == tally.notes["reported_lost"], "produced = delivered + reported lost"
    damaged = [m for m in log_watcher.messages if "was damaged" in m]
    assert len(damaged) == 1 and "recovered" in damaged[0]
    assert sum("malformed" in m for m in log_watcher.messages) <= 1, "no error flood"


@pytest.mark.parametrize("cut", ["half", "16k", "4k"])
def test_truncated_outbox_gives_back_what_its_bytes_hold_and_counts_the_rest(tmp_path: Path, cut: str,
                                                                            log_watcher) -> None:
    tally = fs.truncated_outbox(tmp_path, cut)
    assert tally.notes["loss_counted"], "the stored-row counter survives a cut at the end"
    assert tally.received == tally.notes["recovered"] > 0, tally
    assert tally.lost == tally.notes["reported_lost"], "produced = delivered + reported lost"
    assert tally.duplicated_after_dedup == 0 and tally.foreign == 0
    if cut == "4k":
        assert tally.received >= 85, "cutting the last page loses at most the rows on it"
    damaged = [m for m in log_watcher.messages if "was damaged" in m]
    assert len(damaged) == 1 and f"{tally.received} alerts recovered, {tally.lost} lost" in damaged[0], damaged


def test_damaged_payload_is_quarantined_never_published_garbled(tmp_path: Path, log_watcher) -> None:
    tally = fs.damaged_payloads(tmp_path)
    assert tally.notes["quick_check"] == "ok", "SQLite's own check does not see this damage"
    assert tally.notes["garbled_published"] == 0
    assert (tally.received, tally.lost, tally.notes["reported_lost"]) == (27, 3, 3), tally
    assert tally.duplicated_after_dedup == 0
    lines = [m for m in log_watcher.messages if "is damaged on disk" in m]
    assert len(lines) == 3 and all("NOT published" in m for m in lines)


def test_freed_disk_takes_alerts_again(tmp_path: Path) -> None:
    try:
        tally = fs.freed_disk(tmp_path)
    except PermissionError as exc:
        pytest.skip(f"no small file system to fill: {exc}")
    assert_exact(tally)
    assert tally.notes["full_seen"]
    assert tally.notes["error_after_freeing"] is None, tally.notes
    # every alert of the second outage is in the file; of the ten that met the full disk, those held in
    # memory stay there (one may reach the file: a write that fails is retried once after a checkpoint)
    in_file, held = tally.notes["in_file_after_freeing"], tally.notes["held"]
    assert in_file + held == 95 and in_file >= 85 and held >= 1, tally.notes


def test_storage_failure_at_start_is_not_fatal(tmp_path: Path, log_watcher) -> None:
    tally = fs.storage_fails_at_start(tmp_path)
    assert_exact(tally)
    assert tally.notes["started_without_outbox"] and tally.notes["reopened"]
    assert any("starting without it" in m for m in log_watcher.messages)


def test_311_without_read_access_explains_once_and_starves_nothing(tmp_path: Path, log_watcher) -> None:
    try:
        tally = fs.echo_denied_311(tmp_path)
    except PermissionError as exc:
        pytest.skip(str(exc))
    assert_exact(tally, redelivery_allowed=True)  # unconfirmed alerts are re-sent: subscribers de-duplicate
    assert tally.notes["all_arrived_while_denied"], "newer alerts must not wait behind unconfirmed ones"
    assert tally.notes["kept_while_unconfirmed"] == 12, "an unconfirmed alert stays in the outbox"
    assert tally.notes["emptied_after_grant"]
    explained = [m for m in log_watcher.messages if "does not route them back" in m]
    assert len(explained) == 1 and "topic readwrite crack/cam1/alert" in explained[0]


@pytest.mark.parametrize("content", [b"", os.urandom(4096), b"SQLite format 3\0" + os.urandom(300)])
def test_truncated_or_random_outbox_starts_fresh(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "outbox.sqlite3"
    path.write_bytes(content)
    box = outbox_at(path)
    try:
        box.put(make_alert())
        assert len(box) == 1
    finally:
        box.close()


def test_read_only_outbox_names_the_cause(tmp_path: Path) -> None:
    try:
        with fs.small_filesystem(512) as mount:
            outbox_at(mount / "outbox.sqlite3").close()
            subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True, capture_output=True)
            with pytest.raises(OutboxError, match="read-only"):
                outbox_at(mount / "outbox.sqlite3").put(make_alert())
    except PermissionError as exc:
        pytest.skip(f"no file system to make read-only: {exc}")


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_acl_denial_keeps_alerts_until_the_broker_accepts_them(tmp_path: Path, protocol: str, log_watcher) -> None:
    tally = fs.acl_denial(tmp_path, protocol)
    assert_exact(tally)
    assert tally.notes["kept_while_denied"] == 5, "a denied alert must stay in the outbox"
    expected = "does not route them back" if protocol == "3.1.1" else "refused alert"
    assert any(expected in m for m in log_watcher.messages), log_watcher.messages[-5:]


def test_wrong_ca_is_named_and_the_right_one_delivers_everything(tmp_path: Path) -> None:
    try:
        tally = fs.wrong_ca(tmp_path)
    except PermissionError as exc:
        pytest.skip(str(exc))
    assert_exact(tally)
    assert tally.notes["cause_named"], "the log says: TLS certificate problem ... set mqtt.tls.ca_file"
    assert tally.notes["named_after_s"] < 15


def test_device_id_change_never_publishes_alerts_under_another_device(tmp_path: Path, log_watcher) -> None:
    tally = fs.device_id_change(tmp_path)
    assert_exact(tally)
    assert tally.notes["vm_kept_by_other"] == 9 and tally.notes["misrouted"] == 0 and tally.notes["invalid"] == 0
    assert any("9 of device 'vm'" in m for m in log_watcher.messages)


def test_hostile_payloads_never_make_the_subscriber_deaf(tmp_path: Path) -> None:
    tally = fs.hostile_subscriber_input(tmp_path)
    assert_exact(tally)
    assert tally.notes["rejected"] == tally.notes["hostile"]


def test_an_exception_in_a_paho_callback_does_not_stop_the_network_loop(tmp_path: Path, log_watcher) -> None:
    """The first delete after a PUBACK raises (injected): later alerts still go, the first is not re-sent."""
    broker = fs._broker(tmp_path)
    rx = fs.Receiver(broker, "callback-fault")
    pub = MqttPublisher("cam1", mqtt_section(broker.uri, tmp_path / "o.sqlite3", **fs.FAST))
    real_ack = pub.outbox.ack
    calls = []

    def ack_failing_once(row_id: int) -> None:
        calls.append(row_id)
        if len(calls) == 1:
            raise RuntimeError("injected fault in on_publish")
        real_ack(row_id)

    pub.outbox.ack = ack_failing_once  # type: ignore[method-assign]
    try:
        assert pub.wait_connected(fs.WAIT_S)
        ids = fs._produce(pub, 1)
        assert rx.wait_for(ids)
        ids |= fs._produce(pub, 5, start=1)
        assert rx.wait_for(ids), "the network loop died"
        assert pub.flush(fs.WAIT_S), "the failed delete is retried"
        assert rx.sink.duplicates == 0
        assert any("injected fault" in m for m in log_watcher.messages)
    finally:
        pub.close(timeout_s=2)
        rx.stop()
        broker.stop()


def test_subscriber_cli_survives_hostile_input_and_counts_it(tmp_path: Path) -> None:
    """`python -m edge.subscribe` as a user runs it: a deep-nesting message, then a valid alert."""
    import json

    import paho.mqtt.client as mqtt

    broker = fs._broker(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "edge.subscribe", "--broker", broker.uri, "--count", "1",
                             "--timeout-s", "30", "-v"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:
            if "subscribed to" in line:
                break
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        client.publish("crack/cam1/alert", b"[" * 1100 + b"]" * 1100, qos=1).wait_for_publish(10)
        client.publish("crack/cam1/alert", json.dumps(make_alert()).encode(), qos=1).wait_for_publish(10)
        client.loop_stop()
        client.disconnect()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        broker.stop()
    assert proc.returncode == 0, err
    assert "1 new alerts, 0 duplicates, 1 invalid messages" in err
    assert "nested 1100 levels deep" in err


def test_subscriber_cli_that_never_connected_says_so_and_fails() -> None:
    result = subprocess.run([sys.executable, "-m", "edge.subscribe", "--broker", f"mqtt://127.0.0.1:{free_port()}",
                             "--timeout-s", "1"], cwd=REPO, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 3
    assert "never connected to the broker" in result.stderr


def test_paho_reconnect_noise_stays_hidden_at_info(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO)
    pub = MqttPublisher("cam1", mqtt_section(f"mqtt://127.0.0.1:{free_port()}", tmp_path / "o.sqlite3", **fs.FAST))
    try:
        pub.publish_alert(make_alert())
        assert not pub.wait_connected(1.5)
    finally:
        pub.close(timeout_s=0.5)
    assert not [r for r in caplog.records if r.levelno < logging.INFO or r.levelname == "DEBUG"]
    assert any("cannot connect: connection refused" in r.getMessage() for r in caplog.records)
