"""Per-device alert sequence numbers that keep increasing across restarts (schema: ``sequence``)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

log = logging.getLogger("edge.sequence")


class SequenceError(RuntimeError):
    """The sequence state file cannot be read; the message names the file and the fix."""


class SequenceCounter:
    """Per-device alert sequence numbers that keep increasing across restarts (a JSON state file)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._next = 0
        self.write_error: str | None = None
        if self.path.is_file():
            try:
                self._next = int(json.loads(self.path.read_text())["next_sequence"])
            except (ValueError, KeyError, TypeError) as exc:
                raise SequenceError(
                    f"alert state file {self.path} is unreadable ({exc}); delete it to restart numbering at 0"
                ) from exc

    def take(self) -> int:
        """The next sequence number, persisted before it is returned (atomic rename).

        When the state file cannot be written (full or read-only file system) numbering goes on in
        memory and the failure is logged once: detection never stops for it, but a restart in that
        state numbers from the last value written again (alert_id stays unique; see docs/MQTT.md).
        """
        value = self._next
        self._next += 1
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(json.dumps({"next_sequence": self._next}))
            os.replace(tmp, self.path)
        except OSError as exc:
            if self.write_error is None:
                log.error("alert state file %s cannot be written (%s): sequence numbers go on in memory and "
                          "restart from %s after a daemon restart until it can", self.path, exc, self._persisted())
            self.write_error = str(exc)
        else:
            if self.write_error is not None:
                log.warning("alert state file %s can be written again", self.path)
            self.write_error = None
        return value

    def _persisted(self) -> str:
        try:
            return str(json.loads(self.path.read_text())["next_sequence"])
        except (OSError, ValueError, KeyError, TypeError):
            return "0"
