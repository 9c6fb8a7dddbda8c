"""Fleet ingest (edge/ingest/) against a real mosquitto, real SQLite and a real PostgreSQL.

What a fleet operator would notice: every alert stored once whatever is redelivered; several workers
sharing the alerts; nothing lost when a worker is SIGKILLed mid-batch or the database restarts;
device online/offline history; snapshots in files named by their rows; the schema migrated once.
"""
# ruff: noqa: F811  (pytest fixtures imported from fixture modules are re-bound as test arguments)

from __future__ import annotations

import signal
import threading
from datetime import datetime, timezone
from pathlib import Path

import pytest
from ingest_fixtures import alert_ids, postgres, start_ingest_process, wait_until  # noqa: F401
from mqtt_fixtures import broker, make_alert, mqtt_section, needs_mosquitto  # noqa: F401
from sqlalchemy import func, select

from edge.ingest import schema
from edge.ingest.config import IngestConfigError, make_config
from edge.ingest.consumer import IngestWorker
from edge.ingest.dburl import DatabaseUrlError, create_db_engine, sqlalchemy_url
from edge.ingest.rows import parse_topic, subscriptions
from edge.ingest.schema import LATEST_VERSION, Migration, SchemaError, migrate
from edge.ingest.store import Message, Store
from edge.mqtt import MqttPublisher
from edge.topics import encode_alert

JPEG = b"\xff\xd8\xff\xe0 a snapshot"


def now() -> datetime:
    return datetime.now(timezone.utc)


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'alerts.db'}"


def publisher(uri: str, tmp_path: Path, device_id: str, **kw) -> MqttPublisher:
    kw.setdefault("reconnect_min_s", 0.2)
    kw.setdefault("reconnect_max_s", 1.0)
    kw.setdefault("stats_interval_s", 0)
    return MqttPublisher(device_id, mqtt_section(uri, tmp_path / f"outbox-{device_id}.sqlite3", **kw))


def worker(uri: str, db_url: str, tmp_path: Path, index: int = 0, **kw) -> IngestWorker:
    config = make_config(broker_uri=uri, db_url=db_url, index=index, client_id=f"ingest-{tmp_path.name}-{index}"[:60],
                         snapshot_dir=str(tmp_path / "snapshots"), **kw)
    w = IngestWorker(config).start()
    assert w.subscribed.wait(10), "ingest worker did not subscribe"
    return w


# -- pure parts -------------------------------------------------------------------------------------
def test_topics_sites_and_subscriptions() -> None:
    assert parse_topic("crack", "crack/truck-7/alert").kind == "alert"
    info = parse_topic("crack/+", "crack/north-yard/truck-7/snapshot/abc")
    assert (info.kind, info.device_id, info.site, info.alert_id) == ("snapshot", "truck-7", "north-yard", "abc")
    assert parse_topic("crack", "crack/truck-7/other") is None and parse_topic("crack", "other/t/alert") is None
    assert subscriptions("crack", "g")[0] == ("$share/g/crack/+/alert", 1)
    assert ("crack/+/status", 1) in subscriptions("crack", "g"), "status is not shared: retained messages must arrive"


def test_bad_settings_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(IngestConfigError, match="prefix"):
        make_config(prefix="crack/#")
    with pytest.raises(IngestConfigError, match="batch_size"):
        make_config(batch_size=0)
    with pytest.raises(DatabaseUrlError, match="postgresql://"):
        sqlalchemy_url("mysql://x/y")
    assert sqlalchemy_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"


