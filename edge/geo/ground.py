"""Where on the ground a crack is (pure): the frame's position moved by the crack's offset in the image.

For a camera looking straight down with the top of the image along the heading (a drone with a nadir
gimbal, a road camera looking down), a crack whose box centre is ``(dx, dy)`` pixels right of and
below the image centre lies ``dx * gsd`` metres to the right and ``dy * gsd`` metres behind the
frame's position, rotated by the heading. Without a GSD or a heading, the crack gets the frame's
position. Distances use the equirectangular approximation (exact to well under a centimetre over the
metres between two views of one crack).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

METRES_PER_DEGREE_LAT = 111_320.0  # on the WGS 84 ellipsoid, within 0.6 % everywhere


def crack_ground_position(lat: float, lon: float, heading_deg: float | None, gsd_mm_per_px: float | None,
                          bbox: Sequence[float], frame_width_px: int, frame_height_px: int) -> tuple[float, float, bool]:
    """(lat, lon, moved): the crack's position, and whether it was moved from the frame's by its pixel offset."""
    if gsd_mm_per_px is None or heading_deg is None:
        return lat, lon, False
    x, y, w, h = bbox
    right_m = (x + w / 2 - frame_width_px / 2) * gsd_mm_per_px / 1000.0
    up_m = -(y + h / 2 - frame_height_px / 2) * gsd_mm_per_px / 1000.0
    theta = math.radians(heading_deg)
    north = up_m * math.cos(theta) - right_m * math.sin(theta)
    east = up_m * math.sin(theta) + right_m * math.cos(theta)
    lat2 = lat + north / METRES_PER_DEGREE_LAT
    lon2 = lon + east / (METRES_PER_DEGREE_LAT * max(math.cos(math.radians(lat)), 1e-6))
    return lat2, lon2, True


def ground_distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Distance between two nearby points, m (equirectangular; the short way across the antimeridian)."""
    mean_lat = math.radians((lat1 + lat2) / 2)
    dy = (lat1 - lat2) * METRES_PER_DEGREE_LAT
    dx = ((lon1 - lon2 + 180.0) % 360.0 - 180.0) * METRES_PER_DEGREE_LAT * math.cos(mean_lat)
    return math.hypot(dx, dy)
