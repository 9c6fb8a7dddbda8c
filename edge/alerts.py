"""Crack alerts: the JSON document (schema v1, ``edge/schemas/alert.schema.json``) and the policy that
decides which frames raise one (pure: the clock is passed in, state lives in the policy object).

An alert is a plain dict, built by :func:`build_alert` from a :class:`~edge.measure.FrameMeasurement`
and checked with :func:`validate_alert`. :class:`AlertPolicy` keeps a crack seen in 30 consecutive
frames from becoming 30 alerts; its rules are in its docstring and in docs/EDGE_CORE.md.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

from edge.config import AlertsConfig
from edge.geo.ground import ground_distance_m
from edge.measure import FrameMeasurement
from edge.severity import severity_rank

SCHEMA_VERSION = 1
SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "alert.schema.json"
MAX_CRACKS = 256  # the schema's cracks.maxItems


class AlertError(ValueError):
    """An alert cannot be built from these arguments; the message names the argument."""


def new_alert_id() -> str:
    """A fresh alert id (UUID4 hex, 32 characters): subscribers de-duplicate deliveries on it."""
    return uuid.uuid4().hex


def _utc_iso(name: str, value: datetime) -> str:
    if not isinstance(value, datetime):
        raise AlertError(f"{name} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise AlertError(f"{name} must be timezone-aware (e.g. datetime.now(timezone.utc)), got naive {value}")
    return value.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def model_info(name: str, sha256: str, threshold: float, precision: str) -> dict[str, Any]:
    """The alert's ``model`` object: model name, SHA-256 of the model file (hex), threshold, precision."""
    return {"name": str(name), "sha256": str(sha256).lower(), "threshold": float(threshold), "precision": str(precision)}


def _frame_size(frame_size: Mapping[str, int] | Sequence[int]) -> dict[str, int]:
    if isinstance(frame_size, Mapping):
        try:
            return {"width": int(frame_size["width"]), "height": int(frame_size["height"])}
        except KeyError as exc:
            raise AlertError(f"frame_size needs 'width' and 'height', got keys {sorted(frame_size)}") from exc
    if len(frame_size) != 2:
        raise AlertError(f"frame_size must be (width, height) in pixels, got {frame_size!r}")
    return {"width": int(frame_size[0]), "height": int(frame_size[1])}


def build_alert(
    measurement: FrameMeasurement,
    *,
    device_id: str,
    sequence: int,
    created_at: datetime,
    capture_time: datetime,
    source: str,
    frame_index: int,
    frame_size: Mapping[str, int] | Sequence[int],
    model_info: Mapping[str, Any],
    gsd_mm_per_px: float | None = None,
    gsd_error_mm_per_px: float | None = None,
    geo: Mapping[str, Any] | None = None,
    snapshot: Mapping[str, str] | None = None,
    max_cracks: int = MAX_CRACKS,
    alert_id: str | None = None,
    file: str | None = None,
) -> dict[str, Any]:
    """The alert dict (schema v1) for a frame with at least one crack.

    ``created_at`` / ``capture_time``: timezone-aware datetimes, written as UTC ISO 8601.
    ``frame_size``: ``(width, height)`` or ``{"width", "height"}`` in pixels of the camera frame.
    ``model_info``: ``{"name", "sha256", "threshold", "precision"}`` (see :func:`model_info`).
    ``gsd_mm_per_px``: defaults to the measurement's; ``gsd_error_mm_per_px``: its error bound when it
    comes from camera geometry. ``geo``: ``{"lat", "lon"[, "alt_m", "heading_deg", "source", "age_s", ...]}``
    (``edge.geo.Position.to_alert_geo``).
    ``snapshot``: ``{"path"[, "topic"]}`` of the overlay JPEG. ``cracks`` keeps the first
    ``max_cracks`` (<= 256) of the measurement's, which come most severe first, then longest.
    ``alert_id``: pass one from :func:`new_alert_id` when the snapshot is saved under it first.
    ``file``: the name of the image file the frame came from (image folders), so a reader finds the photo.
    """
    if not measurement.cracks:
        raise AlertError("the measurement has no crack: an alert needs at least one (ask AlertPolicy.decide first)")
    if not 1 <= max_cracks <= MAX_CRACKS:
        raise AlertError(f"max_cracks must be in 1..{MAX_CRACKS} (the schema's limit), got {max_cracks}")
    if gsd_mm_per_px is None:
        gsd_mm_per_px = measurement.gsd_mm_per_px
    alert: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "alert_id": alert_id or new_alert_id(),
        "device_id": device_id,
        "sequence": int(sequence),
        "created_at": _utc_iso("created_at", created_at),
        "capture_time": _utc_iso("capture_time", capture_time),
        "source": source,
        "frame_index": int(frame_index),
        **({} if file is None else {"file": str(file)}),
        "frame_size": _frame_size(frame_size),
        "model": dict(model_info),
        "severity": measurement.severity,
        "coverage": round(float(measurement.coverage), 6),
        "gsd_mm_per_px": None if gsd_mm_per_px is None else float(gsd_mm_per_px),
        **({} if gsd_error_mm_per_px is None else {"gsd_error_mm_per_px": round(float(gsd_error_mm_per_px), 6)}),
        "cracks": [crack.to_dict() for crack in measurement.cracks[:max_cracks]],
        "geo": None if geo is None else dict(geo),
        "snapshot": None if snapshot is None else dict(snapshot),
    }
    return alert


