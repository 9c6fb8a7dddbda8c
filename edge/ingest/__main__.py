"""``python -m edge.ingest``: crack alerts, device status and snapshots from MQTT into a database.

    python -m edge.ingest --broker mqtt://broker:1883 --db sqlite:///alerts.db
    python -m edge.ingest --broker mqtt://broker:1883 --db postgresql://ingest@dbhost/fleet --index 2

Thin: parse flags (defaults from edge/ingest/config.py), migrate the schema, run the worker until
SIGTERM / Ctrl-C. Run several with the same --group (and different --index) to share the load.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence

from edge.ingest.config import IngestConfig, IngestConfigError, make_config
from edge.mqtt_names import MqttConfigError

FIELDS = IngestConfig.model_fields
EXIT_BAD_ARGS, EXIT_DB = 2, 3


def _default(name: str) -> object:
    return FIELDS[name].default


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m edge.ingest",
        description="Store crack alerts, device online/offline history, stats and snapshots from MQTT in SQLite or "
        "PostgreSQL. Idempotent by alert_id; messages are acknowledged only after their transaction committed; "
        "workers of one --group share the load (MQTT 5 shared subscriptions). Rules: docs/FLEET.md.",
        epilog="Exit codes: 0 stopped by SIGTERM/Ctrl-C, 2 bad arguments, 3 database unusable (URL, schema).")
    p.add_argument("--broker", default=_default("broker_uri"),
                   help="broker URI, mqtt://host[:port] or mqtts://host[:port] (default: %(default)s)")
    p.add_argument("--db", default=_default("db_url"),
                   help="sqlite:///path/alerts.db (a file, nothing to install) or postgresql://user[:pw]@host[:port]/db "
                   "(default: %(default)s)")
    p.add_argument("--prefix", default=_default("prefix"),
                   help="the devices' topic prefix; a '+' level is the site, e.g. crack/+ (default: %(default)s)")
    p.add_argument("--group", default=_default("group"),
                   help="shared-subscription group; workers of one group share alerts (default: %(default)s)")
    p.add_argument("--index", type=int, default=_default("index"),
                   help="this worker's number in its group, makes the client id (default: %(default)s)")
    p.add_argument("--client-id", default=_default("client_id"),
                   help="MQTT client id; must stay the same across restarts of this worker so that it resumes its "
                   "session (default: ingest-<group>-<hostname>-<index>)")
    p.add_argument("--session-expiry-s", type=int, default=_default("session_expiry_s"),
                   help="the broker keeps this worker's session and queues its share while it is away, seconds "
                   "(default: %(default)s)")
    p.add_argument("--snapshot-dir", default=_default("snapshot_dir"),
                   help="folder for snapshot JPEGs, <dir>/<device>/<alert_id>.jpg; each alert row names its file "
                   "(default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=_default("batch_size"),
                   help="messages per transaction, at most (default: %(default)s)")
    p.add_argument("--batch-wait-s", type=float, default=_default("batch_wait_s"),
                   help="write a batch at the latest this long after its first message, seconds (default: %(default)s)")
    p.add_argument("--receive-maximum", type=int, default=_default("receive_maximum"),
                   help="unacknowledged messages the broker may send this worker (default: %(default)s)")
    p.add_argument("--username", default=None, help="MQTT user name (default: anonymous)")
    p.add_argument("--password-file", default=None,
                   help="file whose first line is the MQTT password (default: $AELF_MQTT_PASSWORD)")
    p.add_argument("--ca-file", default=None, help="CA certificate (PEM) for mqtts:// (default: the system store)")
    p.add_argument("--migrate-only", action="store_true",
                   help="create / migrate the database schema and exit (default: run)")
    p.add_argument("-v", "--verbose", action="store_true", help="log each connection and batch (default: info)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("edge.ingest.paho").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    from sqlalchemy.exc import SQLAlchemyError

    from edge.ingest.consumer import IngestWorker
    from edge.ingest.dburl import DatabaseUrlError, create_db_engine
    from edge.ingest.schema import SchemaError, migrate

    try:
        config = make_config(broker_uri=args.broker, db_url=args.db, prefix=args.prefix, group=args.group,
                             index=args.index, client_id=args.client_id, session_expiry_s=args.session_expiry_s,
                             snapshot_dir=args.snapshot_dir, batch_size=args.batch_size, batch_wait_s=args.batch_wait_s,
                             receive_maximum=args.receive_maximum, username=args.username,
                             password_file=args.password_file, ca_file=args.ca_file)
    except (IngestConfigError, MqttConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_ARGS
    try:
        if args.migrate_only:
            applied = migrate(create_db_engine(config.db_url))
            print(f"schema migrations applied: {applied or 'none (up to date)'}")
            return 0
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        worker = IngestWorker(config, stop=stop)
    except InterruptedError:
        return 0
    except (DatabaseUrlError, SchemaError, SQLAlchemyError, MqttConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_DB
    worker.start()
    logging.getLogger("edge.ingest").info("ingest worker %s: %s -> %s", config.effective_client_id,
                                          config.broker_uri, config.db_url.split("@")[-1])
    while not stop.wait(60.0):
        logging.getLogger("edge.ingest").info("ingest counters: %s", worker.counters())
    worker.stop()
    logging.getLogger("edge.ingest").info("stopped: %s", worker.counters())
    return 0


if __name__ == "__main__":
    sys.exit(main())
