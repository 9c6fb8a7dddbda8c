"""Pytest fixtures for the MQTT tests over the shared testbed: a real mosquitto, a log watcher, TLS material.

Import the fixtures into a test module with `from mqtt_fixtures import broker  # noqa: F401`. The
helpers the benchmarks use too (alerts, config sections, the publisher daemon) live in
testbed/mqtt.py and are imported here under their names for the tests.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from testbed.mosquitto import Mosquitto, find_mosquitto
from testbed.mqtt import (  # noqa: F401 - for the test modules
    REPO,
    Daemon,
    LogWatcher,
    make_alert,
    make_tls_material,
    mqtt_section,
    outbox_at,
)

needs_mosquitto = pytest.mark.skipif(
    find_mosquitto() is None, reason="mosquitto binary not installed (Debian package 'mosquitto'; .ci/run installs it)"
)


@pytest.fixture()
def broker(tmp_path: Path):
    """A running mosquitto on a free 127.0.0.1 port (anonymous, persistence on), stopped afterwards."""
    if find_mosquitto() is None:
        pytest.skip("mosquitto binary not installed (Debian package 'mosquitto')")
    mosq = Mosquitto(tmp_path / "broker").start()
    yield mosq
    mosq.stop()


def pace(seconds: float) -> None:
    """Let time pass on purpose (an outage's length, alert pacing), not to wait for something to happen."""
    threading.Event().wait(seconds)


@pytest.fixture()
def log_watcher():
    """A LogWatcher attached to the edge.* loggers for the test's duration."""
    watcher = LogWatcher()
    logger = logging.getLogger("edge")
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(watcher)
    yield watcher
    logger.removeHandler(watcher)
    logger.setLevel(old_level)
