"""Position and camera geometry from an image file's EXIF (and a drone's XMP), read with piexif.

What is read, where present:

* GPS IFD: latitude/longitude (degrees, minutes, seconds + N/S/E/W), altitude (above sea level,
  or below with ``GPSAltitudeRef`` = 1), image direction (heading, 0 = north) and the UTC fix time
  (``GPSDateStamp`` + ``GPSTimeStamp``; else ``DateTimeOriginal`` with ``OffsetTimeOriginal``);
* Exif IFD: focal length (mm) and the sensor width, from the focal-plane resolution or else from
  the 35 mm-equivalent focal length (crop factor on the diagonal, 43.27 mm);
* DJI XMP (``drone-dji:RelativeAltitude``, ``GimbalPitchDegree``, ``GimbalYawDegree``): the height
  above the take-off point and the gimbal's attitude, which GSD from geometry needs.

piexif (pure Python, reads and writes EXIF in JPEG/TIFF/WebP) is used rather than hand-parsing
TIFF IFDs: rational tags, byte orders and maker-note quirks are its job.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from struct import error as struct_error

from edge.geo.track import Fix, GeoError
from edge.gsd import tilt_from_pitch

FULL_FRAME_DIAGONAL_MM = math.hypot(36.0, 24.0)  # 43.27 mm: what "35 mm equivalent" scales to
_XMP_FIELD = re.compile(rb"drone-dji:(RelativeAltitude|GimbalPitchDegree|GimbalYawDegree)\s*=\s*\"([-+0-9.]+)\"")
_UNIT_MM = {2: 25.4, 3: 10.0, 4: 1.0, 5: 0.001}  # FocalPlaneResolutionUnit: inch, cm, mm, um


@dataclass(frozen=True)
class ExifInfo:
    """What one image file says about where and how it was taken (None where it says nothing)."""

    fix: Fix | None
    focal_length_mm: float | None
    sensor_width_mm: float | None
    width_px: int | None


def _piexif():
    try:
        import piexif
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("EXIF positions need piexif: pip install 'aelf-crack[geo]' or piexif") from exc
    return piexif


def _ratio(value) -> float | None:
    if isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return None if value[1] == 0 else value[0] / value[1]
    return None


def _dms(value) -> float | None:
    if not isinstance(value, tuple) or len(value) != 3:
        return None
    parts = [_ratio(v) for v in value]
    if any(p is None for p in parts):
        return None
    return parts[0] + parts[1] / 60.0 + parts[2] / 3600.0


def _text(value) -> str | None:
    if isinstance(value, bytes):
        value = value.split(b"\0", 1)[0].decode("ascii", "replace")
    return value.strip() if isinstance(value, str) and value.strip() else None


def _gps_time(gps: dict, tags) -> datetime | None:
    """The GPS receiver's UTC time stamp (GPSDateStamp + GPSTimeStamp), or None."""
    date, hms = _text(gps.get(tags.GPSIFD.GPSDateStamp)), gps.get(tags.GPSIFD.GPSTimeStamp)
    if date and isinstance(hms, tuple) and len(hms) == 3:
        parts = [_ratio(v) for v in hms]
        if all(p is not None for p in parts):
            try:
                day = datetime.strptime(date, "%Y:%m:%d").replace(tzinfo=timezone.utc)
            except ValueError:
                return None
            return day + timedelta(hours=parts[0], minutes=parts[1], seconds=parts[2])
    return None


def _original_time(exif: dict, tags, utc_offset: str | None = None) -> datetime | None:
    """DateTimeOriginal (+ SubSecTimeOriginal) in the zone of OffsetTimeOriginal, else of ``utc_offset``."""
    original = _text(exif.get(tags.ExifIFD.DateTimeOriginal))
    offset = _text(exif.get(tags.ExifIFD.OffsetTimeOriginal)) or utc_offset
    if not original or not offset:
        return None  # local time without a zone: not a UTC time
    try:
        when = datetime.strptime(original + offset.replace(":", ""), "%Y:%m:%d %H:%M:%S%z")
    except ValueError:
        return None
    subsec = _text(exif.get(tags.ExifIFD.SubSecTimeOriginal))
    if subsec and subsec.isdigit():
        when += timedelta(seconds=int(subsec) / 10 ** len(subsec))
    return when


def _fix_time(gps: dict, exif: dict, tags) -> float | None:
    when = _gps_time(gps, tags) or _original_time(exif, tags)
    return None if when is None else when.timestamp()


EXIF_SUFFIXES = (".jpg", ".jpeg", ".tif", ".tiff", ".webp")


