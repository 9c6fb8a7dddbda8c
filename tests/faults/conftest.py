"""The fault-injection suite: every test here is marked ``faults`` (run by plain ``python -m pytest``)."""

from __future__ import annotations

import pytest
from mqtt_fixtures import log_watcher  # noqa: F401 - a fixture for the tests here


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = __file__.rsplit("/", 1)[0]
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.faults)
            item.add_marker(pytest.mark.mqtt)
