"""Alerts validate against schema v1 (and a broken one is reported with its field); the policy
suppresses repeats within the cool-down and lets a new or worse crack through."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from drawn_cracks import draw_crack
from pydantic import ValidationError

from edge.alerts import AlertError, AlertPolicy, box_overlap, build_alert, model_info, validate_alert
from edge.config import AlertsConfig
from edge.measure import measure_cracks

CAPTURED = datetime(2026, 5, 4, 12, 30, 15, 250000, tzinfo=timezone.utc)
MODEL = model_info("aelf-unet-w8", "ab" * 32, 0.42, "fp32")


def crack_map(*cracks, height: int = 240, width: int = 320) -> np.ndarray:
    """Cracks given as (x0, x1, y, width_px) on a blank probability map: each runs crooked from (x0, y)
    to (x1, y), width_px wide (drawn_cracks.draw_crack; the same seed, so the same crack keeps its shape)."""
    prob = np.full((height, width), 0.01, np.float32)
    for x0, x1, y, w in cracks:
        draw_crack(prob, (x0, y), (x1, y), width_px=w, value=0.9)
    return prob


def alert_for(measurement, **overrides):
    kwargs = dict(
        device_id="truck-07",
        sequence=41,
        created_at=CAPTURED + timedelta(milliseconds=80),
        capture_time=CAPTURED,
        source="rtsp://camera.local/stream1",
        frame_index=1234,
        frame_size=(320, 240),
        model_info=MODEL,
    )
    kwargs.update(overrides)
    return build_alert(measurement, **kwargs)


def test_built_alert_validates_against_the_schema():
    prob = crack_map((20, 200, 60, 3), (40, 300, 150, 7))
    m = measure_cracks(prob, 0.5, gsd_mm_per_px=0.5)
    alert = alert_for(m, geo={"lat": 52.52, "lon": 13.405, "heading_deg": 90.0}, snapshot={"path": "/var/snap/x.jpg"})
    assert validate_alert(alert) == []
    assert json.loads(json.dumps(alert)) == alert  # plain JSON types only
    assert len(alert["alert_id"]) == 32 and alert["alert_id"] != alert_for(m)["alert_id"]
    assert alert["capture_time"] == "2026-05-04T12:30:15.250Z"
    assert alert["frame_size"] == {"width": 320, "height": 240}
    assert alert["severity"] == "high" and alert["cracks"][0]["severity"] == "high"  # 3.5 mm wide crack first
    assert alert["gsd_mm_per_px"] == 0.5
    assert alert["cracks"][0]["max_width_mm"] == pytest.approx(3.5)
    assert alert["coverage"] == pytest.approx(int((prob >= 0.5).sum()) / (320 * 240), abs=1e-6)  # every drawn pixel
    without_gsd = alert_for(measure_cracks(crack_map((20, 200, 60, 3)), 0.5))
    assert validate_alert(without_gsd) == [] and "length_mm" not in without_gsd["cracks"][0]


def test_a_broken_alert_is_reported_with_its_field():
    alert = alert_for(measure_cracks(crack_map((20, 200, 60, 3)), 0.5))
    alert["cracks"][0]["area_px"] = 0
    alert["model"]["sha256"] = "not-a-hash"
    alert["device_id"] = "truck/07"
    alert["capture_time"] = "yesterday"
    del alert["frame_index"]
    errors = validate_alert(alert)
    assert any(e.startswith("cracks/0/area_px:") for e in errors), errors
    assert any(e.startswith("model/sha256:") for e in errors), errors
    assert any(e.startswith("device_id:") for e in errors), errors
    assert any(e.startswith("capture_time:") and "date-time" in e for e in errors), errors
    assert any(e.startswith("(root):") and "frame_index" in e for e in errors), errors


def test_build_alert_refuses_what_the_schema_would_reject():
    m = measure_cracks(crack_map((20, 200, 60, 3)), 0.5)
    with pytest.raises(AlertError, match="no crack"):
        alert_for(measure_cracks(crack_map(), 0.5))
    with pytest.raises(AlertError, match="capture_time must be timezone-aware"):
        alert_for(m, capture_time=datetime(2026, 5, 4, 12, 0, 0))
    with pytest.raises(AlertError, match="max_cracks must be in 1..256"):
        alert_for(m, max_cracks=1000)


def test_max_cracks_keeps_the_most_severe():
    many = crack_map(*[(10, 60, y, 1) for y in range(10, 200, 10)], (100, 300, 220, 9))
    m = measure_cracks(many, 0.5, link_gap_px=0)  # 20 separate cracks, not one linked crack
    alert = alert_for(m, max_cracks=3)
    # the 9-px crack first (widths read within +-1 px: edge.measure's calibration), not a 1-px one
    assert len(alert["cracks"]) == 3 and alert["cracks"][0]["max_width_px"] == pytest.approx(9, abs=1)
    assert validate_alert(alert) == []


def test_box_overlap_is_over_the_smaller_box_with_margin():
    assert box_overlap((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_overlap((0, 0, 100, 4), (0, 0, 50, 4)) == 1.0  # half of a crack that broke in two
    assert box_overlap((0, 0, 10, 10), (20, 0, 10, 10)) == 0.0
    assert box_overlap((0, 0, 100, 3), (0, 6, 100, 3)) == 0.0  # thin crack jittered 6 px: no overlap
    assert box_overlap((0, 0, 100, 3), (0, 6, 100, 3), margin_px=16) > 0.8  # the policy's default margin


def test_policy_suppresses_a_crack_seen_in_consecutive_frames_until_the_cooldown_ends():
    policy = AlertPolicy(AlertsConfig(cooldown_s=10.0))
    decisions = []
    for i in range(30):  # one second of video at 30 fps, the crack drifting 2 px per frame
        x = 20 + 2 * i
        decisions.append(policy.decide(measure_cracks(crack_map((x, x + 150, 80, 3)), 0.5), i / 30, "cam0"))
    assert decisions == [True] + [False] * 29, policy.last_reason
    assert "already alerted" in policy.last_reason
    # still in view after the cool-down: one reminder
    assert policy.decide(measure_cracks(crack_map((80, 230, 80, 3)), 0.5), 10.5, "cam0")


def test_policy_lets_a_new_or_worse_crack_through():
    policy = AlertPolicy(AlertsConfig(cooldown_s=30.0))
    first = crack_map((20, 170, 60, 1))
    assert policy.decide(measure_cracks(first, 0.5), 0.0, "cam0")
    assert not policy.decide(measure_cracks(first, 0.5), 0.1, "cam0")
    # a second crack elsewhere in the frame is new
    assert policy.decide(measure_cracks(crack_map((20, 170, 60, 1), (20, 170, 200, 1)), 0.5), 0.2, "cam0")
    # the first crack widens from 1 px (low) to 9 px (high): worse
    worse = crack_map((20, 170, 60, 9), (20, 170, 200, 1))
    assert policy.decide(measure_cracks(worse, 0.5), 0.3, "cam0"), policy.last_reason
    assert not policy.decide(measure_cracks(worse, 0.5), 0.4, "cam0")
    # another camera has its own memory
    assert policy.decide(measure_cracks(first, 0.5), 0.5, "cam1")


def test_policy_thresholds_and_per_source_cooldown():
    low = measure_cracks(crack_map((20, 60, 60, 1)), 0.5, min_length_px=0)  # a 40-px crack, kept
    high = measure_cracks(crack_map((20, 60, 60, 9)), 0.5, min_length_px=0)
    assert not AlertPolicy(AlertsConfig(min_severity="medium")).decide(low, 0.0, "cam0")
    assert not AlertPolicy(AlertsConfig(min_coverage=0.01)).decide(low, 0.0, "cam0")
    assert not AlertPolicy(AlertsConfig()).decide(measure_cracks(crack_map(), 0.5), 0.0, "cam0")

    policy = AlertPolicy(AlertsConfig(source_cooldown_s=5.0, cooldown_s=1.0))  # a moving vehicle: nothing matches
    assert policy.decide(low, 0.0, "cam0")
    moved = measure_cracks(crack_map((200, 240, 150, 1)), 0.5)
    assert not policy.decide(moved, 2.0, "cam0") and "source_cooldown_s" in policy.last_reason
    assert policy.decide(high, 2.5, "cam0")  # severity increased: through despite the cool-down
    assert policy.decide(moved, 7.6, "cam0")  # suppressed cracks are not lost: alerted when it ends

    with pytest.raises(ValidationError, match=r"min_severity\s+Value error, must be one of low, medium, high"):
        AlertsConfig(min_severity="critical")
    with pytest.raises(ValidationError, match=r"cooldown_s\s+Input should be greater than or equal to 0"):
        AlertsConfig(cooldown_s=-1)
