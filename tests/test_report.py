"""``python -m edge.report``: dedup of the same crack across frames, GeoJSON/CSV that GIS tools read,
and the HTML opened in a real headless Chromium (rows, decoded snapshots, sorting, a screenshot)."""

from __future__ import annotations

import csv
import json
import re
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cv2
import numpy as np
import pytest
from browser import needs_chromium, open_chromium
from drawn_cracks import draw_crack

from edge.alerts import build_alert, model_info, validate_alert
from edge.measure import measure_cracks
from edge.report import DedupOptions, group_cracks
from edge.report.__main__ import main as report_main
from edge.report.records import METRES_PER_DEGREE_LAT, crack_position, summary_row
from edge.snapshots import render_overlay

T0 = datetime(2026, 6, 1, 10, 0, 0, tzinfo=timezone.utc)


def _prob(image: np.ndarray) -> np.ndarray:
    return (cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) < 90).astype(np.float32) * 0.98 + 0.01


def make_alert(image: np.ndarray, seq: int, t_s: float, *, geo: dict | None = None, gsd: float | None = None,
               source: str = "rtsp://cam/road", snapshot_dir: Path | None = None) -> dict:
    measurement = measure_cracks(_prob(image), 0.5, gsd_mm_per_px=gsd)
    alert = build_alert(
        measurement, device_id="truck-07", sequence=seq, created_at=T0 + timedelta(seconds=t_s),
        capture_time=T0 + timedelta(seconds=t_s), source=source, frame_index=seq,
        frame_size=(image.shape[1], image.shape[0]), model_info=model_info("m", "0" * 64, 0.5, "fp32"), geo=geo,
    )
    if snapshot_dir is not None:
        snapshot_dir.mkdir(exist_ok=True)
        (snapshot_dir / f"{alert['alert_id']}.jpg").write_bytes(
            render_overlay(image, measurement.mask, measurement.cracks))
    assert validate_alert(alert) == []
    return alert


