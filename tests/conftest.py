"""Shared test fixtures: where the real crack data sets are, and small helpers."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (DeepCrack, CrackForest); tests that need it skip when it is absent."""
    if not (SHARED_DATA / "deepcrack" / "images").is_dir():
        pytest.skip(f"real crack data not found at {SHARED_DATA} (see README: data sets)")
    return SHARED_DATA


def pytest_configure(config: pytest.Config) -> None:
    """One torch thread for the whole suite: on a 2-core CI machine, torch's default thread pool
    fights the test's own subprocesses (brokers, daemons, torchrun workers) and made single tests
    up to 30x slower."""
    try:
        import torch
    except ImportError:  # the edge tests run without torch
        return
    torch.set_num_threads(1)
