"""How ``python -m edge.report`` scales: build time, peak memory and sizes for 1k / 4k / 20k alerts, and
how the page behaves in headless Chromium (load, a sort click, a filter click) for the largest.

The alerts are a drive: one alert every 0.5 s at 10 m/s with interpolated gpsd positions, a GSD and a
heading, 1-3 cracks each (measured by the real ``measure_cracks`` on drawn cracks, re-used with
new ids, times and places), every tenth without a position (so the scene-correlation path runs
too), and a 480 x 360 overlay JPEG on disk per alert. Each size is built in its own process
(``python -m edge.report``) so peak memory is its own.

    python -m benchmarks.bench_report --sizes 1000 4000 20000
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cv2
import numpy as np

from benchmarks.common import add_results_args, command_line, publish, section_header
from edge.alerts import build_alert, model_info
from edge.geo.ground import METRES_PER_DEGREE_LAT
from edge.measure import measure_cracks
from edge.snapshots import render_overlay

T0 = datetime(2024, 5, 3, 7, 0, 0, tzinfo=timezone.utc)


def _variants(count: int = 6) -> list[tuple[dict, bytes]]:
    """Alerts (as templates) and their overlay JPEGs from drawn cracks, measured for real."""
    out = []
    rng = np.random.default_rng(0)
    for i in range(count):
        image = np.full((360, 480, 3), 175, np.uint8) + rng.integers(0, 12, (360, 480, 3), dtype=np.uint8)
        for _ in range(1 + i % 3):
            x0, y0 = rng.integers(20, 400), rng.integers(20, 300)
            cv2.line(image, (int(x0), int(y0)), (int(x0) + int(rng.integers(30, 80)), int(y0) + int(rng.integers(-40, 60))),
                     (30, 30, 30), int(rng.integers(2, 6)))
        prob = (cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) < 90).astype(np.float32)
        m = measure_cracks(prob, 0.5, gsd_mm_per_px=2.0)
        alert = build_alert(m, device_id="van-3", sequence=0, created_at=T0, capture_time=T0, source="rtsp://cam/road",
                            frame_index=0, frame_size=(480, 360), model_info=model_info("m", "0" * 64, 0.5, "fp32"),
                            gsd_error_mm_per_px=0.08)
        out.append((alert, render_overlay(image, prob > 0.5, m.cracks, jpeg_quality=80)))
    return out


def make_drive(folder: Path, n: int) -> Path:
    """``n`` alerts as JSON lines in ``folder/alerts.jsonl`` with their snapshots in ``folder/snapshots``."""
    snaps = folder / "snapshots"
    snaps.mkdir(parents=True)
    variants = _variants()
    lines = []
    for i in range(n):
        template, jpeg = variants[i % len(variants)]
        alert_id = f"{i:032x}"
        when = T0 + timedelta(seconds=0.5 * i)
        north_m = 5.0 * i
        geo = None if i % 10 == 9 else {
            "lat": round(48.0 + north_m / METRES_PER_DEGREE_LAT, 8), "lon": 11.0, "heading_deg": 0.0, "source": "gpsd",
            "age_s": 0.2, "stale": i % 97 == 0, "interpolated": True}
        path = snaps / f"{alert_id}.jpg"
        path.write_bytes(jpeg)
        alert = {**template, "alert_id": alert_id, "sequence": i, "frame_index": i,
                 "capture_time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                 "created_at": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                 "geo": geo, "snapshot": {"path": str(path)}}
        lines.append(json.dumps(alert))
    (folder / "alerts.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "alerts.jsonl"


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def build(alerts: Path, out: Path) -> tuple[float, float]:
    """(seconds, peak MB) of ``python -m edge.report`` in its own process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "edge.report", str(alerts), "--out", str(out)], check=True,
                   stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return seconds, max(peak_kb, before) / 1024


def browser(report: Path, profile: Path) -> dict[str, float]:
    """Load, sort and filter times of the page in headless Chromium (ms)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,1600", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        start = time.perf_counter()
        driver.get(report.resolve().as_uri())
        WebDriverWait(driver, 300).until(lambda d: d.find_element(By.ID, "images").text != "")
        load_ms = (time.perf_counter() - start) * 1000
        sort_ms = driver.execute_script(
            "const t=performance.now();document.querySelectorAll('#cracks th')[3].click();return performance.now()-t")
        filter_ms = driver.execute_script(
            "const t=performance.now();document.querySelector('.sevf[value=\"low\"]').click();return performance.now()-t")
        markers = driver.execute_script("let n=0;markerLayer.eachLayer(()=>n++);return n")
    finally:
        driver.quit()
    return {"load_ms": load_ms, "sort_ms": sort_ms, "filter_ms": filter_ms, "markers_after_filter": markers}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 20000], help="alert counts (default: %(default)s)")
    parser.add_argument("--no-browser", action="store_true", help="skip the Chromium timing of the largest report")
    add_results_args(parser)
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_report_") as tmp:
        for n in sorted(args.sizes):
            alerts = make_drive(Path(tmp) / f"in{n}", n)
            out = Path(tmp) / f"out{n}"
            seconds, peak_mb = build(alerts, out)
            cracks = sum(1 for _ in open(out / "cracks.csv")) - 1
            rows.append((n, cracks, seconds, peak_mb, (out / "report.html").stat().st_size / 2**20,
                         folder_size(out) / 2**20, alerts.stat().st_size / 2**20))
            print(rows[-1], flush=True)
        page = None if args.no_browser or not shutil.which("chromedriver") else browser(
            Path(tmp) / f"out{max(args.sizes)}" / "report.html", Path(tmp) / "profile")
    table = ["| alerts | cracks listed | build s | peak MB | report.html MB | report folder MB | alerts.jsonl MB |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    table += [f"| {n} | {c} | {s:.1f} | {m:.0f} | {h:.1f} | {f:.0f} | {j:.1f} |" for n, c, s, m, h, f, j in rows]
    if page:
        table += ["", f"Page of the {max(args.sizes)}-alert report in headless Chromium: loaded (map, first page, its "
                  f"crops) in {page['load_ms'] / 1000:.1f} s; a sort click {page['sort_ms']:.0f} ms; a severity filter "
                  f"click {page['filter_ms']:.0f} ms ({page['markers_after_filter']} markers left)."]
    text = section_header("Report scale (bench_report.py)", command_line(__file__, argv)) + "\n".join(table) + "\n"
    publish(text, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