def two_crack_image(seed: int = 0, shift: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.full((240, 320, 3), 170, np.uint8) + rng.integers(0, 20, (240, 320, 3), dtype=np.uint8)
    draw_crack(image, (20 + shift, 30), (140 + shift, 110), width_px=5, value=(30, 30, 30))
    draw_crack(image, (200, 150), (300, 225), width_px=7, value=(30, 30, 30))
    return image


def geo_at(north_m: float, *, heading: float = 0.0) -> dict:
    return {"lat": 48.0 + north_m / METRES_PER_DEGREE_LAT, "lon": 11.0, "heading_deg": heading, "source": "gpsd",
            "age_s": 0.1, "stale": False, "interpolated": True}


# ---------------------------------------------------------------- dedup
def test_fixed_camera_same_crack_in_consecutive_frames_is_one_crack(tmp_path: Path) -> None:
    alerts = [make_alert(two_crack_image(i, shift=i), i, i * 0.5) for i in range(4)]  # same scene, 2 s
    groups = group_cracks(alerts)
    assert len(groups) == 2  # two cracks, each seen in 4 frames
    assert sorted(len(g.observations) for g in groups) == [4, 4]
    assert groups[0].worst.crack["max_width_px"] > groups[1].worst.crack["max_width_px"]  # worst first
    # too far apart in time: not the same sighting
    late = alerts + [make_alert(two_crack_image(9), 9, 60.0)]
    assert len(group_cracks(late)) == 4


def test_moving_vehicle_cracks_are_merged_by_position_not_by_box(tmp_path: Path) -> None:
    gsd = 2.0  # mm/px: the 240-px frame spans 0.48 m along the road, image top = north (heading 0)
    # Driving north at 0.2 m per frame: the same crack moves down the image by 100 px per frame.
    alerts = []
    for i in range(3):
        image = np.full((240, 320, 3), 170, np.uint8)
        y = 20 + 100 * i
        draw_crack(image, (60, y - 5), (200, y + 5), width_px=5, value=(30, 30, 30))
        if i == 0:
            draw_crack(image, (270, 20), (275, 220), width_px=5, value=(30, 30, 30))  # another crack, only in frame 0
        alerts.append(make_alert(image, i, i * 0.2, geo=geo_at(0.2 * i), gsd=gsd))
    groups = group_cracks(alerts, DedupOptions(max_distance_m=0.1))
    assert sorted(len(g.observations) for g in groups) == [1, 3]
    moving = next(g for g in groups if len(g.observations) == 3)
    for obs in moving.observations:  # 100 px above the centre in frame 0 = 0.2 m north of the camera
        assert obs.located_in_frame and (obs.lat - 48.0) * METRES_PER_DEGREE_LAT == pytest.approx(0.2, abs=0.02)
    first = alerts[0]
    crack = next(c for c in first["cracks"] if c["bbox"][2] > 100)
    assert crack_position(first, crack)[2] is True
    # the same frames without a GSD: positions are the frames', 0.2 m apart: three sightings
    for alert in alerts:
        alert["gsd_mm_per_px"] = None
    assert sorted(len(g.observations) for g in group_cracks(alerts, DedupOptions(max_distance_m=0.1))) == [1, 1, 1, 1]


def test_a_folder_of_unrelated_photos_is_not_merged_by_box_overlap(tmp_path: Path) -> None:
    snaps = tmp_path / "snapshots"
    a = make_alert(two_crack_image(1), 0, 0.0, source="/data/photos", snapshot_dir=snaps)
    other = np.full((240, 320, 3), 60, np.uint8)
    other[:, 160:] = 220  # a different scene with a crack at the same place
    draw_crack(other, (20, 30), (140, 110), width_px=5, value=(0, 0, 0))
    b = make_alert(other, 1, 0.1, source="/data/photos", snapshot_dir=snaps)
    out = tmp_path / "rep"
    jsonl = tmp_path / "alerts.jsonl"
    jsonl.write_text("".join(json.dumps(x) + "\n" for x in (a, b)))
    assert report_main([str(jsonl), "--out", str(out)]) == 0
    rows = list(csv.DictReader(open(out / "cracks.csv")))
    assert len(rows) == 3 and all(r["frames"] == "1" for r in rows)


# ---------------------------------------------------------------- files + browser
def flight(tmp_path: Path) -> tuple[Path, Path]:
    """A daemon-style stdout file (with a stats line) of 6 alerts along a track, and their snapshots."""
    snaps = tmp_path / "snapshots"
    lines = []
    for i in range(6):
        scene = two_crack_image(100 + i // 3)  # two places, three frames each
        alert = make_alert(scene, i, i * 0.5, geo=geo_at(0.05 * i + 40.0 * (i // 3)), gsd=None,
                           snapshot_dir=snaps)
        lines.append(json.dumps({"type": "alert", **alert}))
    lines.append(json.dumps({"type": "stats", "frames": 6}))
    lines.append("not json")
    path = tmp_path / "alerts.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path, snaps


@pytest.mark.filterwarnings("ignore:Normalized/laundered field name")  # a shapefile's 10-character names
@pytest.mark.filterwarnings("ignore:Field .* created as String field")  # and no date-time type
def test_geojson_layers_and_csv_open_in_gdal(tmp_path: Path) -> None:
    jsonl, _ = flight(tmp_path)
    out = tmp_path / "report"
    assert report_main([str(jsonl), "--out", str(out)]) == 0
    cracks = json.loads((out / "cracks.geojson").read_text())
    assert {f["geometry"]["type"] for f in cracks["features"]} == {"Point"}  # one geometry type per layer
    assert len(cracks["features"]) == 4  # 2 cracks x 2 places, each seen in 3 frames
    assert all(f["properties"]["frames"] == 3 for f in cracks["features"])
    lon, lat = cracks["features"][0]["geometry"]["coordinates"]  # GeoJSON order: lon, lat
    assert lon == pytest.approx(11.0) and 48.0 <= lat < 48.001
    (line,) = json.loads((out / "track.geojson").read_text())["features"]
    assert line["geometry"]["type"] == "LineString" and len(line["geometry"]["coordinates"]) == 6
    assert line["properties"]["length_m"] == pytest.approx(40.25, abs=0.05)
    rows = list(csv.DictReader(open(out / "cracks.csv", newline="")))
    assert len(rows) == 4 and {r["position"] for r in rows} == {"frame"}
    assert rows[0]["severity"] in ("low", "medium", "high") and float(rows[0]["max_width_px"]) > 0
    pyogrio = pytest.importorskip("pyogrio", reason="pyogrio (GDAL) not installed (extra [dev])")
    for layer, geometry, count in (("cracks", "Point", 4), ("track", "LineString", 1)):
        # what `ogr2ogr -f "ESRI Shapefile"` does: read the layer with GDAL, write it as a shapefile, read it back
        meta, _, geometries, field_data = pyogrio.raw.read(out / f"{layer}.geojson")
        assert meta["geometry_type"] == geometry and len(geometries) == count
        shp = tmp_path / f"{layer}.shp"
        pyogrio.raw.write(shp, geometries, field_data, fields=meta["fields"], geometry_type=geometry, crs=meta["crs"],
                          driver="ESRI Shapefile", encoding="UTF-8")
        assert pyogrio.read_info(shp)["features"] == count


def test_stale_positions_are_kept_and_flagged_never_merged_on(tmp_path: Path) -> None:
    stale = {**geo_at(0.0), "age_s": 80.0, "stale": True, "interpolated": False}
    alerts = [make_alert(two_crack_image(7), i, i * 0.5, geo=stale, source="/data/clip.mp4") for i in range(2)]
    jsonl = tmp_path / "alerts.jsonl"
    jsonl.write_text("".join(json.dumps(a) + "\n" for a in alerts))
    out = tmp_path / "rep"
    assert report_main([str(jsonl), "--out", str(out)]) == 0
    rows = list(csv.DictReader(open(out / "cracks.csv", newline="")))
    assert len(rows) == 2 and all(r["position_stale"] == "True" and r["position_age_s"] == "80.0" for r in rows)
    features = json.loads((out / "cracks.geojson").read_text())["features"]
    assert len(features) == 2 and all(f["properties"]["position_stale"] is True for f in features)
    assert json.loads((out / "track.geojson").read_text())["features"] == []  # a stale fix is not the track


def test_different_photos_without_snapshots_or_gsd_are_never_merged(tmp_path: Path) -> None:
    # the subscriber-without-snapshots case: photos 0.5 m apart, frame positions only, same boxes
    alerts = []
    for i in range(3):
        alert = make_alert(two_crack_image(i), i, float(i), geo=geo_at(0.5 * i), source="/data/survey")
        alert["file"] = f"IMG_{i:04d}.JPG"
        alerts.append(alert)
    assert len(group_cracks(alerts)) == 6
    for a in alerts:
        a.pop("file")  # frames of one video: the same boxes 0.5 m apart are the same cracks
    assert len(group_cracks(alerts)) == 2


def test_a_crack_merged_over_frames_spans_them_all(tmp_path: Path) -> None:
    gsd = 2.0  # mm/px: a 240-px frame is 0.48 m tall; heading north, 0.4 m per frame along a long crack
    alerts = []
    for i in range(3):
        image = np.full((240, 320, 3), 170, np.uint8)
        draw_crack(image, (160, 5), (160, 235), width_px=5, value=(30, 30, 30))  # the crack runs on beyond the frame
        alerts.append(make_alert(image, i, i * 0.5, geo=geo_at(0.4 * i), gsd=gsd))
    (group,) = group_cracks(alerts)
    row = summary_row(group)
    assert row["frames"] == 3 and row["length_mm"] < 500  # one frame sees under half a metre of it ...
    assert row["extent_m"] == pytest.approx(0.8 + 0.234 * 2, abs=0.02)  # ... all three see 1.27 m


@pytest.mark.parametrize("content, expected", [
    (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01" + bytes(range(256)) * 4, "binary file, not alerts"),
    (b"", "no valid alert in .*the input is empty"),
    (b"hello\n{\"a\": 1}\n", "no valid alert in .*2 line\\(s\\) skipped, the first: .*:1: not JSON"),
    (b"caf\xe9\n", "not UTF-8 text at byte 3"),
])
def test_bad_inputs_give_one_sentence_and_exit_1(tmp_path: Path, capsys, content: bytes, expected: str) -> None:
    path = tmp_path / "alerts.jsonl"
    path.write_bytes(content)
    assert report_main([str(path), "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert re.search(expected, err) and "Traceback" not in err and err.count("\n") == 1


def test_folder_input_and_out_on_a_file_are_explained(tmp_path: Path, capsys) -> None:
    jsonl, _ = flight(tmp_path)
    assert report_main([str(tmp_path), "--out", str(tmp_path / "r")]) == 1
    assert "is a folder; give the alerts file itself" in capsys.readouterr().err
    assert report_main([str(jsonl), "--out", str(jsonl)]) == 1
    assert "is a file; give a folder" in capsys.readouterr().err


def test_outbox_is_an_input_with_its_snapshots(tmp_path: Path) -> None:
    from edge.config import OutboxConfig
    from edge.outbox import Outbox

    alert = make_alert(two_crack_image(3), 0, 0.0)
    jpeg = render_overlay(two_crack_image(3), np.zeros((240, 320), bool), [])
    box = Outbox(OutboxConfig(path=str(tmp_path / "outbox.sqlite3")))
    box.put(alert, jpeg)
    box.close()
    out = tmp_path / "r"
    assert report_main([str(tmp_path / "outbox.sqlite3"), "--out", str(out)]) == 0
    assert (out / "frames" / f"{alert['alert_id']}.jpg").read_bytes() == jpeg
    assert report_main([str(tmp_path / "missing.jsonl"), "--out", str(out)]) == 1


@needs_chromium
def test_html_report_map_rows_crops_filter_sorting_in_headless_chromium(tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    jsonl, _ = flight(tmp_path)
    out = tmp_path / "report"
    assert report_main([str(jsonl), "--out", str(out), "--title", "Bridge B12 inspection"]) == 0
    driver = open_chromium(tmp_path)
    try:
        driver.get((out / "report.html").resolve().as_uri())
        wait = WebDriverWait(driver, 30)
        wait.until(lambda d: d.find_element(By.ID, "images").text != "")
        assert driver.title == "Bridge B12 inspection"
        assert len(driver.find_elements(By.CSS_SELECTOR, "#cracks tbody tr")) == 4
        assert driver.find_element(By.ID, "images").text == "4 of 4 snapshots shown"
        assert driver.execute_script("return typeof L") == "object"  # the bundled Leaflet, offline
        pins = driver.find_elements(By.CSS_SELECTOR, "#map .pin")
        assert sorted(p.text for p in pins) == ["1", "2", "3", "4"]
        assert driver.execute_script("let n=0;reportMap.eachLayer(l=>{if(l instanceof L.Polyline)n++});return n") == 1
        # a marker click shows its row; a row's number shows its marker's popup
        driver.execute_script("arguments[0].click()", next(p for p in pins if p.text == "3"))
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '#cracks tr.hl[data-n="3"]'))
        driver.find_element(By.CSS_SELECTOR, '#cracks .num[data-n="2"]').click()
        wait.until(lambda d: "#2" in d.find_element(By.CSS_SELECTOR, ".leaflet-popup-content").text)
        # a crop enlarges to its whole frame
        driver.find_element(By.CSS_SELECTOR, '#cracks .crop[data-n="1"]').click()
        viewer_img = driver.find_element(By.CSS_SELECTOR, "#viewer.open img")
        wait.until(lambda d: d.execute_script("return arguments[0].naturalWidth", viewer_img) == 320)
        driver.save_screenshot(str(tmp_path / "enlarged.png"))
        driver.find_element(By.ID, "viewer").click()

        def column(index: int) -> list[float]:
            cells = driver.find_elements(By.CSS_SELECTOR, f"#cracks tbody tr td:nth-child({index})")
            return [float(c.text) for c in cells]

        header = driver.find_elements(By.CSS_SELECTOR, "#cracks th")[6]  # "Length px"
        assert header.text == "Length px"
        header.click()
        assert column(7) == sorted(column(7))
        header.click()
        assert column(7) == sorted(column(7), reverse=True)
        # the severity filter hides rows and markers together
        severities = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#cracks tbody .sev")]
        shown = driver.find_element(By.CSS_SELECTOR, f'.sevf[value="{severities[0]}"]')
        shown.click()
        left = 4 - severities.count(severities[0])
        assert len(driver.find_elements(By.CSS_SELECTOR, "#cracks tbody tr")) == left
        assert len(driver.find_elements(By.CSS_SELECTOR, "#map .pin")) == left
        shown.click()
        driver.save_screenshot(str(tmp_path / "report.png"))
    finally:
        driver.quit()
    assert (tmp_path / "report.png").stat().st_size > 10_000
    shutil.copy(tmp_path / "report.png", out / "report.png")


@needs_chromium
def test_a_long_survey_pages_its_table_and_clusters_its_markers(tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    template = make_alert(two_crack_image(5), 0, 0.0, geo=geo_at(0.0), snapshot_dir=tmp_path / "snapshots")
    lines = []
    for i in range(150):  # 300 cracks 10 m apart along a road: more markers than are drawn one by one
        when = T0 + timedelta(seconds=i)
        lines.append(json.dumps({**template, "alert_id": f"{i:032x}", "frame_index": i, "sequence": i,
                                 "capture_time": when.isoformat().replace("+00:00", "Z"), "geo": geo_at(10.0 * i)}))
    jsonl = tmp_path / "alerts.jsonl"
    jsonl.write_text("\n".join(lines) + "\n")
    out = tmp_path / "report"
    assert report_main([str(jsonl), "--out", str(out)]) == 0
    driver = open_chromium(tmp_path)
    try:
        driver.get((out / "report.html").resolve().as_uri())
        WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, "images").text != "")
        assert driver.find_element(By.ID, "page").text == "rows 1–50 of 300"
        assert len(driver.find_elements(By.CSS_SELECTOR, "#cracks tbody tr")) == 50
        driver.find_element(By.ID, "next").click()
        assert driver.find_element(By.ID, "page").text == "rows 51–100 of 300"
        assert driver.execute_script("return markerLayer instanceof L.MarkerClusterGroup")
        assert driver.find_elements(By.CSS_SELECTOR, "#map .marker-cluster")  # clusters drawn, not 300 pins
        driver.find_element(By.CSS_SELECTOR, '#cracks .num[data-n="60"]').click()  # zooms into its cluster
        WebDriverWait(driver, 30).until(
            lambda d: "#60" in d.find_element(By.CSS_SELECTOR, ".leaflet-popup-content").text)
    finally:
        driver.quit()
