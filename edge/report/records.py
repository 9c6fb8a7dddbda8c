"""Alerts in, one record per crack observation out, and the same crack across frames found (pure).

Reading (files) is in :mod:`edge.report.load`; this module only turns alert dicts into
:class:`Observation` s and groups them into :class:`CrackGroup` s.

**Where a crack is.** An alert's ``geo`` is where the frame was taken. When the alert also has a
GSD and the position a heading, the crack's own position is the frame's position moved by the
crack's offset from the image centre (its box centre, in pixels x GSD), rotated by the heading: this
assumes a camera looking straight down with the top of the image pointing along the heading (a drone
with a nadir gimbal, a road camera looking down). Otherwise the crack gets the frame's position.

**The same crack in consecutive frames** (deduplication). Observations are taken in capture order;
one joins the group of an earlier observation when all of these hold:

* same device and same source, and not the same frame (two cracks of one frame are two cracks);
* captured at most ``max_gap_s`` after the group's latest observation;
* with positions on both (not stale): their crack positions at most ``max_distance_m`` apart;
  without positions (a fixed camera): their boxes, each grown by ``margin_px``, overlap by at least
  ``min_overlap`` of the smaller box (the test of edge.alerts' cool-down), and, where both frames'
  snapshots are at hand, the two frames show the same scene: the correlation of their 32 x 32 grey
  thumbnails (:func:`scene_signature`) is at least ``min_scene_correlation`` (a folder of unrelated
  photographs is not one scene, a fixed camera's frames are).

Of the candidate groups the nearest (in metres, else the largest overlap) is taken. A group is shown
by its worst observation (highest severity, then widest, then longest) and counts its frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import cv2
import numpy as np

SEVERITY_ORDER = {"low": 1, "medium": 2, "high": 3}
METRES_PER_DEGREE_LAT = 111_320.0  # on the WGS 84 ellipsoid, within 0.6 % everywhere
REPORT_COLUMNS = ("crack_id", "severity", "length_px", "max_width_px", "length_mm", "max_width_mm", "first_seen",
                  "last_seen", "frames", "lat", "lon", "position", "position_source", "device_id", "source",
                  "frame_index", "alert_id")


@dataclass(frozen=True)
class DedupOptions:
    """When two observations are the same crack (module docstring). Defaults: a vehicle at walking to road speed."""

    max_gap_s: float = 5.0
    max_distance_m: float = 1.5
    min_overlap: float = 0.3
    margin_px: float = 16.0
    min_scene_correlation: float = 0.6


@dataclass(frozen=True)
class Observation:
    """One crack in one alert."""

    alert: dict = field(repr=False)
    crack: dict = field(repr=False)
    capture_time: datetime
    device_id: str
    source: str
    frame_index: int
    lat: float | None  # the crack's position (or the frame's), degrees; None without a position
    lon: float | None
    located_in_frame: bool  # True when moved from the frame's position by its pixel offset

    @property
    def severity(self) -> str:
        return self.crack["severity"]

    def badness(self) -> tuple:
        return (SEVERITY_ORDER.get(self.severity, 0), self.crack.get("max_width_px", 0.0), self.crack.get("length_px", 0.0))


@dataclass
class CrackGroup:
    """One physical crack: its observations in capture order; ``worst`` represents it."""

    observations: list[Observation]

    @property
    def worst(self) -> Observation:
        return max(self.observations, key=Observation.badness)

    @property
    def first(self) -> Observation:
        return self.observations[0]

    @property
    def last(self) -> Observation:
        return self.observations[-1]


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)


def crack_position(alert: dict, crack: dict) -> tuple[float | None, float | None, bool]:
    """(lat, lon, moved_by_pixel_offset) of one crack of an alert (module docstring)."""
    geo = alert.get("geo")
    if not geo or geo.get("stale"):
        return None, None, False
    lat, lon = float(geo["lat"]), float(geo["lon"])
    gsd, heading = alert.get("gsd_mm_per_px"), geo.get("heading_deg")
    if gsd is None or heading is None:
        return lat, lon, False
    x, y, w, h = crack["bbox"]
    size = alert["frame_size"]
    right_m = (x + w / 2 - size["width"] / 2) * gsd / 1000.0
    up_m = -(y + h / 2 - size["height"] / 2) * gsd / 1000.0
    theta = math.radians(heading)
    north = up_m * math.cos(theta) - right_m * math.sin(theta)
    east = up_m * math.sin(theta) + right_m * math.cos(theta)
    lat2 = lat + north / METRES_PER_DEGREE_LAT
    lon2 = lon + east / (METRES_PER_DEGREE_LAT * max(math.cos(math.radians(lat)), 1e-6))
    return lat2, lon2, True


def observations(alerts: list[dict]) -> list[Observation]:
    """Every crack of every alert, in capture order (then frame, then the alert's crack order)."""
    out = []
    for alert in alerts:
        when = parse_time(alert["capture_time"])
        for crack in alert.get("cracks") or []:
            lat, lon, moved = crack_position(alert, crack)
            out.append(Observation(alert, crack, when, alert["device_id"], alert["source"], int(alert["frame_index"]),
                                   lat, lon, moved))
    out.sort(key=lambda o: (o.capture_time, o.device_id, o.source, o.frame_index))
    return out


def distance_m(a: Observation, b: Observation) -> float:
    """Ground distance between two observations' positions, m (equirectangular: exact enough below 1 km)."""
    mean_lat = math.radians((a.lat + b.lat) / 2)
    dy = (a.lat - b.lat) * METRES_PER_DEGREE_LAT
    dx = ((a.lon - b.lon + 180.0) % 360.0 - 180.0) * METRES_PER_DEGREE_LAT * math.cos(mean_lat)
    return math.hypot(dx, dy)


def box_overlap(a: list[int], b: list[int], margin_px: float) -> float:
    """Intersection of the two boxes grown by ``margin_px``, over the smaller grown box's area."""
    ax0, ay0, ax1, ay1 = a[0] - margin_px, a[1] - margin_px, a[0] + a[2] + margin_px, a[1] + a[3] + margin_px
    bx0, by0, bx1, by1 = b[0] - margin_px, b[1] - margin_px, b[0] + b[2] + margin_px, b[1] + b[3] + margin_px
    inter = max(0.0, min(ax1, bx1) - max(ax0, bx0)) * max(0.0, min(ay1, by1) - max(ay0, by0))
    smaller = min((ax1 - ax0) * (ay1 - ay0), (bx1 - bx0) * (by1 - by0))
    return inter / smaller if smaller > 0 else 0.0


def scene_signature(image: np.ndarray) -> np.ndarray:
    """A 32 x 32 grey thumbnail of a frame, zero mean and unit norm: its dot product with another is their correlation."""
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    small = cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float64).ravel()
    small -= small.mean()
    norm = np.linalg.norm(small)
    return small / norm if norm > 0 else small


