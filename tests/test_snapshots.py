"""Overlay snapshots show the crack and its box; the local store keeps under its size cap."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from drawn_cracks import draw_crack

from edge.measure import measure_cracks
from edge.snapshots import SnapshotError, SnapshotStore, render_overlay


def _frame_and_measurement():
    frame = np.full((240, 320, 3), 128, np.uint8)
    prob = np.zeros((240, 320), np.float32)
    draw_crack(prob, (40, 120), (279, 120), width_px=5)  # a 5-px crack
    return frame, measure_cracks(prob, 0.5, gsd_mm_per_px=0.5)


def test_overlay_is_a_jpeg_with_the_crack_tinted_and_boxed():
    frame, m = _frame_and_measurement()
    jpeg = render_overlay(frame, m.mask, m.cracks)
    assert jpeg[:2] == b"\xff\xd8"
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == frame.shape
    crack_y = int(np.flatnonzero(m.mask[:, 150]).mean())  # where the crooked crack crosses column 150
    b, g, r = (float(v) for v in image[crack_y, 150])
    assert r > 170 and b < 110 and g < 110, (b, g, r)  # the crack is tinted red
    assert np.abs(image[200:230, 20:60].astype(int) - 128).max() < 12  # the road elsewhere is untouched
    x, y, w, h = m.cracks[0].bbox
    below = image[y + h : y + h + 8, x + 20 : x + w - 20].astype(int)  # the box runs just below the crack
    assert (np.abs(below - 128).max(axis=(0, 2)) > 60).mean() > 0.9
    assert render_overlay(frame, m.mask, []) != jpeg  # boxes and labels are drawn


def test_overlay_checks_shapes():
    frame, m = _frame_and_measurement()
    with pytest.raises(SnapshotError, match=r"mask is \(240, 300\) but the frame is \(240, 320\)"):
        render_overlay(frame, m.mask[:, :300], m.cracks)
    with pytest.raises(SnapshotError, match="H x W x 3"):
        render_overlay(frame[..., 0], m.mask, m.cracks)


def test_store_keeps_under_its_cap_and_deletes_the_oldest(tmp_path):
    frame, m = _frame_and_measurement()
    jpeg = render_overlay(frame, m.mask, m.cracks)
    cap = int(len(jpeg) * 3.5)
    store = SnapshotStore(tmp_path / "snaps", max_bytes=cap)
    paths = [store.save(f"alert{i:02d}", jpeg) for i in range(6)]
    on_disk = sorted(p.name for p in (tmp_path / "snaps").glob("*.jpg"))
    assert on_disk == ["alert03.jpg", "alert04.jpg", "alert05.jpg"]
    assert sum(p.stat().st_size for p in (tmp_path / "snaps").glob("*")) <= cap
    assert paths[-1] == tmp_path / "snaps" / "alert05.jpg" and paths[-1].read_bytes() == jpeg
    assert store.total_bytes == 3 * len(jpeg) and len(store) == 3
    # a restarted daemon counts the files already there
    again = SnapshotStore(tmp_path / "snaps", max_bytes=cap)
    assert again.total_bytes == 3 * len(jpeg)
    again.save("alert06", jpeg)
    assert not (tmp_path / "snaps" / "alert03.jpg").exists() and len(again) == 3


def test_store_rejects_unsafe_names_and_oversized_snapshots(tmp_path):
    store = SnapshotStore(tmp_path, max_bytes=100)
    with pytest.raises(SnapshotError, match="must be 1-64 letters"):
        store.save("../escape", b"\xff\xd8x")
    with pytest.raises(SnapshotError, match="more than the store's cap of 100 bytes"):
        store.save("big", b"\xff" * 101)
    with pytest.raises(SnapshotError, match="max_bytes must be a positive number of bytes"):
        SnapshotStore(tmp_path, max_bytes=0)
