"""A survey as an inspector runs it, with the daemon's defaults: geotagged photos a few metres apart,
and a video recorded beside an NMEA log processed afterwards. Each alert carries the photo's own time,
its file name and its position; the alert policy knows that the camera moved."""

# ruff: noqa: F811  (pytest fixtures imported from mqtt_fixtures are re-bound as test arguments)
from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cv2
import numpy as np
import pytest
from drawn_cracks import draw_crack
from edge_helpers import crack_image, darkness_model, write_geotagged_jpeg, write_video
from mqtt_fixtures import broker, mqtt_section, needs_mosquitto  # noqa: F401

from edge.alerts import AlertPolicy, validate_alert
from edge.config import AlertsConfig, CameraConfig, ConfigError, GeoConfig, load_config
from edge.daemon import run_daemon
from edge.geo import Fix, FrameLocator, Track
from edge.geo.ground import METRES_PER_DEGREE_LAT
from edge.geo.logs import read_gpx, read_nmea
from edge.measure import measure_cracks
from edge.publish import LogPublisher
from edge.sources import Frame

LAT0, LON0 = 48.137154, 11.576124


def _defaults(tmp_path: Path, source: Path, *sets: str):
    """The daemon's defaults, except where files go (this test's folder) and no stats chatter."""
    model = darkness_model(tmp_path / "model.onnx", input_size=64)
    return load_config(None, [f"source.uri={source}", f"model.path={model}", "tiling.overlap=16",
                              f"alerts.state_path={tmp_path / 's.json'}", f"alerts.snapshot_dir={tmp_path / 'snaps'}",
                              "stats_interval_s=3600", *sets])


def test_a_photo_survey_gives_one_alert_per_photo_with_its_time_name_and_position(tmp_path: Path) -> None:
    folder = tmp_path / "survey"
    folder.mkdir()
    # Seven photos 2 m apart heading north, 2 s apart; the same-looking crack in the same place of
    # each frame (what box matching took for one crack); photo 4 shows none.
    for i in range(7):
        image = crack_image(120, 160, crack=i != 4, seed=i)
        write_geotagged_jpeg(folder / f"DJI_{i:04d}.JPG", LAT0 + 2.0 * i / METRES_PER_DEGREE_LAT, LON0, image=image,
                             height_m=30.0, taken=f"2024:05:03 09:12:{10 + 2 * i:02d}", offset="+02:00", heading_deg=0.0)
    publisher = LogPublisher(stream=open(tmp_path / "alerts.jsonl", "w"))  # noqa: SIM115 - closed by the daemon
    run_daemon(_defaults(tmp_path, folder), publisher=publisher)
    alerts = publisher.alerts
    assert [a["file"] for a in alerts] == [f"DJI_{i:04d}.JPG" for i in (0, 1, 2, 3, 5, 6)]
    for alert in alerts:
        assert validate_alert(alert) == []
        i = int(alert["file"][4:8])
        assert alert["capture_time"] == f"2024-05-03T07:12:{10 + 2 * i:02d}.000Z"  # EXIF local time, +02:00
        assert alert["geo"]["source"] == "exif" and alert["geo"]["stale"] is False
        assert alert["geo"]["lat"] == pytest.approx(LAT0 + 2.0 * i / METRES_PER_DEGREE_LAT, abs=1e-7)
        assert alert["gsd_mm_per_px"] is not None and alert["snapshot"]["path"].endswith(".jpg")
        assert Path(alert["snapshot"]["path"]).is_absolute()


def test_photos_without_an_offset_use_the_configured_zone_or_the_clock(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    folder.mkdir()
    write_geotagged_jpeg(folder / "a.jpg", LAT0, LON0, taken="2024:05:03 09:12:10", offset=None)
    publisher = LogPublisher(stream=open(tmp_path / "a.jsonl", "w"))  # noqa: SIM115
    run_daemon(_defaults(tmp_path, folder, 'source.photo_utc_offset="-05:00"'), publisher=publisher)
    assert publisher.alerts[0]["capture_time"] == "2024-05-03T14:12:10.000Z"
    with pytest.raises(ConfigError, match="photo_utc_offset.*offset from UTC"):
        load_config(None, ['source.photo_utc_offset="CEST"'])


def _frame_with_crack_at(x: int) -> np.ndarray:
    image = np.full((120, 160, 3), 190, np.uint8)
    draw_crack(image, (x, 10), (x + 30, 110), width_px=5, value=(30, 30, 30))
    return image


def _prob(image: np.ndarray) -> np.ndarray:
    return (cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) < 90).astype(np.float32)


