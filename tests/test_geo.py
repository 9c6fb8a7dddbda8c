"""Positions on alerts: the track's time matching, EXIF read from real JPEGs, gpsd (gpsfake) and
MAVLink (pymavlink's own encoder over UDP) as real counterparts, GSD from geometry, the daemon."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import cv2
import pytest
from edge_helpers import crack_image, darkness_model, write_geotagged_jpeg

from edge.alerts import validate_alert
from edge.config import ConfigError, load_config
from edge.daemon import run_daemon
from edge.geo import Fix, FrameLocator, Track
from edge.geo.exif import read_exif
from edge.geo.receivers import GpsdReceiver, MavlinkReceiver
from edge.gsd import GsdError, gsd_from_geometry
from edge.publish import LogPublisher

T0 = datetime(2026, 6, 1, 10, 0, 0, tzinfo=timezone.utc).timestamp()


def fix(t: float, lat: float, lon: float, **kw) -> Fix:
    return Fix(time_s=T0 + t, lat=lat, lon=lon, source="gpsd", **kw)


# ---------------------------------------------------------------- matching by capture time
def test_position_between_two_fixes_is_interpolated_with_the_age_of_the_nearer() -> None:
    track = Track()
    track.add(fix(0.0, 48.0, 11.0, alt_m=500.0, heading_deg=350.0))
    track.add(fix(1.0, 48.001, 11.002, alt_m=510.0, heading_deg=10.0))
    pos = track.position_at(T0 + 0.25, max_age_s=2.0)
    assert pos.interpolated and not pos.stale
    assert pos.fix.lat == pytest.approx(48.00025) and pos.fix.lon == pytest.approx(11.0005)
    assert pos.fix.alt_m == pytest.approx(502.5)
    assert pos.fix.heading_deg == pytest.approx(355.0)  # the short way round north, not through 180
    assert pos.age_s == pytest.approx(0.25)
    geo = pos.to_alert_geo()
    assert geo["source"] == "gpsd" and geo["stale"] is False and geo["interpolated"] is True


def test_a_fix_too_old_is_flagged_stale_not_silently_reused() -> None:
    track = Track()
    track.add(fix(0.0, 48.0, 11.0))
    track.add(fix(1.0, 48.001, 11.0))
    pos = track.position_at(T0 + 6.0, max_age_s=2.0)  # the receiver went quiet 5 s before the capture
    assert pos.stale and not pos.interpolated
    assert pos.age_s == pytest.approx(5.0) and pos.fix.lat == pytest.approx(48.001)  # last fix, not extrapolated
    assert pos.to_alert_geo()["stale"] is True
    assert Track().position_at(T0, 2.0) is None  # no fix at all: no position


def test_a_gap_between_fixes_is_not_bridged_and_fixes_out_of_order_are_sorted() -> None:
    track = Track()
    track.add(fix(10.0, 48.01, 11.0))
    track.add(fix(0.0, 48.0, 11.0))  # late arrival
    assert [f.time_s - T0 for f in track.fixes()] == [0.0, 10.0]
    pos = track.position_at(T0 + 3.0, max_age_s=2.0)  # 10 s gap > 2 * max_age: nearest fix, stale
    assert not pos.interpolated and pos.stale and pos.fix.lat == 48.0 and pos.age_s == pytest.approx(3.0)


def test_interpolation_across_the_antimeridian_goes_the_short_way() -> None:
    track = Track()
    track.add(Fix(T0, 0.0, 179.9999, "mavlink"))
    track.add(Fix(T0 + 1, 0.0, -179.9999, "mavlink"))
    assert abs(track.position_at(T0 + 0.5, 2.0).fix.lon) == pytest.approx(180.0)


# ---------------------------------------------------------------- EXIF from a real JPEG
def test_exif_position_altitude_heading_time_and_intrinsics_from_a_jpeg(tmp_path: Path) -> None:
    path = write_geotagged_jpeg(tmp_path / "DJI_0001.JPG", -33.856784, 151.215297, height_m=30.0, gimbal_pitch=-88.0)
    assert cv2.imread(str(path)) is not None  # still a valid JPEG
    info = read_exif(path)
    assert info.fix.lat == pytest.approx(-33.856784, abs=1e-6) and info.fix.lon == pytest.approx(151.215297, abs=1e-6)
    assert info.fix.alt_m == pytest.approx(520.0) and info.fix.height_m == pytest.approx(30.0)
    assert info.fix.heading_deg == pytest.approx(123.4) and info.fix.tilt_deg == pytest.approx(2.0)
    assert info.fix.time_s == datetime(2026, 6, 1, 10, 0, 5, tzinfo=timezone.utc).timestamp()  # +02:00 local
    assert info.focal_length_mm == pytest.approx(8.8) and info.sensor_width_mm == pytest.approx(13.2, rel=1e-3)
    assert info.width_px == 160


def test_an_image_without_gps_has_no_position(tmp_path: Path) -> None:
    path = tmp_path / "plain.jpg"
    cv2.imwrite(str(path), crack_image(40, 60))
    assert read_exif(path).fix is None


# ---------------------------------------------------------------- GSD from geometry
def test_gsd_from_geometry_and_its_error_bound() -> None:
    est = gsd_from_geometry(30.0, 8.8, 13.2, 5472, distance_error_m=0.5, tilt_deg=2.0)
    assert est.gsd_mm_per_px == pytest.approx(30_000 * 13.2 / (8.8 * 5472))  # 8.22 mm/px
    # 0.5/30 + 1 % focal + 1 % sensor + (1/cos(2 deg)^2 - 1)
    assert est.relative_error == pytest.approx(0.5 / 30 + 0.02 + 0.001219, rel=1e-3)
    # halving the distance halves the GSD; tilt only widens the bound
    assert gsd_from_geometry(15.0, 8.8, 13.2, 5472).gsd_mm_per_px == pytest.approx(est.gsd_mm_per_px / 2)
    with pytest.raises(GsdError, match="distance_m"):
        gsd_from_geometry(0.0, 8.8, 13.2, 5472)
    with pytest.raises(GsdError, match="tilt"):
        gsd_from_geometry(30.0, 8.8, 13.2, 5472, tilt_deg=75.0)


# ---------------------------------------------------------------- the daemon fills geo
def _config(tmp_path: Path, source: Path, *sets: str):
    model = darkness_model(tmp_path / "model.onnx", input_size=64)
    return load_config(None, [
        f"source.uri={source}", f"model.path={model}", "tiling.overlap=16", f"alerts.state_path={tmp_path / 's.json'}",
        "alerts.snapshot_dir=", "alerts.cooldown_s=0", "stats_interval_s=3600", *sets,
    ])


def test_daemon_alerts_carry_the_exif_position_and_the_gsd_from_geometry(tmp_path: Path) -> None:
    folder = tmp_path / "flight"
    folder.mkdir()
    write_geotagged_jpeg(folder / "DJI_0001.JPG", 48.137154, 11.576124, height_m=30.0, gimbal_pitch=-90.0)
    write_geotagged_jpeg(folder / "DJI_0002.JPG", 48.137254, 11.576124, height_m=15.0, gimbal_pitch=-90.0)
    publisher = LogPublisher(stream=open(tmp_path / "alerts.jsonl", "w"))  # noqa: SIM115 - closed by the daemon
    run_daemon(_config(tmp_path, folder, 'geo.source="exif"', "camera.distance_error_m=0.3"), publisher=publisher)
    first, second = publisher.alerts
    for alert in (first, second):
        assert validate_alert(alert) == []
        assert alert["geo"]["source"] == "exif" and alert["geo"]["stale"] is False
    assert first["geo"]["lat"] == pytest.approx(48.137154, abs=1e-6) and first["geo"]["height_m"] == 30.0
    expected = gsd_from_geometry(30.0, 8.8, 13.2, 160, distance_error_m=0.3, tilt_deg=0.0)
    assert first["gsd_mm_per_px"] == pytest.approx(expected.gsd_mm_per_px, rel=1e-3)
    assert first["gsd_error_mm_per_px"] == pytest.approx(expected.error_mm_per_px, rel=1e-3)
    assert second["gsd_mm_per_px"] == pytest.approx(first["gsd_mm_per_px"] / 2, rel=1e-3)  # half the height
    crack = first["cracks"][0]
    assert crack["length_mm"] == pytest.approx(crack["length_px"] * first["gsd_mm_per_px"], rel=1e-2)


def test_fixed_position_from_the_config_and_its_validation(tmp_path: Path) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), crack_image(120, 160, seed=5))
    publisher = LogPublisher(stream=open(tmp_path / "alerts.jsonl", "w"))  # noqa: SIM115
    run_daemon(_config(tmp_path, folder, 'geo.source="fixed"', "geo.lat=52.5", "geo.lon=13.4", "geo.alt_m=34.0"),
               publisher=publisher)
    (alert,) = publisher.alerts
    assert alert["geo"] == {"lat": 52.5, "lon": 13.4, "alt_m": 34.0, "source": "fixed", "age_s": 0.0,
                            "stale": False, "interpolated": False}
    with pytest.raises(ConfigError, match="geo: .*needs lat and lon"):
        load_config(None, ['geo.source="fixed"'])


# ---------------------------------------------------------------- real counterparts
def _free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _nmea(body: str) -> str:
    checksum = 0
    for ch in body:
        checksum ^= ord(ch)
    return f"${body}*{checksum:02X}\r\n"


@pytest.mark.skipif(shutil.which("gpsfake") is None, reason="gpsfake not installed (Debian package gpsd-clients + gpsd)")
def test_gpsd_fixes_from_a_replayed_nmea_log(tmp_path: Path) -> None:
    pytest.importorskip("gpsdclient", reason="gpsdclient not installed (extra [geo])")
    log = tmp_path / "drive.nmea"
    lines = []
    for i in range(6):  # one fix a second driving north, 4807.038 N 01131.000 E + i * 0.01'
        hhmmss = f"1200{i:02d}"
        lat = f"4807.{38 + i * 10:03d}"
        lines.append(_nmea(f"GPGGA,{hhmmss}.00,{lat},N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,"))
        lines.append(_nmea(f"GPRMC,{hhmmss}.00,A,{lat},N,01131.000,E,022.4,084.4,010626,003.1,W"))
    log.write_text("".join(lines))
    port = _free_port()
    # gpsfake runs a real gpsd on a pty and replays the log in a loop (gpsd opens the device only when
    # a client watches, so a single pass could be over before the receiver is there).
    fake = subprocess.Popen(["gpsfake", "-q", "-c", "0.1", "-P", str(port), str(log)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    track = Track()
    receiver = GpsdReceiver(track, "127.0.0.1", port, reconnect_min_s=0.2, reconnect_max_s=0.5)
    receiver.start()
    try:
        assert track.wait_for(4, timeout_s=60), "no fixes from gpsd/gpsfake within 60 s"
    finally:
        receiver.close()
        fake.terminate()
        fake.wait(10)
    fixes = list({f.time_s: f for f in track.fixes()}.values())  # one per second of the log
    first = fixes[0]
    assert first.source == "gpsd" and first.lon == pytest.approx(11 + 31.0 / 60, abs=1e-6)
    assert datetime.fromtimestamp(first.time_s, timezone.utc).date().isoformat() == "2026-06-01"
    lats = [f.lat for f in fixes]
    assert lats == sorted(lats) and lats[0] >= 48 + 7.038 / 60 - 1e-9  # the drive north, in order
    pos = track.position_at((fixes[0].time_s + fixes[1].time_s) / 2, max_age_s=2.0)
    assert pos.interpolated and pos.fix.lat == pytest.approx((fixes[0].lat + fixes[1].lat) / 2)


def test_mavlink_position_over_udp_from_pymavlink_encoder() -> None:
    mavutil = pytest.importorskip("pymavlink.mavutil", reason="pymavlink not installed")
    port = _free_port(socket.SOCK_DGRAM)
    track = Track()
    receiver = MavlinkReceiver(track, f"udpin:127.0.0.1:{port}")
    receiver.start()
    autopilot = mavutil.mavlink_connection(f"udpout:127.0.0.1:{port}", source_system=1, source_component=1)
    boot_unix_s = T0 - 100.0
    try:
        deadline = time.monotonic() + 30.0  # generous: on a loaded 2-core CI box 10 s was once not enough
        for attempt in range(10_000):  # UDP: resend until the receiver has bound and taken it
            if time.monotonic() > deadline:
                break
            t_boot_ms = 100_000 + attempt * 100
            autopilot.mav.system_time_send(int((boot_unix_s + t_boot_ms / 1000) * 1e6), t_boot_ms)
            autopilot.mav.global_position_int_send(t_boot_ms, int(47.397742 * 1e7), int(8.545594 * 1e7),
                                                   488_000, 30_000, 0, 0, 0, 9000)
            autopilot.mav.attitude_send(t_boot_ms, 0.0, -0.0349, 0.0, 0.0, 0.0, 0.0)  # 2 deg nose down
            if track.wait_for(2, timeout_s=0.1):
                break
    finally:
        receiver.close()
        autopilot.close()
    fixes = track.fixes()
    assert len(fixes) >= 2, "no GLOBAL_POSITION_INT received over UDP"
    last = fixes[-1]
    assert last.source == "mavlink" and last.lat == pytest.approx(47.397742) and last.lon == pytest.approx(8.545594)
    assert last.alt_m == pytest.approx(488.0) and last.height_m == pytest.approx(30.0) and last.heading_deg == 90.0
    assert last.time_s == pytest.approx(T0, abs=15.0)  # autopilot boot time mapped to UTC by SYSTEM_TIME
    assert last.time_s - boot_unix_s == pytest.approx(int(round((last.time_s - boot_unix_s) * 10)) / 10, abs=1e-3)


def test_a_position_before_the_autopilots_time_does_not_block_the_track(caplog) -> None:
    """The receiver can bind between an autopilot's SYSTEM_TIME and its GLOBAL_POSITION_INT: that first fix is
    stamped with this computer's clock, months from the autopilot's; kept, every later fix would fall out of
    the track's window behind it."""
    pytest.importorskip("pymavlink.mavutil", reason="pymavlink not installed")
    from pymavlink.dialects.v20 import common as mavlink

    track = Track(keep_s=120.0)
    receiver = MavlinkReceiver(track)
    boot_unix_s = T0 - 100.0

    def position(t_boot_ms: int):
        return mavlink.MAVLink_global_position_int_message(t_boot_ms, 473977420, 85455940, 488_000, 30_000,
                                                           0, 0, 0, 9000)

    receiver.handle(position(100_000))  # before any SYSTEM_TIME: stamped now
    assert len(track.fixes()) == 1 and abs(track.fixes()[0].time_s - time.time()) < 5
    with caplog.at_level("WARNING", logger="edge.geo"):
        receiver.handle(mavlink.MAVLink_system_time_message(int((boot_unix_s + 100.1) * 1e6), 100_100))
    assert "1 earlier fix(es) stamped with this computer's clock" in caplog.text
    for t_boot_ms in (100_100, 100_200, 100_300):
        receiver.handle(position(t_boot_ms))
    assert [f.time_s - boot_unix_s for f in track.fixes()] == pytest.approx([100.1, 100.2, 100.3])


def test_locator_gives_gsd_from_a_mavlink_height_and_configured_intrinsics() -> None:
    config = load_config(None, ['geo.source="mavlink"', "camera.focal_length_mm=8.8", "camera.sensor_width_mm=13.2"])
    locator = FrameLocator.from_config(config)
    locator.track.add(Fix(T0, 47.0, 8.0, "mavlink", height_m=30.0, tilt_deg=0.0))
    locator.track.add(Fix(T0 + 1, 47.0001, 8.0, "mavlink", height_m=32.0, tilt_deg=0.0))

    class Frame:
        capture_time = datetime.fromtimestamp(T0 + 0.5, timezone.utc)
        name = None
        source_id = "csi://0"

    where = locator.locate(Frame(), 5472)
    assert where.alert_geo()["interpolated"] is True and where.alert_geo()["height_m"] == 31.0
    assert where.gsd.gsd_mm_per_px == pytest.approx(31_000 * 13.2 / (8.8 * 5472))
    Frame.capture_time = datetime.fromtimestamp(T0 + 30, timezone.utc)  # long after the last fix
    stale = locator.locate(Frame(), 5472)
    assert stale.alert_geo()["stale"] is True and stale.gsd is None  # a stale height gives no GSD
