"""Positions in time (pure): fixes from a receiver, and the position at a frame's capture time.

A :class:`Track` holds the recent fixes of one receiver (gpsd, MAVLink) in time order. The position
of a frame is read at its capture time:

* between two fixes no more than ``2 * max_age_s`` apart: linear interpolation of latitude,
  longitude, altitudes and heading (shortest way round), ``interpolated = True``; its age is the
  time to the nearer fix;
* otherwise the nearest fix in time, unchanged (never extrapolated), its age the time between that
  fix and the capture;
* ``stale = True`` when the age exceeds ``max_age_s``: the alert still carries the position, flagged,
  so a consumer sees both where and how old; a track with no fix at all gives no position.

Linear interpolation of degrees is exact enough between fixes a second or two apart (the error of
treating the sphere as flat over 100 m is below a millimetre); longitude is interpolated across the
antimeridian the short way.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections import deque
from dataclasses import dataclass, replace
from typing import Any

GEO_SOURCES = ("fixed", "exif", "gpsd", "mavlink", "log")


class GeoError(ValueError):
    """A position or geo setting is invalid; the message names the field and what was expected."""


@dataclass(frozen=True)
class Fix:
    """One position report. ``time_s``: UTC seconds since the epoch of the fix (not of its arrival).

    ``alt_m``: altitude above mean sea level; ``height_m``: height above the surface (take-off
    point or ground) where the receiver knows it; ``heading_deg``: 0 = north, clockwise;
    ``tilt_deg``: angle between the camera's optical axis and straight down (0 = nadir), where known.
    """

    time_s: float
    lat: float
    lon: float
    source: str
    alt_m: float | None = None
    height_m: float | None = None
    heading_deg: float | None = None
    tilt_deg: float | None = None

    def __post_init__(self) -> None:
        if not (-90.0 <= self.lat <= 90.0 and -180.0 <= self.lon <= 180.0):
            raise GeoError(f"{self.source} fix: lat/lon must be within +-90/+-180 degrees, got {self.lat}, {self.lon}")
        if self.source not in GEO_SOURCES:
            raise GeoError(f"fix source must be one of {', '.join(GEO_SOURCES)}, got {self.source!r}")


@dataclass(frozen=True)
class Position:
    """Where a frame was taken: a fix (possibly interpolated) with its age at the capture time."""

    fix: Fix
    age_s: float
    stale: bool
    interpolated: bool

    def to_alert_geo(self) -> dict[str, Any]:
        """The alert's ``geo`` object (schema v1): lat/lon, optional altitudes/heading, source, age."""
        fix = self.fix
        out: dict[str, Any] = {"lat": round(fix.lat, 8), "lon": round(fix.lon, 8)}
        if fix.alt_m is not None:
            out["alt_m"] = round(fix.alt_m, 2)
        if fix.height_m is not None:
            out["height_m"] = round(fix.height_m, 2)
        if fix.heading_deg is not None:
            out["heading_deg"] = round(fix.heading_deg % 360.0, 2)
        out.update(source=fix.source, age_s=round(self.age_s, 3), stale=self.stale, interpolated=self.interpolated)
        return out


def _lerp(a: float | None, b: float | None, w: float) -> float | None:
    return None if a is None or b is None else a + (b - a) * w


def _lerp_angle(a: float | None, b: float | None, w: float) -> float | None:
    if a is None or b is None:
        return None
    delta = (b - a + 180.0) % 360.0 - 180.0
    return (a + delta * w) % 360.0


def interpolate(a: Fix, b: Fix, time_s: float) -> Fix:
    """The fix at ``time_s`` on the straight line from ``a`` to ``b`` (``a.time_s <= time_s <= b.time_s``)."""
    span = b.time_s - a.time_s
    w = 0.0 if span <= 0 else min(1.0, max(0.0, (time_s - a.time_s) / span))
    lon = a.lon + ((b.lon - a.lon + 180.0) % 360.0 - 180.0) * w
    lon = (lon + 180.0) % 360.0 - 180.0
    return Fix(
        time_s=time_s, lat=a.lat + (b.lat - a.lat) * w, lon=lon, source=a.source,
        alt_m=_lerp(a.alt_m, b.alt_m, w), height_m=_lerp(a.height_m, b.height_m, w),
        heading_deg=_lerp_angle(a.heading_deg, b.heading_deg, w), tilt_deg=_lerp(a.tilt_deg, b.tilt_deg, w),
    )