# -- store and schema on SQLite ----------------------------------------------------------------------
def test_store_is_idempotent_and_keeps_status_history(tmp_path: Path) -> None:
    engine = create_db_engine(sqlite_url(tmp_path))
    assert migrate(engine) == [LATEST_VERSION] and migrate(engine) == [], "second run applies nothing"
    store = Store(engine, "crack", tmp_path / "snaps")
    a = make_alert("cam1", 0, "high")
    a["snapshot"] = {"topic": f"crack/cam1/snapshot/{a['alert_id']}"}
    b = make_alert("cam1", 1, "low")
    batch = [Message("crack/cam1/status", b"online", now()),
             Message(f"crack/cam1/snapshot/{a['alert_id']}", JPEG, now()),
             Message("crack/cam1/alert", encode_alert(a), now()), Message("crack/cam1/alert", encode_alert(b), now()),
             Message("crack/cam1/alert", encode_alert(a), now()),  # a redelivery in the same batch
             Message("crack/cam1/alert", b'{"alert_id": "x"}', now()),  # not an alert: kept as rejected
             Message("crack/cam1/stats", b'{"outbox_pending": 7}', now())]
    first = store.write(batch)
    assert sorted(first.new_alerts) == sorted([a["alert_id"], b["alert_id"]]) and first.duplicate_alerts == 1
    again = store.write(batch + [Message("crack/cam1/status", b"offline", now()),
                                 Message("crack/cam1/status", b"offline", now())])
    assert again.new_alerts == [] and again.duplicate_alerts == 3, "a redelivered batch adds no alert"
    with engine.connect() as conn:
        rows = conn.execute(select(schema.alerts.c.alert_id, schema.alerts.c.snapshot_path,
                                   schema.alerts.c.payload)).all()
        history = conn.execute(select(schema.device_status.c.status).order_by(schema.device_status.c.id)).scalars().all()
        device = conn.execute(select(schema.devices)).one()._mapping
        rejected = conn.execute(select(schema.rejected_messages.c.reason)).scalars().all()
    assert len(rows) == 2
    by_id = {r.alert_id: r for r in rows}
    assert Path(by_id[a["alert_id"]].snapshot_path).read_bytes() == JPEG, "the row names the snapshot's file"
    assert by_id[b["alert_id"]].snapshot_path is None and by_id[a["alert_id"]].payload == a
    assert history == ["online", "offline"], "a repeated (retained) status is not a change"
    assert device["status"] == "offline" and device["last_stats"] == {"outbox_pending": 7}
    assert len(rejected) == 2 and "schema" in rejected[0]


def test_schema_newer_than_software_is_refused_and_migrations_run_in_order(tmp_path: Path) -> None:
    engine = create_db_engine(sqlite_url(tmp_path))
    order: list[int] = []
    extra = (Migration(LATEST_VERSION + 1, "test: one more table",
                       lambda conn: order.append(LATEST_VERSION + 1) or conn.exec_driver_sql("CREATE TABLE t1 (x int)")),
             Migration(LATEST_VERSION + 2, "test: fails", lambda conn: (_ for _ in ()).throw(RuntimeError("boom"))))
    migrate(engine)
    with pytest.raises(RuntimeError, match="boom"):
        migrate(engine, schema.MIGRATIONS + extra)
    with engine.connect() as conn:
        assert schema.current_version(conn) == LATEST_VERSION, "a failed migration leaves the database as it was"
        assert not conn.dialect.has_table(conn, "t1")
    assert migrate(engine, schema.MIGRATIONS + extra[:1]) == [LATEST_VERSION + 1] and order
    with pytest.raises(SchemaError, match="newer than this software"):
        migrate(engine)


