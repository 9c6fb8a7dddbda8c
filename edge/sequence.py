"""Per-device alert sequence numbers that keep increasing across restarts (schema: ``sequence``)."""

from __future__ import annotations

import json
import os
from pathlib import Path


class SequenceError(RuntimeError):
    """The sequence state file cannot be read; the message names the file and the fix."""


class SequenceCounter:
    """Per-device alert sequence numbers that keep increasing across restarts (a JSON state file)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._next = 0
        if self.path.is_file():
            try:
                self._next = int(json.loads(self.path.read_text())["next_sequence"])
            except (ValueError, KeyError, TypeError) as exc:
                raise SequenceError(
                    f"alert state file {self.path} is unreadable ({exc}); delete it to restart numbering at 0"
                ) from exc

    def take(self) -> int:
        """The next sequence number, persisted before it is returned (atomic rename)."""
        value = self._next
        self._next += 1
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps({"next_sequence": self._next}))
        os.replace(tmp, self.path)
        return value
