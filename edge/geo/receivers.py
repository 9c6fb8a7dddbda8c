"""Receivers that feed a :class:`~edge.geo.track.Track` from a live position source, one thread each.

* :class:`GpsdReceiver`: the Linux GPS daemon through ``gpsdclient`` (a small maintained client of
  gpsd's JSON protocol; the ``gps`` package on PyPI is gpsd 3.19's and fails on Python >= 3.9):
  TPV reports with a 2D/3D fix -> fixes timed by the receiver's UTC fix time.
* :class:`MavlinkReceiver`: a PX4/ArduPilot autopilot through ``pymavlink``: ``GLOBAL_POSITION_INT``
  (lat/lon, altitude above sea level, height above home, heading) and ``ATTITUDE`` (the tilt of a
  camera fixed to the airframe looking down, from roll and pitch). The
  autopilot stamps messages with its boot time; ``SYSTEM_TIME`` maps boot time to UTC. Until one
  arrives, fixes are stamped with the host's arrival time (link latency, typically < 50 ms, is
  then part of the position's error).

Both libraries are imported when a receiver starts, not at module import (the daemon runs without
them when no such source is configured). A lost connection is retried with back-off and logged; the
track then ages, and the positions it gives are flagged stale.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from datetime import datetime

from edge.geo.track import Fix, GeoError, Track

log = logging.getLogger("edge.geo")


class _Receiver:
    """A daemon thread running ``_run_once`` until ``close()``; reconnects with back-off on errors."""

    name = "receiver"

    def __init__(self, track: Track, *, reconnect_min_s: float = 0.5, reconnect_max_s: float = 30.0) -> None:
        self.track = track
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._check_import()
        self._thread = threading.Thread(target=self._loop, name=f"edge-geo-{self.name}", daemon=True)
        self._thread.start()

    def close(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _loop(self) -> None:
        backoff = self.reconnect_min_s
        while not self._stop.is_set():
            try:
                self._run_once()
                backoff = self.reconnect_min_s
            except Exception as exc:  # a lost receiver must not stop the daemon: positions go stale
                log.warning("%s: %s; retrying in %.1f s", self.name, exc, backoff)
                if self._stop.wait(backoff):
                    return
                backoff = min(backoff * 2.0, self.reconnect_max_s)

    def _check_import(self) -> None:
        raise NotImplementedError

    def _run_once(self) -> None:
        raise NotImplementedError


def tpv_to_fix(report: dict) -> Fix | None:
    """A gpsd TPV report (as a dict) -> Fix, or None without a 2D/3D fix or a time."""
    if report.get("class") != "TPV" or int(report.get("mode", 0)) < 2 or "lat" not in report or "time" not in report:
        return None
    stamp = str(report["time"]).replace("Z", "+00:00")
    alt = report.get("altMSL", report.get("alt"))
    heading = report.get("track")
    return Fix(time_s=datetime.fromisoformat(stamp).timestamp(), lat=float(report["lat"]), lon=float(report["lon"]),
               source="gpsd", alt_m=None if alt is None else float(alt),
               heading_deg=None if heading is None else float(heading))


class GpsdReceiver(_Receiver):
    """Fixes from gpsd at ``host:port`` (default 127.0.0.1:2947)."""

    name = "gpsd"

    silence_s = 2.0  # gpsd reports at least once a second while it has a receiver

    def __init__(self, track: Track, host: str = "127.0.0.1", port: int = 2947, **backoff: float) -> None:
        super().__init__(track, **backoff)
        self.host, self.port = host, int(port)

    def _check_import(self) -> None:
        try:
            import gpsdclient  # noqa: F401
        except ImportError as exc:
            raise GeoError("geo.source = \"gpsd\" needs a gpsd client: pip install 'aelf-crack[geo]' (gpsdclient)") from exc

    def _run_once(self) -> None:
        from gpsdclient import GPSDClient

        # The socket timeout lets close() be noticed and a silent gpsd be reconnected.
        with GPSDClient(host=self.host, port=self.port, timeout=self.silence_s) as client:
            log.info("gpsd: connected to %s:%d", self.host, self.port)
            try:
                for report in client.dict_stream(convert_datetime=False, filter=["TPV"]):
                    fix = tpv_to_fix(report)
                    if fix is not None:
                        self.track.add(fix)
                    if self._stop.is_set():
                        return
            except TimeoutError:
                if self._stop.is_set():
                    return
                raise ConnectionError(f"no report from gpsd at {self.host}:{self.port} for {self.silence_s} s") from None
        if not self._stop.is_set():
            raise ConnectionError(f"gpsd at {self.host}:{self.port} closed the connection")


class MavlinkReceiver(_Receiver):
    """Fixes from a MAVLink autopilot on ``url`` (pymavlink: ``udpin:0.0.0.0:14550``, ``/dev/ttyACM0``, ``tcp:host:5760``)."""

    name = "mavlink"

    def __init__(self, track: Track, url: str = "udpin:0.0.0.0:14550", baud: int = 57600, **backoff: float) -> None:
        super().__init__(track, **backoff)
        self.url, self.baud = url, int(baud)
        self.boot_offset_s: float | None = None  # UTC seconds - autopilot boot seconds, from SYSTEM_TIME

    def _check_import(self) -> None:
        try:
            from pymavlink import mavutil  # noqa: F401
        except ImportError as exc:
            raise GeoError("geo.source = \"mavlink\" needs pymavlink: pip install 'aelf-crack[geo]'") from exc

    def handle(self, msg) -> None:
        """Apply one MAVLink message (pure apart from the track): time sync, position, attitude."""
        kind = msg.get_type()
        if kind == "SYSTEM_TIME" and msg.time_unix_usec > 0:
            first = self.boot_offset_s is None
            self.boot_offset_s = msg.time_unix_usec / 1e6 - msg.time_boot_ms / 1e3
            # until now every fix was stamped with this computer's clock: mixed in, they would disorder the track
            if first and (dropped := self.track.clear()):
                log.warning("mavlink: the autopilot's time arrived; %d earlier fix(es) stamped with this computer's "
                            "clock (%.1f s off the autopilot's) dropped", dropped,
                            time.time() - msg.time_unix_usec / 1e6)
        elif kind == "GLOBAL_POSITION_INT" and not (msg.lat == 0 and msg.lon == 0):
            stamp = time.time() if self.boot_offset_s is None else self.boot_offset_s + msg.time_boot_ms / 1e3
            self.track.add(Fix(time_s=stamp, lat=msg.lat / 1e7, lon=msg.lon / 1e7, source="mavlink",
                               alt_m=msg.alt / 1000.0, height_m=msg.relative_alt / 1000.0,
                               heading_deg=None if msg.hdg == 65535 else msg.hdg / 100.0))
        elif kind == "ATTITUDE":  # a camera fixed to the airframe, looking down: tilted by roll and pitch
            tilt = math.degrees(math.acos(max(-1.0, min(1.0, math.cos(msg.roll) * math.cos(msg.pitch)))))
            self.track.update_last(tilt_deg=tilt)

    def _run_once(self) -> None:
        from pymavlink import mavutil

        conn = mavutil.mavlink_connection(self.url, baud=self.baud, autoreconnect=True)
        log.info("mavlink: listening on %s", self.url)
        try:
            while not self._stop.is_set():
                msg = conn.recv_match(type=["SYSTEM_TIME", "GLOBAL_POSITION_INT", "ATTITUDE"], blocking=True,
                                      timeout=0.5)
                if msg is not None:
                    self.handle(msg)
        finally:
            conn.close()