def test_policy_with_positions_the_same_crack_is_the_same_place() -> None:
    policy = AlertPolicy(AlertsConfig())  # defaults: cooldown 60 s, match 1.5 m
    here, metres_north = (LAT0, LON0), (LAT0 + 5.0 / METRES_PER_DEGREE_LAT, LON0)
    same_box = measure_cracks(_prob(_frame_with_crack_at(40)), 0.5)
    assert policy.decide(same_box, 0.0, "rtsp://cam", places=[here])
    # the same box 5 m further on is another crack (box matching alone would drop it) ...
    assert policy.decide(same_box, 1.0, "rtsp://cam", places=[metres_north])
    # ... and the same place seen in another part of the frame is the crack already alerted
    moved_box = measure_cracks(_prob(_frame_with_crack_at(110)), 0.5)
    assert not policy.decide(moved_box, 2.0, "rtsp://cam", places=[here])
    assert "already alerted" in policy.last_reason
    # without positions, a new photo is a new view; a fixed camera's frames are one scene
    assert policy.decide(same_box, 3.0, "/photos", view="a.jpg")
    assert policy.decide(same_box, 4.0, "/photos", view="b.jpg")
    assert not policy.decide(same_box, 5.0, "/photos", view="b.jpg")
    timelapse = AlertPolicy(AlertsConfig(per_photo=False))
    assert timelapse.decide(same_box, 0.0, "/photos", view="a.jpg")
    assert not timelapse.decide(same_box, 1.0, "/photos", view="b.jpg")


def _nmea(body: str) -> str:
    checksum = 0
    for ch in body:
        checksum ^= ord(ch)
    return f"${body}*{checksum:02X}"


def _rmc(when: datetime, lat: float, lon: float, course: float = 0.0) -> str:
    when = when.astimezone(timezone.utc)
    lat_dm = f"{int(lat):02d}{(lat - int(lat)) * 60:07.4f}"
    lon_dm = f"{int(lon):03d}{(lon - int(lon)) * 60:07.4f}"
    return _nmea(f"GPRMC,{when:%H%M%S}.00,A,{lat_dm},N,{lon_dm},E,10.0,{course:.1f},{when:%d%m%y},,,A")


def test_nmea_and_gpx_logs_are_read_into_fixes() -> None:
    t0 = datetime(2024, 5, 3, 7, 12, 0, tzinfo=timezone.utc)
    gga = _nmea("GPGGA,071200.00,4808.2292,N,01134.5674,E,1,08,0.9,545.4,M,46.9,M,,")
    text = "\n".join([_rmc(t0, LAT0, LON0), gga, _rmc(t0, LAT0, LON0)[:-2] + "00", "garbage",
                      _nmea("GPRMC,071201.00,V,,,,,,,030524,,,N")])
    (fix,) = read_nmea(text)  # the broken checksum and the void fix are skipped
    assert fix.time_s == t0.timestamp() and fix.lat == pytest.approx(LAT0, abs=1e-6) and fix.alt_m == 545.4
    gpx = ('<?xml version="1.0"?><gpx version="1.1" xmlns="http://www.topografix.com/GPX/1/1"><trk><trkseg>'
           f'<trkpt lat="{LAT0}" lon="{LON0}"><ele>520.5</ele><time>2024-05-03T07:12:00Z</time></trkpt>'
           f'<trkpt lat="{LAT0 + 1e-4}" lon="{LON0}"><time>2024-05-03T07:12:01Z</time></trkpt></trkseg></trk></gpx>')
    first, second = read_gpx(gpx)
    assert first.time_s == t0.timestamp() and first.alt_m == 520.5 and second.lat == pytest.approx(LAT0 + 1e-4)


