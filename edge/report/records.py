"""Alerts in, one record per crack observation out, and the same crack across frames found (pure).

Reading (files, databases) is in :mod:`edge.report.load`; this module only turns alert dicts into
:class:`Observation` s and groups them into :class:`CrackGroup` s.

**Where a crack is** (edge/geo/ground.py). An alert's ``geo`` is where the frame was taken. With a
GSD and a heading, the crack's own position is the frame's moved by the crack's offset from the
image centre (camera looking down, image top along the heading); otherwise the frame's position.
A stale position (``geo.stale``) is kept and shown, flagged, but never used to merge.

**The same crack in several frames** (deduplication). Observations are taken in capture order;
one joins the group of an earlier observation when all of these hold:

* same device and same source, and not the same frame (two cracks of one frame are two cracks);
* captured at most ``max_gap_s`` after the group's latest observation;
* with fresh positions on both: their crack positions at most ``max_distance_m`` apart; when the
  two are **different photos** (``file`` differs), only crack positions (moved by GSD and heading)
  count: two photos' frame positions say nothing about where in each photo a crack is;
* without positions: their boxes, each grown by ``margin_px``, overlap by at least ``min_overlap``
  of the smaller box, and the two frames show the same scene: the correlation of their 32 x 32 grey
  thumbnails (:func:`scene_signature`) is at least ``min_scene_correlation``. Frames of a video
  without snapshots are taken as one scene; **different photos without both snapshots are never
  merged** (nothing says they show the same place).

Of the candidate groups the nearest (in metres, else the largest overlap) is taken. Only groups
seen within ``max_gap_s`` are candidates (a sliding window over capture time), and located ones are
looked up in a grid of ``max_distance_m`` cells, so grouping is linear in the number of alerts.
A group is shown by its worst observation (highest severity, then widest, then longest).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import cv2
import numpy as np

from edge.geo.ground import METRES_PER_DEGREE_LAT, crack_ground_position, ground_distance_m

SEVERITY_ORDER = {"low": 1, "medium": 2, "high": 3}
REPORT_COLUMNS = ("crack_id", "severity", "length_px", "max_width_px", "length_mm", "max_width_mm", "extent_m",
                  "first_seen", "last_seen", "frames", "file", "files", "lat", "lon", "position", "position_source",
                  "position_age_s", "position_stale", "gsd_mm_per_px", "gsd_error_mm_per_px", "chainage_m",
                  "device_id", "source", "frame_index", "alert_id", "observations")

__all__ = ["METRES_PER_DEGREE_LAT", "CrackGroup", "DedupOptions", "Observation", "group_cracks", "summary_row"]


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
    stale: bool = False  # the position is older than the daemon's geo.max_age_s: shown, never merged on

    @property
    def severity(self) -> str:
        return self.crack["severity"]

    @property
    def file(self) -> str | None:
        return self.alert.get("file")

    @property
    def fresh_position(self) -> bool:
        return self.lat is not None and not self.stale

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
    """(lat, lon, moved_by_pixel_offset) of one crack of an alert (module docstring); stale ones too."""
    geo = alert.get("geo")
    if not geo:
        return None, None, False
    size = alert["frame_size"]
    return crack_ground_position(float(geo["lat"]), float(geo["lon"]), geo.get("heading_deg"),
                                 alert.get("gsd_mm_per_px"), crack["bbox"], size["width"], size["height"])


def observations(alerts: list[dict]) -> list[Observation]:
    """Every crack of every alert, in capture order (then frame, then the alert's crack order)."""
    out = []
    for alert in alerts:
        when = parse_time(alert["capture_time"])
        stale = bool((alert.get("geo") or {}).get("stale"))
        for crack in alert.get("cracks") or []:
            lat, lon, moved = crack_position(alert, crack)
            out.append(Observation(alert, crack, when, alert["device_id"], alert["source"], int(alert["frame_index"]),
                                   lat, lon, moved, stale))
    out.sort(key=lambda o: (o.capture_time, o.device_id, o.source, o.frame_index))
    return out


def distance_m(a: Observation, b: Observation) -> float:
    """Ground distance between two observations' positions, m."""
    return ground_distance_m(a.lat, a.lon, b.lat, b.lon)


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


SignatureLookup = Callable[[str], "np.ndarray | None"]


def _same_scene(a: Observation, b: Observation, signature: SignatureLookup, opts: DedupOptions) -> bool:
    sa, sb = signature(a.alert["alert_id"]), signature(b.alert["alert_id"])
    if sa is None or sb is None:
        different_photos = a.file is not None and b.file is not None and a.file != b.file
        return not different_photos  # a video's frames are one scene; two photos need proof
    return float(sa @ sb) >= opts.min_scene_correlation


def _closeness(group: CrackGroup, obs: Observation, opts: DedupOptions, signature: SignatureLookup) -> float | None:
    """How well ``obs`` continues ``group`` (lower is better), None when it is another crack."""
    last = group.last
    if (last.device_id, last.source) != (obs.device_id, obs.source) or last.frame_index == obs.frame_index:
        return None
    if last.alert is obs.alert:
        return None
    if (obs.capture_time - last.capture_time).total_seconds() > opts.max_gap_s:
        return None
    if last.fresh_position and obs.fresh_position:
        if last.file != obs.file and not (last.located_in_frame and obs.located_in_frame):
            return None  # two photos' frame positions do not place their cracks
        d = distance_m(last, obs)
        return d if d <= opts.max_distance_m else None
    overlap = box_overlap(last.crack["bbox"], obs.crack["bbox"], opts.margin_px)
    if overlap < opts.min_overlap or not _same_scene(last, obs, signature, opts):
        return None
    return -overlap


class _Grid:
    """Groups by the ground cell (``cell_m`` square) of their latest fresh position."""

    def __init__(self, cell_m: float) -> None:
        self.cell_m = max(cell_m, 1e-3)
        self.cells: dict[tuple[int, int], list[CrackGroup]] = defaultdict(list)

    def cell(self, lat: float, lon: float) -> tuple[int, int]:
        y = lat * METRES_PER_DEGREE_LAT / self.cell_m
        x = lon * METRES_PER_DEGREE_LAT * math.cos(math.radians(lat)) / self.cell_m
        return int(math.floor(y)), int(math.floor(x))

    def near(self, lat: float, lon: float) -> list[CrackGroup]:
        cy, cx = self.cell(lat, lon)
        return [g for dy in (-1, 0, 1) for dx in (-1, 0, 1) for g in self.cells.get((cy + dy, cx + dx), ())]

    def add(self, group: CrackGroup, lat: float, lon: float) -> None:
        self.cells[self.cell(lat, lon)].append(group)

    def remove(self, group: CrackGroup, lat: float, lon: float) -> None:
        bucket = self.cells.get(self.cell(lat, lon))
        if bucket is not None:
            bucket[:] = [g for g in bucket if g is not group]
            if not bucket:
                del self.cells[self.cell(lat, lon)]


def group_cracks(alerts: list[dict], opts: DedupOptions = DedupOptions(),  # noqa: B008
                 signatures: dict[str, np.ndarray] | SignatureLookup | None = None) -> list[CrackGroup]:
    """The cracks of ``alerts`` grouped into physical cracks (rules in the module docstring), worst first.

    ``signatures``: :func:`scene_signature` of each alert's snapshot by alert_id, as a dict or a lookup
    function (called only for observations without positions, so snapshots are decoded only then).
    """
    if signatures is None:
        lookup: SignatureLookup = lambda _id: None  # noqa: E731
    elif isinstance(signatures, dict):
        lookup = signatures.get
    else:
        lookup = signatures
    groups: list[CrackGroup] = []
    active: dict[tuple[str, str], list[CrackGroup]] = defaultdict(list)  # seen within max_gap_s, by device+source
    grids: dict[tuple[str, str], _Grid] = defaultdict(lambda: _Grid(opts.max_distance_m))
    for obs in observations(alerts):
        key = (obs.device_id, obs.source)
        window, grid = active[key], grids[key]
        if window and (obs.capture_time - window[0].last.capture_time).total_seconds() > opts.max_gap_s:
            keep = []
            for g in window:
                if (obs.capture_time - g.last.capture_time).total_seconds() <= opts.max_gap_s:
                    keep.append(g)
                elif g.last.fresh_position:
                    grid.remove(g, g.last.lat, g.last.lon)
            window[:] = keep
        if obs.fresh_position:
            candidates = grid.near(obs.lat, obs.lon) + [g for g in window if not g.last.fresh_position]
        else:
            candidates = window
        best, best_score = None, None
        for group in candidates:
            score = _closeness(group, obs, opts, lookup)
            if score is not None and (best_score is None or score < best_score):
                best, best_score = group, score
        if best is None:
            best = CrackGroup([obs])
            groups.append(best)
        else:
            if best.last.fresh_position:
                grid.remove(best, best.last.lat, best.last.lon)
            window.remove(best)
            best.observations.append(obs)
        window.append(best)  # the window stays ordered by each group's latest sighting
        if obs.fresh_position:
            grid.add(best, obs.lat, obs.lon)
    groups.sort(key=lambda g: tuple(-v for v in g.worst.badness()) + (g.first.capture_time.timestamp(),))
    return groups


def track_points(alerts: list[dict]) -> list[tuple[float, float]]:
    """(lat, lon) of every alert's frame with a position that is not stale, in capture order."""
    return [(lat, lon) for lat, lon, _ in track_with_chainage(alerts)[0]]


def track_with_chainage(alerts: list[dict]) -> tuple[list[tuple[float, float, float]], dict[str, float]]:
    """The track [(lat, lon, metres along it)] from the alerts' fresh frame positions in capture order, and
    each located alert's distance along the track by alert_id."""
    located = [a for a in alerts if a.get("geo") and not a["geo"].get("stale")]
    located.sort(key=lambda a: parse_time(a["capture_time"]))
    points, chainage, along = [], {}, 0.0
    for alert in located:
        lat, lon = float(alert["geo"]["lat"]), float(alert["geo"]["lon"])
        if points:
            along += ground_distance_m(points[-1][0], points[-1][1], lat, lon)
        points.append((lat, lon, along))
        chainage[alert["alert_id"]] = along
    return points, chainage


def _footprint(obs: Observation) -> list[tuple[float, float]]:
    """The ground (lat, lon) of the crack box's four corners (needs GSD, heading and a fresh position)."""
    alert, (x, y, w, h) = obs.alert, obs.crack["bbox"]
    geo, size = alert["geo"], alert["frame_size"]
    return [crack_ground_position(float(geo["lat"]), float(geo["lon"]), geo["heading_deg"], alert["gsd_mm_per_px"],
                                  (cx, cy, 0, 0), size["width"], size["height"])[:2]
            for cx, cy in ((x, y), (x + w, y), (x, y + h), (x + w, y + h))]


def extent_m(group: CrackGroup) -> float | None:
    """The crack's extent over all its observations: the largest ground distance between two corners of
    its boxes, m (an upper bound of its length along a straight crack); None without ground positions."""
    corners = [c for o in group.observations if o.located_in_frame and not o.stale for c in _footprint(o)]
    if not corners:
        return None
    pts = np.array(corners, dtype=np.float64)
    if len(pts) > 64:  # the extent is between two points of the convex hull
        metres = np.column_stack([pts[:, 1] * math.cos(math.radians(pts[0, 0])), pts[:, 0]]) * METRES_PER_DEGREE_LAT
        hull = cv2.convexHull(metres.astype(np.float32)).reshape(-1, 2)
        diffs = hull[:, None, :] - hull[None, :, :]
        return round(float(np.sqrt((diffs ** 2).sum(-1)).max()), 3)
    best = 0.0
    for i in range(len(corners)):
        for j in range(i + 1, len(corners)):
            best = max(best, ground_distance_m(*corners[i], *corners[j]))
    return round(best, 3)


def crack_label(group: CrackGroup) -> str:
    w = group.worst
    return f"{w.alert['alert_id'][:8]}-{w.alert['cracks'].index(w.crack) + 1}"


def observation_ref(o: Observation) -> str:
    """``<alert_id>/<k>``: crack k (1-based, the alert's order) of that alert, as python -m edge.report.negatives
    reads it."""
    return f"{o.alert['alert_id']}/{o.alert['cracks'].index(o.crack) + 1}"


def summary_row(group: CrackGroup, chainage: dict[str, float] | None = None) -> dict[str, Any]:
    """One report/CSV row for a physical crack (its worst observation's sizes, the group's extent)."""
    w = group.worst
    c = w.crack
    geo = w.alert.get("geo") or {}
    files = sorted({o.file for o in group.observations if o.file})
    along = (chainage or {}).get(w.alert["alert_id"])
    return {
        "crack_id": crack_label(group),
        "severity": w.severity,
        "length_px": c.get("length_px"), "max_width_px": c.get("max_width_px"),
        "length_mm": c.get("length_mm"), "max_width_mm": c.get("max_width_mm"),
        "extent_m": extent_m(group),
        "first_seen": group.first.alert["capture_time"], "last_seen": group.last.alert["capture_time"],
        "frames": len({(o.source, o.frame_index) for o in group.observations}),
        "file": w.file or "", "files": " ".join(files),
        "lat": None if w.lat is None else round(w.lat, 8), "lon": None if w.lon is None else round(w.lon, 8),
        "position": "crack" if w.located_in_frame else ("frame" if w.lat is not None else ""),
        "position_source": geo.get("source", ""),
        "position_age_s": geo.get("age_s"), "position_stale": bool(geo.get("stale")) if geo else None,
        "gsd_mm_per_px": w.alert.get("gsd_mm_per_px"), "gsd_error_mm_per_px": w.alert.get("gsd_error_mm_per_px"),
        "chainage_m": None if along is None else round(along, 1),
        "device_id": w.device_id, "source": w.source, "frame_index": w.frame_index,
        "alert_id": w.alert["alert_id"],
        "observations": " ".join(dict.fromkeys(observation_ref(o) for o in group.observations)),
    }
