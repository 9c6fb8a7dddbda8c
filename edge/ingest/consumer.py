"""The ingest worker: an MQTT 5 client whose messages are acknowledged only after their batch committed.

Threads: paho's network thread puts each message on a queue (nothing else: it must keep reading);
the writer thread takes up to ``batch_size`` messages (or what arrived within ``batch_wait_s`` of the
first), writes them with :class:`edge.ingest.store.Store` in one transaction and then sends their
PUBACKs, in the order the messages came (MQTT 5 §4.6). A failed commit (database down or restarting)
is retried with back-off; meanwhile nothing is acknowledged and the broker stops sending once
``receive_maximum`` messages are unacknowledged.

Sessions: the client connects with a fixed client id, ``clean_start = False`` and a session expiry, so
the broker keeps this worker's subscriptions and unacknowledged messages when it dies; a restarted
worker with the same id receives them again (then de-duplicated by the store). Several workers with one
``group`` share alerts, snapshots and stats through MQTT 5 shared subscriptions
(``$share/<group>/<prefix>/+/alert``); every worker reads the retained status topics.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from edge.broker import connack_text, paho_logger, read_password
from edge.ingest.config import IngestConfig
from edge.ingest.dburl import create_db_engine, safe_url
from edge.ingest.rows import subscriptions
from edge.ingest.schema import migrate
from edge.ingest.store import BatchResult, Message, Store
from edge.mqtt_names import parse_broker_uri

log = logging.getLogger("edge.ingest")


class IngestWorker:
    """One ingest process's MQTT client + writer thread (``start``, ``stop``; counters for stats and tests)."""

    def __init__(self, config: IngestConfig, *, on_batch: Callable[[BatchResult], None] | None = None,
                 password: str | None = None, stop: threading.Event | None = None) -> None:
        """Open (waiting for) the database and migrate it; ready the MQTT client (``start`` connects).

        A database that cannot be reached is waited for with back-off (``retry_min_s`` .. ``retry_max_s``),
        logged once: a worker restarted while its database restarts must come up, not exit, or its share
        of the alerts would wait in its broker session. ``stop`` ends that wait (raises InterruptedError).
        """
        import paho.mqtt.client as mqtt
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        self.config = config
        self.address = parse_broker_uri(config.broker_uri)
        self._stop = stop or threading.Event()
        self.engine = create_db_engine(config.db_url)
        applied = self._migrate_when_reachable()
        if applied:
            log.info("database %s migrated to schema version %d", safe_url(config.db_url), applied[-1])
        self.store = Store(self.engine, config.prefix, config.snapshot_dir, max_message_bytes=config.max_message_bytes)
        self.on_batch = on_batch
        self.stored = self.duplicates = self.rejected = self.snapshots = self.batches = 0
        self.status_changes = 0
        self.commit_failures = 0
        self.callback_errors = 0
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self._queue: queue.Queue[Message] = queue.Queue()
        self._lock = threading.Lock()
        self._writer = threading.Thread(target=self._write_loop, name="ingest-writer", daemon=True)

        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=config.effective_client_id,
                                   protocol=mqtt.MQTTv5, manual_ack=True)
        self._client.enable_logger(paho_logger("edge.ingest.paho"))
        if config.username:
            self._client.username_pw_set(config.username, read_password(password, config.password_file))
        if self.address.tls:
            self._client.tls_set(ca_certs=config.ca_file)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = config.session_expiry_s
        props.ReceiveMaximum = config.receive_maximum
        self._connect_args: dict[str, Any] = dict(keepalive=config.keepalive_s, clean_start=False, properties=props)

    def _migrate_when_reachable(self) -> list[int]:
        from sqlalchemy.exc import OperationalError

        delay, waiting = self.config.retry_min_s, False
        while True:
            try:
                applied = migrate(self.engine)
            except OperationalError as exc:
                if not waiting:
                    log.error("database %s not reachable (%s); waiting for it, retrying every <= %.0f s",
                              safe_url(self.config.db_url), str(exc).splitlines()[0][:300], self.config.retry_max_s)
                    waiting = True
                if self._stop.wait(delay):
                    raise InterruptedError("stopped while waiting for the database") from exc
                delay = min(delay * 2, self.config.retry_max_s)
                continue
            if waiting:
                log.warning("database %s reachable again", safe_url(self.config.db_url))
            return applied

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> IngestWorker:
        """Start the writer thread, connect in the background (retrying with back-off) and subscribe."""
        self._writer.start()
        self._client.reconnect_delay_set(0.2, 5)
        self._client.connect_async(self.address.host, self.address.port, **self._connect_args)
        self._client.loop_start()
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        """Write and acknowledge what has arrived (within ``timeout_s``), then disconnect.

        Messages not written by then stay unacknowledged: the broker keeps them for this session.
        """
        self._stop.set()
        self._writer.join(timeout=timeout_s)
        self._client.disconnect()
        self._client.loop_stop()
        self.engine.dispose()

    # -- paho callbacks (network thread): guarded, never raise -------------------------------------
    def _guard(self, name: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:
            self.callback_errors += 1
            log.exception("ingest %s failed (the network loop goes on)", name)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        def run() -> None:
            if reason_code.is_failure:
                log.error("broker %s:%s refused the ingest worker %s: %s", self.address.host, self.address.port,
                          self.config.effective_client_id, connack_text(reason_code))
                return
            log.info("connected to %s:%s as %s (session %s)", self.address.host, self.address.port,
                     self.config.effective_client_id, "resumed" if flags.session_present else "new")
            self.connected.set()
            client.subscribe(subscriptions(self.config.prefix, self.config.group))
        self._guard("on_connect", run)

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if self.connected.is_set() and not self._stop.is_set():
            log.warning("lost the broker %s:%s (%s); reconnecting, unacknowledged messages stay with the broker",
                        self.address.host, self.address.port, reason_code)
        self.connected.clear()

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        def run() -> None:
            refused = [str(rc) for rc in reason_codes if rc.is_failure]
            if refused:
                log.error("broker refused ingest subscriptions %s: %s",
                          [t for t, _ in subscriptions(self.config.prefix, self.config.group)], ", ".join(refused))
                return
            log.info("subscribed to %s", ", ".join(t for t, _ in subscriptions(self.config.prefix, self.config.group)))
            self.subscribed.set()
        self._guard("on_subscribe", run)

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        self._queue.put(Message(message.topic, bytes(message.payload), datetime.now(timezone.utc),
                                message.mid, message.qos))

    # -- writer thread -----------------------------------------------------------------------------
    def _next_batch(self) -> list[Message]:
        try:
            first = self._queue.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self.config.batch_wait_s
        while len(batch) < self.config.batch_size:
            remaining = deadline - time.monotonic()
            try:
                batch.append(self._queue.get(timeout=max(remaining, 0)) if remaining > 0 else self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _write_loop(self) -> None:
        while True:
            if self._stop.is_set() and self._queue.empty():
                return
            batch = self._next_batch()
            if batch:
                result = self._write_with_retry(batch)
                if result is None:  # stopping while the database was down: nothing acknowledged
                    return
                for msg in batch:
                    if msg.qos > 0:
                        self._client.ack(msg.mid, msg.qos)
                self._count(result)

    def _write_with_retry(self, batch: list[Message]) -> BatchResult | None:
        from sqlalchemy.exc import DBAPIError

        delay = self.config.retry_min_s
        failing = False
        while True:
            try:
                result = self.store.write(batch)
            except (DBAPIError, OSError) as exc:
                self.commit_failures += 1
                if not failing:
                    log.error("cannot write to %s (%s); retrying every <= %.0f s, nothing acknowledged meanwhile",
                              safe_url(self.config.db_url), str(exc).splitlines()[0][:300], self.config.retry_max_s)
                    failing = True
                if self._stop.wait(delay):
                    return None
                delay = min(delay * 2, self.config.retry_max_s)
                continue
            if failing:
                log.warning("writing to %s again", safe_url(self.config.db_url))
            return result

    def _count(self, result: BatchResult) -> None:
        with self._lock:
            self.batches += 1
            self.stored += len(result.new_alerts)
            self.duplicates += result.duplicate_alerts
            self.rejected += result.rejected
            self.snapshots += result.snapshots
            self.status_changes += len(result.status_changes)
        for device, state in result.status_changes:
            log.info("device %s is %s", device, state)
        if self.on_batch is not None:
            self.on_batch(result)

    def counters(self) -> dict[str, int]:
        """stored / duplicates / rejected / snapshots / status_changes / batches / commit_failures so far."""
        with self._lock:
            return {"stored": self.stored, "duplicates": self.duplicates, "rejected": self.rejected,
                    "snapshots": self.snapshots, "status_changes": self.status_changes, "batches": self.batches,
                    "commit_failures": self.commit_failures, "queued": self._queue.qsize()}