# -- with a real mosquitto ---------------------------------------------------------------------------
@needs_mosquitto
@pytest.mark.mqtt
def test_two_workers_share_the_alerts_and_store_each_once(broker, tmp_path: Path) -> None:
    db = sqlite_url(tmp_path)
    workers = [worker(broker.uri, db, tmp_path, i, batch_wait_s=0.05) for i in range(2)]
    pubs = [publisher(broker.uri, tmp_path, f"cam{d}") for d in range(2)]
    produced = []
    try:
        for i in range(60):
            alert = make_alert(f"cam{i % 2}", i // 2, "medium")
            produced.append(alert["alert_id"])
            pubs[i % 2].publish_alert(alert, snapshot_jpeg=JPEG if i % 10 == 0 else None)
        assert wait_until(lambda: len(alert_ids(db)) >= 60, 30), f"stored {len(alert_ids(db))} of 60"
        assert sorted(alert_ids(db)) == sorted(produced)
        # a worker counts a batch just after its commit: the rows can be visible a moment before the count
        assert wait_until(lambda: sum(w.counters()["stored"] for w in workers) >= 60, 10)
        shares = [w.counters()["stored"] for w in workers]
        assert all(s > 0 for s in shares) and sum(shares) == 60, f"shared subscription split {shares}"
        assert wait_until(lambda: sum(w.counters()["snapshots"] for w in workers) >= 6, 10)
        assert len(list((tmp_path / "snapshots").rglob("*.jpg"))) == 6
    finally:
        for p in pubs:
            p.close(timeout_s=5)
    engine = create_db_engine(db, write=False)
    assert wait_until(lambda: _statuses(engine) == {"cam0": "offline", "cam1": "offline"}, 10)
    for w in workers:
        w.stop()


def _status_of(engine, device_id: str) -> str | None:
    try:
        return _statuses(engine).get(device_id)
    except Exception:  # noqa: BLE001 - the worker has not created the schema yet
        return None


def _statuses(engine) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(conn.execute(select(schema.devices.c.device_id, schema.devices.c.status)).all())


@needs_mosquitto
@pytest.mark.mqtt
def test_worker_sigkilled_mid_batch_loses_nothing(broker, tmp_path: Path) -> None:
    db = sqlite_url(tmp_path)
    proc = start_ingest_process(broker.uri, db, tmp_path, extra=("--batch-size", "20", "--batch-wait-s", "0.5"))
    pub = publisher(broker.uri, tmp_path, "cam1")
    produced: list[str] = []
    stop = threading.Event()

    def produce() -> None:
        for i in range(300):
            if stop.is_set():
                return
            alert = make_alert("cam1", i)
            produced.append(alert["alert_id"])
            pub.publish_alert(alert)
            stop.wait(0.01)

    producer = threading.Thread(target=produce)
    try:
        # the worker's subscriptions exist once it has stored the retained status (same SUBSCRIBE packet)
        engine = create_db_engine(db, write=False)
        assert wait_until(lambda: _status_of(engine, "cam1") == "online", 30), "the worker did not subscribe"
        producer.start()
        assert wait_until(lambda: len(alert_ids(db)) >= 40, 30), "the worker stored nothing"
        proc.send_signal(signal.SIGKILL)  # alerts keep coming; some were received and not yet committed
        proc.wait(10)
        restarted = start_ingest_process(broker.uri, db, tmp_path, extra=("--batch-size", "20", "--batch-wait-s", "0.5"))
        producer.join(60)
        assert wait_until(lambda: len(alert_ids(db)) >= 300, 60), f"stored {len(alert_ids(db))} of 300"
        ids = alert_ids(db)
        assert sorted(ids) == sorted(produced) and len(set(ids)) == len(ids) == 300
        restarted.send_signal(signal.SIGTERM)
        assert restarted.wait(30) == 0
    finally:
        stop.set()
        pub.close(timeout_s=5)
        if proc.poll() is None:
            proc.kill()


# -- PostgreSQL --------------------------------------------------------------------------------------
@needs_mosquitto
@pytest.mark.mqtt
def test_postgres_three_workers_and_a_database_restart_lose_nothing(broker, postgres, tmp_path: Path) -> None:
    engine = create_db_engine(postgres.url)
    barrier = threading.Barrier(3)
    errors: list[BaseException] = []

    def migrate_at_once() -> None:
        barrier.wait()
        try:
            migrate(engine)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=migrate_at_once) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    with engine.connect() as conn:
        versions = conn.execute(select(func.count()).select_from(schema.schema_version)).scalar_one()
    assert not errors and versions == LATEST_VERSION, "three workers starting at once migrate once"
    engine.dispose()

    workers = [worker(broker.uri, postgres.url, tmp_path, i, batch_wait_s=0.05, retry_min_s=0.1, retry_max_s=0.5)
               for i in range(3)]
    pub = publisher(broker.uri, tmp_path, "truck-7")
    produced = []
    try:
        for i in range(100):
            alert = make_alert("truck-7", i, "high" if i % 3 == 0 else "low")
            produced.append(alert["alert_id"])
            pub.publish_alert(alert)
            if i == 40:
                assert wait_until(lambda: len(alert_ids(postgres.url)) >= 30, 30)
                postgres.stop()  # alerts keep arriving while the database is down
            if i == 70:
                assert wait_until(lambda: sum(w.counters()["commit_failures"] for w in workers) > 0, 30), \
                    "the workers tried to write while the database was down"
                postgres.start()
        assert wait_until(lambda: len(alert_ids(postgres.url)) >= 100, 60), f"stored {len(alert_ids(postgres.url))}"
        assert sorted(alert_ids(postgres.url)) == sorted(produced)
    finally:
        pub.close(timeout_s=5)
        for w in workers:
            w.stop()


