"""Where each frame was taken: positions from EXIF, gpsd, MAVLink or the config, matched by capture time."""

from edge.geo.locator import FrameGeo, FrameLocator
from edge.geo.track import Fix, GeoError, Position, Track

__all__ = ["Fix", "FrameGeo", "FrameLocator", "GeoError", "Position", "Track"]
