"""Ground sampling distance from camera geometry, with a bound on its error (pure).

For a pinhole camera whose image plane is parallel to the surface at distance ``D`` (a drone
looking straight down, a road camera looking straight at the road), every pixel covers the same
patch of surface::

    gsd_mm_per_px = D_m * 1000 * sensor_width_mm / (focal_length_mm * image_width_px)

(the pixel pitch ``sensor_width_mm / image_width_px`` projected through the lens to distance ``D``).

Error bound (first order, worst case: relative errors add)::

    relative_error = distance_error_m / D_m + focal_rel_error + sensor_rel_error + (1 / cos(tilt)^2 - 1)

* distance: a drone's barometric height above the take-off point is typically good to ~0.5 m, a GNSS
  altitude to a few metres, a measured camera mount to centimetres (``camera.distance_error_m``);
* focal length: EXIF rounds it to 0.1 mm or less and the lens focus shifts it by ~1 % (``focal_rel_error``);
* sensor width: datasheet value or the EXIF focal-plane resolution, ~1 % (``sensor_rel_error``);
* tilt: a camera tilted by ``tilt`` from the surface normal stretches the footprint along the tilt
  by up to ``1 / cos(tilt)^2`` near the image centre; the gimbal pitch gives ``tilt`` where the
  source reports it (``90 - |pitch|``), else ``camera.max_tilt_deg`` bounds it.

Lens distortion and terrain relief within the frame are not modelled: calibrate the lens (or keep
cracks near the image centre) when they matter. Example: 30 m height +- 0.5 m, 8.8 mm lens, 13.2 mm
sensor, 5472 px wide: 8.22 mm/px +- 3.8 % (1.7 % + 1 % + 1 % + 0.1 % for 2 degrees of tilt).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


class GsdError(ValueError):
    """Camera geometry cannot give a GSD; the message names the quantity and what was expected."""


@dataclass(frozen=True)
class GsdEstimate:
    """A GSD with its worst-case error, both mm of surface per pixel, and the distance it was made for."""

    gsd_mm_per_px: float
    error_mm_per_px: float
    distance_m: float

    @property
    def relative_error(self) -> float:
        return self.error_mm_per_px / self.gsd_mm_per_px


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise GsdError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def gsd_from_geometry(
    distance_m: float,
    focal_length_mm: float,
    sensor_width_mm: float,
    image_width_px: int,
    *,
    distance_error_m: float = 0.5,
    focal_rel_error: float = 0.01,
    sensor_rel_error: float = 0.01,
    tilt_deg: float = 0.0,
) -> GsdEstimate:
    """GSD (mm/px) of a camera ``distance_m`` from the surface, with its error bound (module docstring).

    ``image_width_px``: the width of the frame the GSD is for (after any resize); ``tilt_deg``: angle
    between the optical axis and the surface normal (0 = looking straight at it), below 60 degrees.
    """
    distance = _positive("distance_m (camera to surface)", distance_m)
    focal = _positive("camera.focal_length_mm", focal_length_mm)
    sensor = _positive("camera.sensor_width_mm", sensor_width_mm)
    width = _positive("image width (px)", image_width_px)
    for name, value in (("camera.distance_error_m", distance_error_m), ("focal_rel_error", focal_rel_error),
                        ("sensor_rel_error", sensor_rel_error)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise GsdError(f"{name} must be a number >= 0, got {value!r}")
    if not (isinstance(tilt_deg, (int, float)) and 0.0 <= abs(tilt_deg) < 60.0):
        raise GsdError(f"tilt must be below 60 degrees from the surface normal for a GSD, got {tilt_deg!r}")
    gsd = distance * 1000.0 * sensor / (focal * width)
    tilt_term = 1.0 / math.cos(math.radians(tilt_deg)) ** 2 - 1.0
    relative = distance_error_m / distance + focal_rel_error + sensor_rel_error + tilt_term
    return GsdEstimate(gsd, gsd * relative, distance)


def tilt_from_pitch(pitch_deg: float | None) -> float | None:
    """Tilt from the surface normal of a downward camera with gimbal pitch ``pitch_deg`` (-90 = straight down)."""
    return None if pitch_deg is None else abs(90.0 - abs(pitch_deg))