def _same_scene(a: Observation, b: Observation, signatures: dict[str, np.ndarray], opts: DedupOptions) -> bool:
    sa, sb = signatures.get(a.alert["alert_id"]), signatures.get(b.alert["alert_id"])
    return sa is None or sb is None or float(sa @ sb) >= opts.min_scene_correlation


def _closeness(group: CrackGroup, obs: Observation, opts: DedupOptions, signatures: dict[str, np.ndarray]) -> float | None:
    """How well ``obs`` continues ``group`` (lower is better), None when it is another crack."""
    last = group.last
    if (last.device_id, last.source) != (obs.device_id, obs.source) or last.frame_index == obs.frame_index:
        return None
    if (obs.capture_time - last.capture_time).total_seconds() > opts.max_gap_s:
        return None
    if last.lat is not None and obs.lat is not None:
        d = distance_m(last, obs)
        return d if d <= opts.max_distance_m else None
    overlap = box_overlap(last.crack["bbox"], obs.crack["bbox"], opts.margin_px)
    if overlap < opts.min_overlap or not _same_scene(last, obs, signatures, opts):
        return None
    return -overlap


def group_cracks(alerts: list[dict], opts: DedupOptions = DedupOptions(),  # noqa: B008
                 signatures: dict[str, np.ndarray] | None = None) -> list[CrackGroup]:
    """The cracks of ``alerts`` grouped into physical cracks (rules in the module docstring), worst first.

    ``signatures``: :func:`scene_signature` of each alert's snapshot by alert_id, where there is one.
    """
    signatures = signatures or {}
    groups: list[CrackGroup] = []
    for obs in observations(alerts):
        taken = {id(g) for g in groups if g.last.alert is obs.alert}  # one crack of a frame per group
        best, best_score = None, None
        for group in groups:
            if id(group) in taken:
                continue
            score = _closeness(group, obs, opts, signatures)
            if score is not None and (best_score is None or score < best_score):
                best, best_score = group, score
        if best is None:
            groups.append(CrackGroup([obs]))
        else:
            best.observations.append(obs)
    groups.sort(key=lambda g: tuple(-v for v in g.worst.badness()) + (g.first.capture_time.timestamp(),))
    return groups


def track_points(alerts: list[dict]) -> list[tuple[float, float]]:
    """(lat, lon) of every alert's frame with a position that is not stale, in capture order."""
    located = [a for a in alerts if a.get("geo") and not a["geo"].get("stale")]
    located.sort(key=lambda a: parse_time(a["capture_time"]))
    return [(float(a["geo"]["lat"]), float(a["geo"]["lon"])) for a in located]


def summary_row(group: CrackGroup) -> dict[str, Any]:
    """One report/CSV row for a physical crack (its worst observation's sizes)."""
    w = group.worst
    c = w.crack
    return {
        "crack_id": f"{w.alert['alert_id'][:8]}-{w.alert['cracks'].index(c) + 1}",
        "severity": w.severity,
        "length_px": c.get("length_px"), "max_width_px": c.get("max_width_px"),
        "length_mm": c.get("length_mm"), "max_width_mm": c.get("max_width_mm"),
        "first_seen": group.first.alert["capture_time"], "last_seen": group.last.alert["capture_time"],
        "frames": len({(o.source, o.frame_index) for o in group.observations}),
        "lat": None if w.lat is None else round(w.lat, 8), "lon": None if w.lon is None else round(w.lon, 8),
        "position": "crack" if w.located_in_frame else ("frame" if w.lat is not None else ""),
        "position_source": (w.alert.get("geo") or {}).get("source", ""),
        "device_id": w.device_id, "source": w.source, "frame_index": w.frame_index,
        "alert_id": w.alert["alert_id"],
    }
