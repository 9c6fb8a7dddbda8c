"""Position and GSD of each frame, from the configured source (``[geo]``) and camera (``[camera]``).

:class:`FrameLocator` is what the pipeline asks, once per frame, after inference: ``locate(frame,
width_px)`` -> :class:`FrameGeo` (the alert's ``geo`` object and, where the geometry is known, the
frame's GSD with its error bound). Sources:

* ``fixed``: the configured position, age 0 (a mounted camera);
* ``exif``: the GPS of the image file the frame was read from (image folder sources); the
  position belongs to the image itself, so its age is 0;
* ``auto`` (the default): the image file's EXIF GPS where it has one, else no position;
* ``gpsd`` / ``mavlink``: a receiver thread fills a :class:`~edge.geo.track.Track`; the frame's
  position is read at its capture time (interpolated, aged, flagged stale: see edge/geo/track.py).
  A frame captured after the newest fix waits (at most ``max_age_s``) for the next one, so a 1 Hz
  receiver's frames are interpolated instead of given the fix up to a second before them; it waits
  only while the receiver is delivering (newest fix within ``max_age_s`` of the capture);
* ``log``: a recorded NMEA/GPX file (edge/geo/logs.py), read whole at start, for a video processed
  afterwards with ``source.start_time``.

GSD (edge/gsd.py) needs a distance (``camera.distance_m``; else the position's height above the
surface; else ``alt_m - camera.ground_alt_m``), a focal length and a sensor width (``[camera]``,
else the image's EXIF). A stale position gives no GSD: the configured ``tiling.gsd_mm_per_px``
(or none) is used then, as when any part of the geometry is missing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.geo.exif import EXIF_SUFFIXES, ExifInfo, read_exif
from edge.geo.logs import read_position_log
from edge.geo.receivers import GpsdReceiver, MavlinkReceiver
from edge.geo.track import Fix, Position, Track
from edge.gsd import GsdError, GsdEstimate, gsd_from_geometry

if TYPE_CHECKING:
    from edge.config import CameraConfig, EdgeConfig, GeoConfig

log = logging.getLogger("edge.geo")


@dataclass(frozen=True)
class FrameGeo:
    """Where one frame was taken (None: unknown) and its GSD from geometry (None: not computable)."""

    position: Position | None = None
    gsd: GsdEstimate | None = None

    def alert_geo(self) -> dict[str, Any] | None:
        """The alert's ``geo`` object, or None without a position."""
        return None if self.position is None else self.position.to_alert_geo()


def frame_file(frame: Any) -> Path | None:
    """The image file a folder/file source read ``frame`` from (its ``source_id`` + ``name``), else None."""
    name = getattr(frame, "name", None)
    if not name:
        return None
    base = Path(frame.source_id)
    return base / name if base.is_dir() else base


class FrameLocator:
    """Positions and GSDs for frames; ``start()`` opens a gpsd/MAVLink receiver, ``close()`` ends it."""

    def __init__(self, geo: GeoConfig, camera: CameraConfig, *, track: Track | None = None) -> None:
        self.geo, self.camera = geo, camera
        if track is None and geo.source == "log":
            track = read_position_log(geo.log_path)
        self.track = track or Track(geo.track_keep_s)
        self.receiver = None
        self._warned_import = False
        if geo.source == "gpsd":
            self.receiver = GpsdReceiver(self.track, geo.gpsd_host, geo.gpsd_port)
        elif geo.source == "mavlink":
            self.receiver = MavlinkReceiver(self.track, geo.mavlink_url, geo.mavlink_baud)

    @classmethod
    def from_config(cls, config: EdgeConfig) -> FrameLocator:
        """From an :class:`~edge.config.EdgeConfig` (its ``geo`` and ``camera`` sections)."""
        return cls(config.geo, config.camera)

    def start(self) -> FrameLocator:
        if self.receiver is not None:
            self.receiver.start()
        return self

    def close(self) -> None:
        if self.receiver is not None:
            self.receiver.close()

    def locate(self, frame: Any, width_px: int) -> FrameGeo:
        """Position of ``frame`` at its capture time and, when the geometry is known, its GSD for ``width_px``."""
        capture_s = frame.capture_time.timestamp()
        source = self.geo.source
        position: Position | None = None
        if source == "fixed":
            fix = Fix(capture_s, self.geo.lat, self.geo.lon, "fixed", alt_m=self.geo.alt_m,
                      heading_deg=self.geo.heading_deg)
            position = Position(fix, 0.0, False, False)
        elif source in ("gpsd", "mavlink"):
            self._wait_for_next_fix(capture_s)
            position = self.track.position_at(capture_s, self.geo.max_age_s)
        elif source == "log":
            position = self.track.position_at(capture_s, self.geo.max_age_s)
        exif = self._exif(frame, capture_s) if self._needs_exif() else None
        if source in ("exif", "auto") and exif is not None and exif.fix is not None:
            position = Position(exif.fix, 0.0, False, False)
        return FrameGeo(position, self._gsd(position, exif, width_px))

    def _wait_for_next_fix(self, capture_s: float) -> None:
        """Hold a frame newer than the newest fix until the next fix (or max_age_s), while fixes arrive."""
        newest = self.track.newest_time_s()
        if newest is not None and newest < capture_s and capture_s - newest <= self.geo.max_age_s:
            self.track.wait_past(capture_s, self.geo.max_age_s)

    def _needs_exif(self) -> bool:
        """EXIF is read for the position, or for missing intrinsics when a distance can be known."""
        if self.geo.source in ("exif", "auto"):
            return True
        missing = self.camera.focal_length_mm is None or self.camera.sensor_width_mm is None
        return missing and (self.geo.source != "none" or self.camera.distance_m is not None)

    def _exif(self, frame: Any, capture_s: float) -> ExifInfo | None:
        path = frame_file(frame)
        if path is None:
            return None
        if self.geo.source == "auto" and path.suffix.lower() not in EXIF_SUFFIXES:
            return None  # a PNG/BMP has no EXIF: nothing to say about it
        try:
            return read_exif(path, fallback_time_s=capture_s)
        except ImportError as exc:
            if self.geo.source == "exif":
                raise
            if not self._warned_import:
                self._warned_import = True
                log.warning("%s: positions and camera geometry from EXIF are off", exc)
            return None
        except Exception as exc:  # a file without readable EXIF still gets its alert, without a position
            log.warning("%s", exc)
            return None

    def _gsd(self, position: Position | None, exif: ExifInfo | None, width_px: int) -> GsdEstimate | None:
        cam = self.camera
        focal = cam.focal_length_mm or (exif.focal_length_mm if exif else None)
        sensor = cam.sensor_width_mm or (exif.sensor_width_mm if exif else None)
        distance, tilt = cam.distance_m, None
        if position is not None and not position.stale:
            fix = position.fix
            tilt = fix.tilt_deg
            if distance is None:
                if fix.height_m is not None:
                    distance = fix.height_m
                elif fix.alt_m is not None and cam.ground_alt_m is not None:
                    distance = fix.alt_m - cam.ground_alt_m
        if focal is None or sensor is None or distance is None:
            return None
        try:
            return gsd_from_geometry(distance, focal, sensor, width_px, distance_error_m=cam.distance_error_m,
                                     tilt_deg=cam.max_tilt_deg if tilt is None else tilt)
        except GsdError as exc:  # e.g. a drone still on the ground (height 0): no GSD for this frame
            log.debug("no GSD from geometry: %s", exc)
            return None