def _is_datetime(value: object) -> bool:
    """RFC 3339 date-time check with the standard library (jsonschema's own needs an optional package
    that a plain install lacks, which silently turned the check off)."""
    if not isinstance(value, str):
        return True  # formats constrain strings only; the schema's "type" catches the rest
    if "T" not in value.upper():
        return False
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return False
    return parsed.tzinfo is not None  # RFC 3339 requires an offset


@lru_cache(maxsize=4)
def alert_validator(schema_path: Path = SCHEMA_PATH):
    """A jsonschema validator of alert schema v1 that checks the date-time fields on any install."""
    try:
        import jsonschema
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("alert validation needs jsonschema: pip install 'aelf-crack[edge]' or jsonschema") from exc
    schema = json.loads(Path(schema_path).read_text(encoding="utf-8"))
    checker = jsonschema.FormatChecker()
    checker.checks("date-time")(_is_datetime)
    return jsonschema.Draft202012Validator(schema, format_checker=checker)


def validate_alert(alert: Mapping[str, Any]) -> list[str]:
    """Every way ``alert`` breaks schema v1, as ``"<field path>: <reason>"`` lines; empty when valid.

    The field path is slash-separated from the top (``cracks/0/area_px``); ``(root)`` for the object.
    """
    errors = sorted(alert_validator().iter_errors(alert), key=lambda e: [str(p) for p in e.absolute_path])
    return [f"{'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}" for e in errors]


# ----------------------------------------------------------------------------- alert policy


def _grow(bbox: Sequence[int], margin: float) -> tuple[float, float, float, float]:
    x, y, w, h = bbox
    return x - margin, y - margin, x + w + margin, y + h + margin


def box_overlap(a: Sequence[int], b: Sequence[int], margin_px: float = 0.0) -> float:
    """Intersection over the smaller box of two ``(x, y, w, h)`` boxes, each grown by ``margin_px``.

    Over the smaller box rather than IoU because a crack that breaks into two pieces in the next
    frame (or two pieces that join) still overlaps fully; the margin lets a thin crack's box,
    a few pixels tall, jitter by a few pixels and still match.
    """
    ax0, ay0, ax1, ay1 = _grow(a, margin_px)
    bx0, by0, bx1, by1 = _grow(b, margin_px)
    iw = min(ax1, bx1) - max(ax0, bx0)
    ih = min(ay1, by1) - max(ay0, by0)
    if iw <= 0 or ih <= 0:
        return 0.0
    smaller = min((ax1 - ax0) * (ay1 - ay0), (bx1 - bx0) * (by1 - by0))
    return iw * ih / smaller if smaller > 0 else 0.0


@dataclass
class _Track:
    bbox: tuple[int, int, int, int]
    rank: int  # severity rank last alerted for this crack
    alerted_s: float
    seen_s: float
    place: tuple[float, float] | None = None  # (lat, lon) on the ground where first seen, when known


@dataclass
class _SourceState:
    tracks: list[_Track] = field(default_factory=list)
    last_alert_s: float = -math.inf
    last_alert_rank: int = 0
    view: str | None = None


