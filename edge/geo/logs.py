"""Recorded position logs (NMEA 0183, GPX 1.1) read into a :class:`~edge.geo.track.Track`, so a video
recorded beside the log can be processed afterwards (``geo.source = "log"``, ``source.start_time``).

NMEA: ``RMC`` sentences give the UTC date, time, latitude, longitude and course over ground; a
``GGA`` with the same time adds the altitude above mean sea level. Sentences with a wrong checksum or
a void fix (``RMC`` status ``V``, ``GGA`` quality 0) are skipped. GPX: every ``trkpt``/``rtept``/``wpt``
with a ``<time>`` (``<ele>`` = altitude, ``<course>`` where written). Both are small, fixed formats;
the standard library reads them (no extra package for a device that only ever replays its own logs).
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path

from edge.geo.track import Fix, GeoError, Track


def _nmea_fields(line: str) -> list[str] | None:
    """The comma-separated fields of a sentence with a valid checksum (talker stripped), else None."""
    line = line.strip()
    if not line.startswith("$") or "*" not in line:
        return None
    body, _, checksum = line[1:].partition("*")
    value = 0
    for ch in body:
        value ^= ord(ch)
    try:
        if int(checksum[:2], 16) != value:
            return None
    except ValueError:
        return None
    fields = body.split(",")
    fields[0] = fields[0][-3:]  # GPRMC / GNRMC / GLRMC -> RMC
    return fields


def _degrees(value: str, hemisphere: str) -> float:
    """NMEA ddmm.mmmm / dddmm.mmmm + N/S/E/W -> signed degrees."""
    head, _, _ = value.partition(".")
    whole = int(value[: len(head) - 2])
    degrees = whole + float(value[len(head) - 2 :]) / 60.0
    return -degrees if hemisphere in ("S", "W") else degrees


def _hms(value: str) -> float:
    return int(value[0:2]) * 3600 + int(value[2:4]) * 60 + float(value[4:])


def read_nmea(text: str, source: str = "log") -> list[Fix]:
    """Fixes from NMEA text, in time order (RMC positions, GGA altitudes joined on the time of day)."""
    altitudes: dict[str, float] = {}
    rmcs: list[list[str]] = []
    for line in text.splitlines():
        fields = _nmea_fields(line)
        if fields is None:
            continue
        if fields[0] == "GGA" and len(fields) > 9 and fields[6] not in ("", "0") and fields[9]:
            altitudes[fields[1]] = float(fields[9])
        elif fields[0] == "RMC" and len(fields) > 9 and fields[2] == "A" and fields[3] and fields[5] and fields[9]:
            rmcs.append(fields)
    fixes = []
    for f in rmcs:
        day = datetime.strptime(f[9], "%d%m%y").replace(tzinfo=timezone.utc)
        course = float(f[8]) if f[8] else None
        fixes.append(Fix(time_s=day.timestamp() + _hms(f[1]), lat=_degrees(f[3], f[4]), lon=_degrees(f[5], f[6]),
                         source=source, alt_m=altitudes.get(f[1]), heading_deg=None if course is None else course % 360.0))
    fixes.sort(key=lambda fix: fix.time_s)
    return fixes


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def read_gpx(text: str, source: str = "log") -> list[Fix]:
    """Fixes from a GPX document's track, route and way points that carry a time, in time order."""
    root = ET.fromstring(text)
    fixes = []
    for element in root.iter():
        if _local(element.tag) not in ("trkpt", "rtept", "wpt"):
            continue
        children = {_local(c.tag): (c.text or "").strip() for c in element}
        if not children.get("time"):
            continue
        stamp = children["time"]
        when = datetime.fromisoformat(stamp[:-1] + "+00:00" if stamp.endswith(("Z", "z")) else stamp)
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)  # GPX times are UTC
        course = children.get("course")
        fixes.append(Fix(time_s=when.timestamp(), lat=float(element.get("lat")), lon=float(element.get("lon")),
                         source=source, alt_m=float(children["ele"]) if children.get("ele") else None,
                         heading_deg=float(course) % 360.0 if course else None))
    fixes.sort(key=lambda fix: fix.time_s)
    return fixes


def read_position_log(path: str | Path) -> Track:
    """A Track of every fix in an NMEA or GPX file (told apart by content); GeoError naming the file when
    it holds no usable fix or cannot be read."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise GeoError(f"geo.log_path {path}: cannot read it ({exc.strerror})") from exc
    text = raw.decode("utf-8", errors="replace")
    try:
        fixes = read_gpx(text) if text.lstrip().startswith("<") else read_nmea(text)
    except (ET.ParseError, ValueError) as exc:
        raise GeoError(f"geo.log_path {path}: not a readable NMEA or GPX log ({exc})") from exc
    if not fixes:
        raise GeoError(f"geo.log_path {path}: no fix in it (expected NMEA RMC sentences with status A, "
                       "or GPX points with a <time>)")
    span = fixes[-1].time_s - fixes[0].time_s
    track = Track(keep_s=max(span, 1.0) + 1.0)
    for fix in fixes:
        if math.isfinite(fix.time_s):
            track.add(fix)
    return track
