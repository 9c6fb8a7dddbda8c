"""Where the data sets live: one environment variable, one default (stdlib only).

``CRACK_DATA_ROOT`` names the folder holding the data sets (``deepcrack/``, ``crackforest_cfd/``);
unset, it is ``../shared/data`` beside the repository checkout. The export parity check, the
benchmarks and the tests all ask :func:`data_root`; command-line flags that take a data set folder
default to a folder under it.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_ROOT_ENV = "CRACK_DATA_ROOT"
DEFAULT_DATA_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def data_root() -> Path:
    """The data-set root: ``$CRACK_DATA_ROOT`` when set (and not empty), else ``../shared/data``."""
    value = os.environ.get(DATA_ROOT_ENV, "").strip()
    return Path(value).expanduser() if value else DEFAULT_DATA_ROOT