class AlertPolicy:
    """Decides which frames raise an alert; call :meth:`decide` once per measured frame.

    A frame raises an alert when all of these hold:

    1. it has at least one crack of severity >= ``min_severity`` (smaller cracks are ignored
       throughout) and its coverage is >= ``min_coverage``;
    2. at least one of those cracks is **new or worse**: it matches no crack of this source seen
       within ``cooldown_s``, or its severity is higher than the one last alerted for the crack it
       matches, or that crack was last alerted ``cooldown_s`` or more ago (a reminder). Two cracks
       match when **both have a ground position** (``places``) at most ``match_distance_m`` apart:
       the same crack is the same place, however the camera moved; otherwise when their boxes
       match (:func:`box_overlap` with ``match_margin_px`` >= ``match_overlap``), which only means
       something while the camera looks at the same scene;
    3. the source's last alert is at least ``source_cooldown_s`` old, unless this frame's severity
       is higher than that alert's (0 = off): a cap on alerts per source.

    **A new photo is a new view** (``per_photo``, the default): when the frame's ``view`` (the image
    file's name) differs from the previous frame's, the source's cracks are forgotten, so a survey of
    photos gives one alert per photo with cracks (the report merges the same crack across photos by
    position). Video and cameras have no view: their frames are one scene.

    Box-matched cracks update their remembered box every frame, alerted or not, so a crack drifting
    across the frame stays the same crack; position-matched ones keep the place where they were
    first seen. Cracks unseen for ``cooldown_s`` are forgotten. ``now_s`` is seconds on any
    non-decreasing clock (the pipeline passes the frame's capture time). ``last_reason`` says why
    the last decision went the way it did (for the log). The thresholds are the fields of
    ``config`` (edge/config.py's AlertsConfig, validated there).
    """

    def __init__(self, config: AlertsConfig) -> None:
        self.config = config
        self.last_reason = ""
        self._sources: dict[str, _SourceState] = {}

    def reset(self) -> None:
        """Forget every crack and cool-down (e.g. when the camera is re-aimed)."""
        self._sources.clear()

    def decide(self, measurement: FrameMeasurement, now_s: float, source: str, *, view: str | None = None,
               places: Sequence[tuple[float, float] | None] | None = None) -> bool:
        """True when this frame should raise an alert; updates the policy's memory either way.

        ``view``: the photo's file name for image folders (None for video/cameras). ``places``: the
        ground (lat, lon) of each crack of ``measurement`` in its order, None where unknown or stale.
        """
        state = self._sources.setdefault(source, _SourceState())
        if self.config.per_photo and view is not None and view != state.view:
            state.tracks = []  # another photo: boxes of the last one say nothing about this one
        state.view = view
        state.tracks = [t for t in state.tracks if now_s - t.seen_s < self.config.cooldown_s]
        floor = severity_rank(self.config.min_severity)
        places = list(places) if places is not None else [None] * len(measurement.cracks)
        cracks = [(c, p) for c, p in zip(measurement.cracks, places, strict=False)
                  if severity_rank(c.severity) >= floor]
        if not cracks:
            self.last_reason = f"no crack of severity >= {self.config.min_severity}"
            return False
        if measurement.coverage < self.config.min_coverage:
            self.last_reason = f"coverage {measurement.coverage:.5f} < min_coverage {self.config.min_coverage}"
            return False

        matches: list[tuple[Any, tuple[float, float] | None, _Track | None]] = []
        fresh = []
        for crack, place in cracks:
            track = self._best_match(state.tracks, crack.bbox, place)
            matches.append((crack, place, track))
            rank = severity_rank(crack.severity)
            if track is None or rank > track.rank or now_s - track.alerted_s >= self.config.cooldown_s:
                fresh.append(crack)
        frame_rank = max(severity_rank(c.severity) for c, _ in cracks)

        alert = bool(fresh)
        if not alert:
            self.last_reason = f"{len(cracks)} crack(s) already alerted within cooldown_s={self.config.cooldown_s}"
        elif now_s - state.last_alert_s < self.config.source_cooldown_s and frame_rank <= state.last_alert_rank:
            alert = False
            self.last_reason = (
                f"source {source!r} alerted {now_s - state.last_alert_s:.2f} s ago "
                f"(< source_cooldown_s={self.config.source_cooldown_s}) and severity did not increase"
            )
        else:
            self.last_reason = f"{len(fresh)} new or worse crack(s)"

        for crack, place, track in matches:
            rank = severity_rank(crack.severity)
            if track is None:
                track = _Track(tuple(crack.bbox), rank if alert else 0, now_s if alert else -math.inf, now_s, place)
                state.tracks.append(track)
            track.bbox, track.seen_s = tuple(crack.bbox), now_s
            if track.place is None:
                track.place = place
            if alert:
                track.rank, track.alerted_s = max(track.rank, rank), now_s
        if len(state.tracks) > self.config.max_tracks_per_source:
            state.tracks.sort(key=lambda t: t.seen_s)
            del state.tracks[: len(state.tracks) - self.config.max_tracks_per_source]
        if alert:
            state.last_alert_s, state.last_alert_rank = now_s, frame_rank
        return alert

    def _best_match(self, tracks: list[_Track], bbox: Sequence[int], place: tuple[float, float] | None) -> _Track | None:
        if place is not None:
            located = [(ground_distance_m(*place, *t.place), t) for t in tracks if t.place is not None]
            near = [(d, t) for d, t in located if d <= self.config.match_distance_m]
            if near:
                return min(near, key=lambda dt: dt[0])[1]
            if located:
                return None  # the camera knows where it is: a crack elsewhere is another crack
        best, best_overlap = None, self.config.match_overlap
        for track in tracks:
            overlap = box_overlap(track.bbox, bbox, self.config.match_margin_px)
            if overlap >= best_overlap:
                best, best_overlap = track, overlap
        return best