def photo_capture_time(path: str | Path, *, utc_offset: str | None = None) -> datetime | None:
    """When a photo was taken, timezone-aware, from its EXIF; None when it does not say (or is not EXIF-capable).

    ``DateTimeOriginal`` (+ ``SubSecTimeOriginal``) in the zone of ``OffsetTimeOriginal`` (else of
    ``utc_offset``, e.g. ``"+02:00"``, for cameras that write local time only); else the GPS receiver's
    UTC time stamp. Raises ImportError without piexif (the ``geo`` extra).
    """
    path = Path(path)
    if path.suffix.lower() not in EXIF_SUFFIXES:
        return None
    piexif = _piexif()
    try:
        data = piexif.load(str(path))
    except (OSError, ValueError, piexif.InvalidImageDataError, struct_error):
        return None
    return _original_time(data.get("Exif") or {}, piexif, utc_offset) or _gps_time(data.get("GPS") or {}, piexif)


def read_exif(path: str | Path, *, fallback_time_s: float | None = None) -> ExifInfo:
    """EXIF/XMP position and camera geometry of one image file.

    ``fallback_time_s``: the fix time used when the file carries no UTC time (the frame's capture time).
    Raises :class:`GeoError` naming the file when it cannot be read; a file without GPS gives ``fix=None``.
    """
    piexif = _piexif()
    path = Path(path)
    try:
        raw = path.read_bytes()
        data = piexif.load(raw)
    except OSError as exc:
        raise GeoError(f"{path}: cannot read the image file for its EXIF ({exc.strerror})") from exc
    except (ValueError, piexif.InvalidImageDataError) as exc:
        raise GeoError(f"{path}: unreadable EXIF ({exc})") from exc
    gps, exif, zeroth = data.get("GPS") or {}, data.get("Exif") or {}, data.get("0th") or {}
    tags = piexif
    xmp = {k.decode(): float(v) for k, v in _XMP_FIELD.findall(raw[:262144])}

    width_px = exif.get(tags.ExifIFD.PixelXDimension) or zeroth.get(tags.ImageIFD.ImageWidth)
    height_px = exif.get(tags.ExifIFD.PixelYDimension) or zeroth.get(tags.ImageIFD.ImageLength)
    focal = _ratio(exif.get(tags.ExifIFD.FocalLength))
    sensor_width = None
    resolution = _ratio(exif.get(tags.ExifIFD.FocalPlaneXResolution))
    unit_mm = _UNIT_MM.get(exif.get(tags.ExifIFD.FocalPlaneResolutionUnit, 2))
    if resolution and unit_mm and width_px:
        sensor_width = width_px / resolution * unit_mm
    focal_35 = exif.get(tags.ExifIFD.FocalLengthIn35mmFilm)
    if sensor_width is None and focal and focal_35 and width_px and height_px:
        diagonal_mm = FULL_FRAME_DIAGONAL_MM * focal / focal_35
        sensor_width = diagonal_mm * width_px / math.hypot(width_px, height_px)

    fix = None
    lat, lon = _dms(gps.get(tags.GPSIFD.GPSLatitude)), _dms(gps.get(tags.GPSIFD.GPSLongitude))
    if lat is not None and lon is not None:
        if _text(gps.get(tags.GPSIFD.GPSLatitudeRef)) == "S":
            lat = -lat
        if _text(gps.get(tags.GPSIFD.GPSLongitudeRef)) == "W":
            lon = -lon
        alt = _ratio(gps.get(tags.GPSIFD.GPSAltitude))
        if alt is not None and gps.get(tags.GPSIFD.GPSAltitudeRef) in (1, b"\x01"):
            alt = -alt
        heading = _ratio(gps.get(tags.GPSIFD.GPSImgDirection))
        if heading is None:
            heading = xmp.get("GimbalYawDegree")
        time_s = _fix_time(gps, exif, tags)
        if time_s is None:
            time_s = fallback_time_s
        if time_s is None:
            raise GeoError(f"{path}: EXIF has a position but no UTC time, and no capture time was given")
        try:
            fix = Fix(time_s=time_s, lat=lat, lon=lon, source="exif", alt_m=alt, height_m=xmp.get("RelativeAltitude"),
                      heading_deg=None if heading is None else heading % 360.0, tilt_deg=tilt_from_pitch(xmp.get("GimbalPitchDegree")))
        except GeoError as exc:
            raise GeoError(f"{path}: {exc}") from None
    return ExifInfo(fix, focal, sensor_width, int(width_px) if width_px else None)