def test_a_recorded_video_and_its_nmea_log_are_processed_afterwards(tmp_path: Path) -> None:
    start = datetime(2024, 5, 3, 9, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    # 10 fps, 30 frames; a crack in frames 5 and 25 (far apart: two alerts), 1 Hz RMC at 10 m/s north.
    frames = [crack_image(120, 160, crack=i in (5, 25), seed=i) for i in range(30)]
    video = write_video(tmp_path / "drive.avi", frames, fps=10.0)
    log_lines = [_rmc(start + timedelta(seconds=s), LAT0 + 10.0 * s / METRES_PER_DEGREE_LAT, LON0) for s in range(5)]
    (tmp_path / "drive.nmea").write_text("\n".join(log_lines) + "\n")
    publisher = LogPublisher(stream=open(tmp_path / "v.jsonl", "w"))  # noqa: SIM115
    run_daemon(_defaults(tmp_path, video, f'source.start_time="{start.isoformat()}"', 'geo.source="log"',
                         f"geo.log_path={tmp_path / 'drive.nmea'}"), publisher=publisher)
    first, second = publisher.alerts
    for alert, index in ((first, 5), (second, 25)):
        assert alert["frame_index"] == index and alert.get("file") is None
        when = start + timedelta(seconds=index / 10.0)
        assert alert["capture_time"] == when.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace(
            "+00:00", "Z")
        geo = alert["geo"]
        assert geo["source"] == "log" and geo["interpolated"] is True and geo["stale"] is False
        assert geo["lat"] == pytest.approx(LAT0 + index / METRES_PER_DEGREE_LAT, abs=1.5e-6)  # 1 m per frame; NMEA minutes to 4 decimals = 0.19 m
    with pytest.raises(ConfigError, match="log_path"):
        load_config(None, ['geo.source="log"'])
    with pytest.raises(ConfigError, match="start_time.*offset"):
        load_config(None, ['source.start_time="2024-05-03T09:12:00"'])


def test_a_frame_newer_than_the_last_fix_waits_for_the_next_and_is_interpolated() -> None:
    track = Track()
    t = 1_700_000_000.0
    track.add(Fix(t - 0.6, LAT0, LON0, "gpsd"))
    locator = FrameLocator(GeoConfig(source="gpsd", max_age_s=2.0), CameraConfig(), track=track)
    frame = Frame(np.zeros((8, 8, 3), np.uint8), datetime.fromtimestamp(t, timezone.utc), 0, "cam")
    result: list = []
    worker = threading.Thread(target=lambda: result.append(locator.locate(frame, 8)))
    worker.start()
    track.add(Fix(t + 0.4, LAT0 + 1e-4, LON0, "gpsd"))  # the receiver's next 1 Hz fix
    worker.join(timeout=10)
    position = result[0].position
    assert position.interpolated and position.age_s == pytest.approx(0.4)
    assert position.fix.lat == pytest.approx(LAT0 + 0.6e-4)
    # a receiver that went quiet: no wait, the old fix flagged stale
    quiet = Frame(frame.image, datetime.fromtimestamp(t + 10, timezone.utc), 1, "cam")
    later = locator.locate(quiet, 8).position
    assert later.stale and not later.interpolated


class _Both:
    """The daemon's stdout lines and MQTT at once (what a device with a log and a broker link does)."""

    def __init__(self, *publishers) -> None:
        self.publishers = publishers

    def publish_alert(self, alert: dict, snapshot_jpeg: bytes | None = None) -> None:
        for p in self.publishers:
            p.publish_alert(alert, snapshot_jpeg)

    def publish_stats(self, stats: dict) -> None:
        for p in self.publishers:
            p.publish_stats(stats)

    def close(self, timeout_s: float = 5.0) -> None:
        for p in self.publishers:
            p.close(timeout_s)

    def backlog(self):
        return self.publishers[-1].backlog()


@needs_mosquitto
def test_the_subscriber_path_gives_the_same_report_as_the_daemons_files(broker, tmp_path: Path) -> None:
    from edge.mqtt import MqttPublisher
    from edge.report.__main__ import main as report_main
    from edge.subscribe import AlertSink, Subscriber

    folder = tmp_path / "survey"
    folder.mkdir()
    for i in range(4):
        write_geotagged_jpeg(folder / f"IMG_{i:04d}.JPG", LAT0 + 2.0 * i / METRES_PER_DEGREE_LAT, LON0,
                             image=crack_image(120, 160, seed=i), taken=f"2024:05:03 09:12:{10 + 2 * i:02d}")
    (tmp_path / "sub").mkdir()
    sink = AlertSink(tmp_path / "sub" / "alerts.jsonl", snapshot_dir=tmp_path / "sub" / "snapshots")
    sub = Subscriber(broker.uri, sink, device="survey-1", on_line=lambda line: None).start()
    try:
        assert sub.subscribed.wait(20), "the subscriber did not subscribe"
        daemon_dir = tmp_path / "daemon"
        daemon_dir.mkdir()
        config = _defaults(tmp_path, folder, f"alerts.snapshot_dir={daemon_dir / 'snapshots'}", 'device_id="survey-1"')
        mqtt = MqttPublisher("survey-1", mqtt_section(broker.uri, tmp_path / "outbox.sqlite3"))
        run_daemon(config, publisher=_Both(LogPublisher(stream=open(daemon_dir / "alerts.jsonl", "w")), mqtt))  # noqa: SIM115
        assert sink.wait_for(lambda s: len(s.alerts) == 4 and s.snapshots_saved == 4, 30)
    finally:
        sub.stop()
    saved = [json.loads(line) for line in open(tmp_path / "sub" / "alerts.jsonl")]
    assert all(a["snapshot"]["path"] == f"snapshots/{a['alert_id']}.jpg" for a in saved)  # relative to the file
    reports = {}
    for name in ("daemon", "sub"):
        out = tmp_path / f"report-{name}"
        assert report_main([str(tmp_path / name / "alerts.jsonl"), "--out", str(out)]) == 0
        reports[name] = (out / "cracks.csv").read_text()
        assert len(list((out / "frames").iterdir())) == 4  # every listed crack has its frame
    assert reports["daemon"] == reports["sub"]
    assert reports["sub"].count("\n") == 5  # header + one crack per photo: nothing merged across photos