def position_at(fixes: list[Fix], time_s: float, max_age_s: float) -> Position | None:
    """The position at ``time_s`` from ``fixes`` sorted by time (rules in the module docstring)."""
    if not fixes:
        return None
    times = [f.time_s for f in fixes]
    i = bisect.bisect_left(times, time_s)
    if i < len(fixes) and times[i] == time_s:
        return Position(fixes[i], 0.0, False, False)
    before = fixes[i - 1] if i > 0 else None
    after = fixes[i] if i < len(fixes) else None
    if before is not None and after is not None and after.time_s - before.time_s <= 2.0 * max_age_s:
        age = min(time_s - before.time_s, after.time_s - time_s)
        return Position(interpolate(before, after, time_s), age, age > max_age_s, True)
    nearest = min((f for f in (before, after) if f is not None), key=lambda f: abs(f.time_s - time_s))
    age = abs(time_s - nearest.time_s)
    return Position(nearest, age, age > max_age_s, False)


class Track:
    """The last ``keep_s`` seconds of fixes from one receiver; thread-safe (a receiver thread adds)."""

    def __init__(self, keep_s: float = 120.0) -> None:
        if not (isinstance(keep_s, (int, float)) and math.isfinite(keep_s) and keep_s > 0):
            raise GeoError(f"geo.track_keep_s must be a positive number of seconds, got {keep_s!r}")
        self.keep_s = float(keep_s)
        self._fixes: deque[Fix] = deque()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)

    def add(self, fix: Fix) -> None:
        """Add a fix (out-of-order fixes are put in place); forget fixes older than ``keep_s`` before the newest."""
        with self._lock:
            if self._fixes and fix.time_s < self._fixes[-1].time_s:
                items = list(self._fixes)
                bisect.insort(items, fix, key=lambda f: f.time_s)
                self._fixes = deque(items)
            else:
                self._fixes.append(fix)
            newest = self._fixes[-1].time_s
            while self._fixes and self._fixes[0].time_s < newest - self.keep_s:
                self._fixes.popleft()
            self._changed.notify_all()

    def clear(self) -> int:
        """Forget every fix (a receiver whose clock changed under them); returns how many there were."""
        with self._lock:
            count = len(self._fixes)
            self._fixes.clear()
            return count

    def update_last(self, **fields: Any) -> None:
        """Set fields (e.g. ``tilt_deg`` from an attitude message) on the newest fix."""
        with self._lock:
            if self._fixes:
                self._fixes[-1] = replace(self._fixes[-1], **fields)

    def fixes(self) -> list[Fix]:
        with self._lock:
            return list(self._fixes)

    def wait_for(self, count: int, timeout_s: float) -> bool:
        """Block until the track holds at least ``count`` fixes (for start-up and tests); False on timeout."""
        with self._lock:
            return self._changed.wait_for(lambda: len(self._fixes) >= count, timeout_s)

    def wait_past(self, time_s: float, timeout_s: float) -> bool:
        """Block until a fix at or after ``time_s`` is held (so a frame can be interpolated, not given the
        fix before it); False after ``timeout_s``."""
        with self._lock:
            return self._changed.wait_for(lambda: bool(self._fixes) and self._fixes[-1].time_s >= time_s, timeout_s)

    def newest_time_s(self) -> float | None:
        with self._lock:
            return self._fixes[-1].time_s if self._fixes else None

    def position_at(self, time_s: float, max_age_s: float) -> Position | None:
        return position_at(self.fixes(), time_s, max_age_s)