# -- a vehicle broker bridged to the central one -----------------------------------------------------
@needs_mosquitto
@pytest.mark.mqtt
def test_bridge_stores_and_forwards_across_a_cut_link(tmp_path: Path) -> None:
    from testbed.mosquitto import Mosquitto, bridge_lines
    from testbed.tcp_relay import TcpRelay

    central = Mosquitto(tmp_path / "central").start()
    link = TcpRelay(central.port).start()
    vehicle = Mosquitto(tmp_path / "vehicle", extra_lines=bridge_lines("truck-7", link.port)).start()
    db = sqlite_url(tmp_path)
    w = worker(central.uri, db, tmp_path, batch_wait_s=0.05)
    pub = publisher(vehicle.uri, tmp_path, "truck-7")
    engine = create_db_engine(db, write=False)
    try:
        assert wait_until(lambda: _status_of(engine, "truck-7") == "online", 20), "retained status crosses the bridge"
        first = [make_alert("truck-7", i) for i in range(10)]
        for a in first:
            pub.publish_alert(a)
        assert wait_until(lambda: len(alert_ids(db)) == 10, 20)
        link.cut()
        during = [make_alert("truck-7", 10 + i) for i in range(30)]
        for a in during:
            pub.publish_alert(a, snapshot_jpeg=JPEG)
        assert pub.flush(10), "the vehicle broker accepts alerts while its uplink is down"
        assert len(alert_ids(db)) == 10, "nothing can arrive while the link is cut"
        link.restore()
        assert wait_until(lambda: len(alert_ids(db)) == 40, 30), f"stored {len(alert_ids(db))} of 40 after the link"
        assert sorted(alert_ids(db)) == sorted(a["alert_id"] for a in first + during)
        assert wait_until(lambda: len(list((tmp_path / "snapshots").rglob("*.jpg"))) == 30, 10)
    finally:
        pub.close(timeout_s=5)
        w.stop()
        link.cut()
        vehicle.stop()
        central.stop()


# -- reads: the report and the fleet summary from the database ---------------------------------------
def _fill(tmp_path: Path) -> tuple[str, list[dict], bytes]:
    """A database with alerts of two devices on two sites (one with snapshots), status and stats."""
    import cv2
    import numpy as np

    image = np.full((108, 192, 3), 90, np.uint8)
    cv2.line(image, (10, 20), (150, 90), (20, 20, 20), 3)
    jpeg = cv2.imencode(".jpg", image)[1].tobytes()
    db = sqlite_url(tmp_path)
    engine = create_db_engine(db)
    migrate(engine)
    store = Store(engine, "crack/+", tmp_path / "snapshots")
    alerts = [make_alert("cam1", i, "high" if i % 2 else "low") for i in range(4)]
    alerts += [make_alert("cam2", i, "medium") for i in range(3)]
    batch = [Message("crack/north/cam1/status", b"online", now()), Message("crack/south/cam2/status", b"offline", now()),
             Message("crack/north/cam1/stats", b'{"outbox_pending": 12, "outbox_dropped": 0}', now())]
    for a in alerts:
        site = "north" if a["device_id"] == "cam1" else "south"
        if a["device_id"] == "cam1":
            a["snapshot"] = {"topic": f"crack/{site}/cam1/snapshot/{a['alert_id']}"}
            batch.append(Message(f"crack/{site}/cam1/snapshot/{a['alert_id']}", jpeg, now()))
        batch.append(Message(f"crack/{site}/{a['device_id']}/alert", encode_alert(a), now()))
    assert len(store.write(batch).new_alerts) == 7
    engine.dispose()
    return db, alerts, jpeg


