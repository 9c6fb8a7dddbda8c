"""Pipeline health figures: counters since start, rates and latency percentiles over the last window."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def percentile_ms(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)) * 1000.0, 2) if values else None


@dataclass
class PipelineStats:
    """Counters since start; ``snapshot()`` adds rates and latency percentiles over the last window."""

    started_s: float = field(default_factory=time.monotonic)
    frames_captured: int = 0
    frames_done: int = 0
    frames_dropped: int = 0  # by the pipeline's own queue (live sources)
    frames_oversized: int = 0  # larger than source.max_frame_pixels (downscaled or rejected; + files skipped undecoded)
    frames_abandoned: int = 0  # still not inferred source.shutdown_grace_s after a stop request
    tiles: int = 0
    alerts: int = 0
    errors: int = 0
    latencies_s: deque = field(default_factory=lambda: deque(maxlen=2048))  # capture -> post-processed
    alert_latencies_s: deque = field(default_factory=lambda: deque(maxlen=2048))  # capture -> published
    _window: tuple[float, int, int] = (0.0, 0, 0)  # (time, frames_done, tiles) at the last snapshot

    def snapshot(self, **extra: Any) -> dict[str, Any]:
        now = time.monotonic()
        t0, frames0, tiles0 = self._window if self._window[0] else (self.started_s, 0, 0)
        elapsed = max(now - t0, 1e-9)
        lat, alat = list(self.latencies_s), list(self.alert_latencies_s)
        self._window = (now, self.frames_done, self.tiles)
        return {
            "uptime_s": round(now - self.started_s, 1),
            "frames": self.frames_done,
            "fps": round((self.frames_done - frames0) / elapsed, 2),
            "tiles_per_s": round((self.tiles - tiles0) / elapsed, 2),
            "latency_ms_p50": percentile_ms(lat, 50),
            "latency_ms_p95": percentile_ms(lat, 95),
            "latency_ms_p99": percentile_ms(lat, 99),
            "alert_latency_ms_p50": percentile_ms(alat, 50),
            "alert_latency_ms_p99": percentile_ms(alat, 99),
            "frames_oversized": self.frames_oversized,
            "frames_abandoned": self.frames_abandoned,
            "alerts": self.alerts,
            "errors": self.errors,
            **extra,
        }