def test_report_from_the_database_equals_the_report_from_files(tmp_path: Path) -> None:
    import json

    from edge.report.__main__ import main as report_main

    db, alerts, _ = _fill(tmp_path)
    cam1 = [a for a in alerts if a["device_id"] == "cam1"]
    (tmp_path / "cam1.jsonl").write_text("".join(json.dumps(a) + "\n" for a in cam1))
    assert report_main(["--db", db, "--site", "north", "--since", "1h", "--out", str(tmp_path / "from_db")]) == 0
    assert report_main([str(tmp_path / "cam1.jsonl"), "--snapshots", str(tmp_path / "snapshots" / "cam1"),
                        "--out", str(tmp_path / "from_file")]) == 0
    from_db = (tmp_path / "from_db" / "cracks.csv").read_text()
    assert from_db == (tmp_path / "from_file" / "cracks.csv").read_text() and from_db.count("cam1") >= 1
    assert "cam2" not in from_db
    frames_db = sorted(p.name for p in (tmp_path / "from_db" / "frames").iterdir())
    frames_file = sorted(p.name for p in (tmp_path / "from_file" / "frames").iterdir())
    assert frames_db and frames_db == frames_file, "snapshots come from the files the rows name"
    assert report_main(["--db", db, "--device", "cam2", "--out", str(tmp_path / "cam2")]) == 0
    assert "cam2" in (tmp_path / "cam2" / "cracks.csv").read_text()
    assert report_main(["--db", db, "--since", "2099-01-01", "--out", str(tmp_path / "none")]) == 0
    assert (tmp_path / "none" / "cracks.csv").read_text().count("\n") == 1, "header only"
    assert report_main(["--db", db, "--since", "yesterday", "--out", str(tmp_path / "bad")]) == 1


def test_fleet_summary(tmp_path: Path, capsys) -> None:
    import json

    from edge.fleet import main as fleet_main

    db, _, _ = _fill(tmp_path)
    assert fleet_main(["--db", db, "--json"]) == 0
    rows = {r["device_id"]: r for r in json.loads(capsys.readouterr().out)}
    assert (rows["cam1"]["site"], rows["cam1"]["status"], rows["cam1"]["outbox_pending"]) == ("north", "online", 12)
    assert (rows["cam1"]["alerts_low"], rows["cam1"]["alerts_high"], rows["cam1"]["alerts_medium"]) == (2, 2, 0)
    assert (rows["cam2"]["status"], rows["cam2"]["alerts_medium"], rows["cam2"]["outbox_pending"]) == ("offline", 3, None)
    assert fleet_main(["--db", db]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("device_id") and len(table) == 3
    assert fleet_main(["--db", f"sqlite:///{tmp_path / 'empty.db'}"]) == 1
    assert "schema version 0" in capsys.readouterr().err


def test_worker_started_while_the_database_is_down_waits_for_it(postgres, tmp_path: Path) -> None:
    postgres.stop()
    config = make_config(db_url=postgres.url, retry_min_s=0.1, retry_max_s=0.3)
    made: list[IngestWorker] = []
    opening = threading.Thread(target=lambda: made.append(IngestWorker(config)))
    opening.start()
    opening.join(1.0)
    assert opening.is_alive() and not made, "it waits instead of exiting"
    postgres.start()
    opening.join(30)
    assert made, "it opened and migrated the database once it was back"
    with made[0].engine.connect() as conn:
        assert schema.current_version(conn) == LATEST_VERSION
    made[0].engine.dispose()
