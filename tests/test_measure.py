"""Crack measurement: drawn lines of known width and length measure right, a crack across a tile seam is
one crack, GSD conversion, severity rules, clean-up, errors, and speed on a full-HD map."""

from __future__ import annotations

import math
import time

import cv2
import numpy as np
import pytest
from drawn_cracks import draw_crack, path_length

from contract.tiling import extract_tiles, stitch, tile_grid
from edge.config import MeasureConfig
from edge.measure import MeasureError, measure_cracks
from edge.severity import SeverityRuleError, SeverityRules

# the connected components without the inspector's length and linking steps; the straight check stays on
# (the cracks drawn here are crooked, and the tests that measure a straight line turn it off themselves)
RAW = {"min_length_px": 0, "link_gap_px": 0}


def band(height: int, width: int, p0, p1, width_px: float, value: float = 0.9) -> np.ndarray:
    """A probability map with a crack drawn exactly: pixels whose centre lies within width_px / 2 of
    the segment p0-p1 (x, y) get ``value`` (a round-ended band, centre-line length |p1 - p0|)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    (x0, y0), (x1, y1) = p0, p1
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((xx - x0) * dx + (yy - y0) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
    dist = np.hypot(xx - (x0 + t * dx), yy - (y0 + t * dy))
    return np.where(dist <= width_px / 2, value, 0.02).astype(np.float32)


SEGMENTS = {
    "horizontal": ((50, 100), (350, 100)),
    "vertical": ((200, 30), (200, 370)),
    "diagonal": ((50, 50), (300, 300)),
    "oblique-18deg": ((40, 60), (340, 160)),
    "steep-80deg": ((100, 20), (160, 380)),
}


@pytest.mark.parametrize("width_px", [1, 3, 5, 9])
@pytest.mark.parametrize("name", list(SEGMENTS))
def test_drawn_line_measures_its_width_and_length(name, width_px):
    p0, p1 = SEGMENTS[name]
    # straight check off: the subject is the exact length and width of a known straight segment
    m = measure_cracks(band(400, 400, p0, p1, width_px), 0.5, straight_min_length_px=0)
    assert len(m.cracks) == 1
    crack = m.cracks[0]
    true_length = math.dist(p0, p1)
    # centre-line length: within 2.5 % (the chain estimator's bound on straight lines) + 2 px of ends
    assert abs(crack.length_px - true_length) <= 0.025 * true_length + 2, (crack.length_px, true_length)
    assert abs(crack.max_width_px - width_px) <= 1.0, crack.max_width_px
    assert abs(crack.mean_width_px - width_px) <= 1.0, crack.mean_width_px
    x, y, w, h = crack.bbox
    assert x <= min(p0[0], p1[0]) and x + w - 1 >= max(p0[0], p1[0])
    assert y <= min(p0[1], p1[1]) and y + h - 1 >= max(p0[1], p1[1])
    assert crack.area_px == int((band(400, 400, p0, p1, width_px) >= 0.5).sum())
    assert crack.mean_probability == pytest.approx(0.9)
    assert crack.length_mm is None and crack.max_width_mm is None


def test_axis_and_diagonal_lengths_are_exact():
    for p0, p1 in (SEGMENTS["horizontal"], SEGMENTS["vertical"], SEGMENTS["diagonal"]):
        # straight check off: the subject is the exact length of a known straight segment
        crack = measure_cracks(band(400, 400, p0, p1, 1), 0.5, straight_min_length_px=0).cracks[0]
        assert crack.length_px == pytest.approx(math.dist(p0, p1), abs=1e-6)


def test_crack_across_a_tile_seam_is_one_crack_with_the_right_length():
    """A model is least sure near tile borders; blending hides that, pasting tiles would not."""
    height, width = 600, 1000
    truth = np.full((height, width), 0.02, np.float32)
    path = draw_crack(truth, (250, 300), (750, 330), width_px=3, value=0.9)
    grid = tile_grid(height, width, tile=512, overlap=64)
    assert sorted({x for _, x in grid.origins}) == [0, 448, 488]
    tiles = extract_tiles(truth, grid) * 0.95
    tiles[:, :8, :] *= 0.3  # low confidence in the outer 8 px of every tile
    tiles[:, -8:, :] *= 0.3
    tiles[:, :, :8] *= 0.3
    tiles[:, :, -8:] *= 0.3
    m = measure_cracks(stitch(tiles, grid), 0.5)
    assert len(m.cracks) == 1, [c.bbox for c in m.cracks]
    assert m.cracks[0].length_px == pytest.approx(path_length(path), rel=0.025)
    assert abs(m.cracks[0].max_width_px - 3) <= 1
    # the same tiles pasted without blending (each tile overwrites the last) cut the crack in pieces
    pasted = np.zeros((height, width), np.float32)
    for i, (y, x) in enumerate(grid.origins):
        h, w = grid.valid_size(i)
        pasted[y : y + h, x : x + w] = tiles[i, :h, :w]
    assert len(measure_cracks(pasted, 0.5).cracks) > 1


def test_gsd_converts_every_size_to_millimetres():
    prob = band(400, 400, (50, 100), (350, 100), 5)
    straight = {"straight_min_length_px": 0}  # check off: 120 mm and 2.0 mm are a known straight band's sizes
    px = measure_cracks(prob, 0.5, **straight).cracks[0]
    mm = measure_cracks(prob, 0.5, gsd_mm_per_px=0.4, **straight).cracks[0]
    assert mm.length_mm == pytest.approx(px.length_px * 0.4)
    assert mm.max_width_mm == pytest.approx(2.0)
    assert mm.mean_width_mm == pytest.approx(px.mean_width_px * 0.4)
    assert mm.length_px == px.length_px
    d = mm.to_dict()
    assert d["length_mm"] == pytest.approx(120.0, abs=0.5) and d["max_width_mm"] == 2.0


def test_severity_rules_in_mm_and_px():
    rules = SeverityRules()
    assert rules.classify(max_width_px=1, length_px=100, gsd_mm_per_px=0.5) == "low"  # 0.5 mm, 50 mm
    assert rules.classify(max_width_px=2, length_px=100, gsd_mm_per_px=0.5) == "medium"  # 1 mm
    assert rules.classify(max_width_px=6, length_px=100, gsd_mm_per_px=0.5) == "high"  # 3 mm
    assert rules.classify(max_width_px=1, length_px=700, gsd_mm_per_px=0.5) == "medium"  # 350 mm long
    assert rules.classify(max_width_px=1, length_px=2000, gsd_mm_per_px=0.5) == "high"  # 1 m long
    assert rules.classify(max_width_px=2, length_px=100) == "low"  # no GSD: pixel limits
    assert rules.classify(max_width_px=3, length_px=100) == "medium"
    assert rules.classify(max_width_px=8, length_px=100) == "high"
    no_length = SeverityRules(medium_length_mm=None, high_length_mm=None)
    assert no_length.classify(max_width_px=1, length_px=5000, gsd_mm_per_px=0.5) == "low"
    with pytest.raises(SeverityRuleError, match=r"medium_width_mm \(5\) must not exceed high_width_mm \(3"):
        SeverityRules(medium_width_mm=5)
    with pytest.raises(SeverityRuleError, match="high_length_px must be a positive number"):
        SeverityRules(high_length_px=-1)


def test_frame_severity_is_the_worst_crack_and_cracks_are_sorted_by_it():
    prob = np.full((300, 400), 0.02, np.float32)
    draw_crack(prob, (20, 50), (200, 50), width_px=1)
    draw_crack(prob, (20, 200), (380, 200), width_px=9)
    m = measure_cracks(prob, 0.5, gsd_mm_per_px=0.5)
    assert [c.severity for c in m.cracks] == ["high", "low"]  # 4.5 mm wide first, 0.5 mm hairline second
    assert m.severity == "high"
    empty = measure_cracks(np.zeros((50, 60), np.float32), 0.5)
    assert empty.cracks == () and empty.severity is None and empty.coverage == 0.0
    assert empty.mask.shape == (50, 60) and not empty.mask.any()


def test_clean_up_drops_specks_and_keeps_8_connected_lines():
    prob = np.full((200, 200), 0.02, np.float32)
    draw_crack(prob, (10, 10), (150, 150), width_px=1)  # a 1-px crack: its diagonal steps join only 8-connected
    drawn = int((prob >= 0.5).sum())
    assert cv2.connectedComponents((prob >= 0.5).astype(np.uint8), connectivity=4)[0] > 2
    prob[180:183, 20:23] = 0.9  # a 9-px speck
    m = measure_cracks(prob, 0.5, min_area_px=10, **RAW)
    assert len(m.cracks) == 1 and m.cracks[0].area_px == drawn
    assert not m.mask[180:183, 20:23].any()
    assert m.coverage == pytest.approx(drawn / (200 * 200))
    assert (m.labels[m.mask] == m.cracks[0].label).all()
    assert len(measure_cracks(prob, 0.5, min_area_px=9, **RAW).cracks) == 2
    # closing joins a crack broken by a 1-px gap
    broken = np.full((100, 200), 0.02, np.float32)
    draw_crack(broken, (10, 50), (190, 50), width_px=3)
    broken[:, 100] = 0.0
    assert len(measure_cracks(broken, 0.5, **RAW).cracks) == 2
    assert len(measure_cracks(broken, 0.5, close_px=3, **RAW).cracks) == 1


def test_bad_inputs_name_the_argument():
    with pytest.raises(MeasureError, match=r"H x W probability map.*\(2, 8, 8\)"):
        measure_cracks(np.zeros((2, 8, 8), np.float32), 0.5)
    with pytest.raises(MeasureError, match="threshold must be in"):
        measure_cracks(np.zeros((8, 8), np.float32), 1.5)
    with pytest.raises(MeasureError, match="gsd_mm_per_px must be a positive"):
        measure_cracks(np.zeros((8, 8), np.float32), 0.5, gsd_mm_per_px=0)


def test_real_deepcrack_mask_measures_its_pixels(shared_data):
    path = sorted((shared_data / "deepcrack" / "masks").glob("*.png"))[0]
    mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    assert mask is not None, path
    prob = (mask > 127).astype(np.float32)
    m = measure_cracks(prob, 0.5, min_area_px=1, **RAW)
    assert len(m.cracks) >= 1
    assert m.coverage == pytest.approx(float(prob.mean()))
    assert sum(c.area_px for c in m.cracks) == int(prob.sum())
    longest = max(c.length_px for c in m.cracks)
    assert 0 < longest <= (mask.shape[0] + mask.shape[1]) * 3  # a path inside the frame, not a pixel count
    assert all(c.mean_width_px >= 1 for c in m.cracks if c.area_px > 20)


def test_full_hd_map_with_twenty_cracks_is_measured_fast():
    rng = np.random.default_rng(0)
    prob = np.zeros((1080, 1920), np.float32)
    for _ in range(20):
        start = rng.integers((0, 0), (1920, 1080))
        end = start + rng.integers(-300, 300, 2)
        draw_crack(prob, tuple(start), tuple(end), width_px=int(rng.integers(1, 8)), seed=int(rng.integers(1000)))
    measure_cracks(prob, 0.5, **RAW)  # first call imports scikit-image
    times = []
    for _ in range(3):
        start_s = time.perf_counter()
        m = measure_cracks(prob, 0.5, **RAW)
        times.append(time.perf_counter() - start_s)
    print(f"measure_cracks 1920x1080, {len(m.cracks)} cracks: {min(times) * 1e3:.1f} ms (best of 3)")
    assert len(m.cracks) >= 15
    assert min(times) < 0.5  # generous for a shared 2-core CI machine; ~40 ms when idle


def test_specks_are_dropped_and_fragments_of_one_crack_are_one_crack():
    rng = np.random.default_rng(3)
    prob = np.full((300, 400), 0.02, np.float32)
    path = draw_crack(prob, (20, 150), (380, 150), width_px=3)  # one crack, 360 px across ...
    prob[:, 140:146] = 0.0  # ... broken by the model in two places (6 and 10 px gaps)
    prob[:, 250:260] = 0.0
    for _ in range(30):  # texture specks: 5 x 5 blobs, area 25 px >= min_area_px, length ~4 px
        y, x = rng.integers(0, 120), rng.integers(0, 395)
        prob[y:y + 5, x:x + 5] = 0.9
    raw = measure_cracks(prob, 0.5, **RAW)
    assert len(raw.cracks) >= 30  # what a count of connected components says
    m = measure_cracks(prob, 0.5)  # the defaults: min_length_px 40, link_gap_px 30, as the daemon's
    assert len(m.cracks) == 1  # what an inspector says
    crack = m.cracks[0]
    x, y, w, h = crack.bbox
    top = int(path[:, 1].min())
    assert x <= 20 and x + w >= 380 and top - 5 <= y <= top
    # fragments' centre lines, gaps not counted (16 of the 360 columns: their share of the crooked length)
    assert crack.length_px == pytest.approx(path_length(path) * (360 - 6 - 10) / 360 - 3, abs=8)
    assert crack.area_px == int(m.mask.sum()) and not m.mask[:120].any()  # specks gone from the mask too
    assert (m.labels[m.mask] == crack.label).all()
    # a short crack far from others survives when it is long enough, and is its own crack
    draw_crack(prob, (30, 251), (90, 251), width_px=3)
    assert len(measure_cracks(prob, 0.5).cracks) == 2
    assert len(measure_cracks(prob, 0.5, min_length_px=70, link_gap_px=30).cracks) == 1


# --------------------------------------------------------------------------- straight structures


def _wandering_crack(seed: int, size: int = 512) -> np.ndarray:
    """A crack-like random walk across the frame: heading drifts, 1-3 px wide."""
    rng = np.random.default_rng(seed)
    canvas = np.zeros((size, size), np.uint8)
    x, y, heading = 10.0, size / 2 + rng.normal(0, 40), rng.normal(0, 0.2)
    while 0 <= x < size - 10 and 10 <= y < size - 10:
        heading = 0.85 * heading + rng.normal(0, 0.25)
        nx, ny = x + 4 * math.cos(heading), y + 4 * math.sin(heading)
        cv2.line(canvas, (int(x), int(y)), (int(nx), int(ny)), 1, int(rng.integers(1, 4)))
        x, y = nx, ny
    return canvas


def test_straight_joints_are_dropped_and_cracks_kept_when_the_check_is_on():
    joints = np.zeros((512, 512), np.float32)
    cv2.line(joints, (0, 40), (511, 230), 1.0, 4)  # a saw cut across the frame
    for k in range(0, 512, 90):  # a tile grid, 0.9 degrees off the axes
        cv2.line(joints, (k, 300), (k + 3, 511), 1.0, 3)
        cv2.line(joints, (0, 300 + k // 3), (511, 302 + k // 3), 1.0, 3)
    crack = _wandering_crack(0).astype(np.float32)
    assert len(measure_cracks(joints, 0.5, straight_min_length_px=0).cracks) >= 2, "off: every piece is a crack"
    on = {"straight_min_length_px": 120}
    assert measure_cracks(joints, 0.5, **on).cracks == ()
    kept = measure_cracks(crack, 0.5, **on).cracks
    assert len(kept) == 1 and kept[0].length_px > 400
    # a crack that meets a joint: one piece, mostly crooked, so it stays
    both = np.maximum(crack, 0)
    cv2.line(both, (250, 0), (250, 511), 1.0, 3)
    assert len(measure_cracks(both, 0.5, **on).cracks) == 1
    assert measure_cracks(both, 0.5, straight_min_length_px=120, straight_min_share=0.3).cracks == ()


def test_by_default_a_long_straight_joint_is_dropped_and_a_crooked_crack_as_long_kept():
    """The daemon's defaults (edge.severity.MaskCleanup, edge.config.MeasureConfig): the straight check is on."""
    prob = np.full((400, 600), 0.02, np.float32)
    path = draw_crack(prob, (40, 300), (560, 320), width_px=3)
    length = path_length(path)
    joint = band(400, 600, (40, 80), (40 + length, 80), 3)  # a saw cut exactly as long, in the same frame
    prob = np.maximum(prob, joint)
    assert len(measure_cracks(prob, 0.5, straight_min_length_px=0).cracks) == 2  # without the check: both
    m = measure_cracks(prob, 0.5)
    assert len(m.cracks) == 1 and not m.mask[:200].any()  # the joint is gone ...
    assert m.cracks[0].length_px == pytest.approx(length, rel=0.025)  # ... the crack is kept, whole
    assert MeasureConfig().straight_min_length_px == 105 and MeasureConfig().straight_min_share == 0.85


def test_straight_check_keeps_nearly_every_labelled_real_crack(shared_data):
    """Recall cost on real labels: of the ground-truth crack pieces at least the check's length in the six
    sets' masks (every 4th), the check (straight lines, joint grids and smooth constant-width curves, the
    daemon's defaults) drops at most 2 %."""
    from edge.measure import label_components, line_share, sample_skeleton

    long_pieces = dropped = 0
    for path in sorted(shared_data.glob("*/masks/*.png"))[::4]:
        mask = (cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) > 127).astype(np.uint8)
        if mask.sum() < MeasureConfig().straight_min_length_px:
            continue
        pieces = label_components(mask, 20)
        samples = sample_skeleton((pieces.labels > 0).astype(np.uint8))
        length = np.bincount(pieces.labels[samples.ys, samples.xs], weights=samples.step_length, minlength=pieces.n)
        config = MeasureConfig()
        share = line_share(pieces, samples, config.straight_min_length_px, config.smooth_line_tolerance_px,
                           config.straight_grid_segment_px)
        long_ = length[1:] >= config.straight_min_length_px
        long_pieces += int(long_.sum())
        dropped += int((long_ & (share[1:] >= 0.85)).sum())
    assert long_pieces > 300
    assert dropped <= 0.02 * long_pieces, f"{dropped} of {long_pieces} real cracks would be dropped"


def test_a_faint_joint_with_confident_stretches_goes_a_crooked_crack_in_faint_texture_stays():
    """The straight check judges a piece by the fainter line it lies in (straight_support_ratio): a model
    often sees a saw cut faintly end to end and surely only near a tile edge, a stretch too short to be
    judged straight alone."""
    prob = np.full((400, 400), 0.05, np.float32)
    prob[40:360, 100:103] = 0.35  # a faint straight joint, 320 px: below 0.5, above 0.5 x 0.5
    prob[40:110, 100:103] = 0.9  # its confident stretch: 70 px, shorter than the 120 px the check needs
    draw_crack(prob, (200, 60), (380, 340), width_px=3, value=0.9)  # a crooked crack ...
    prob[:, 250:252] = np.maximum(prob[:, 250:252], 0.3)  # ... crossed by a faint straight line
    m = measure_cracks(prob, 0.5)
    assert len(m.cracks) == 1 and m.cracks[0].bbox[0] >= 190, "the joint's stretch is dropped, the crack kept"
    alone = measure_cracks(prob, 0.5, straight_support_ratio=1.0)
    assert len(alone.cracks) == 2, "judged alone, the 70-px stretch is too short to be called straight"
    assert MeasureConfig().straight_support_ratio == 0.5


def _sagging_line(height: int, width: int, sag_px: float, width_px: float, value: float = 0.9) -> np.ndarray:
    """A cable across the frame: a parabola sagging ``sag_px`` at mid-span, ``width_px`` wide everywhere."""
    prob = np.full((height, width), 0.02, np.float32)
    xs = np.arange(10, width - 10, dtype=np.float64)
    t = (xs - width / 2) / (width / 2 - 10)
    ys = height / 3 + sag_px * (1 - t * t)
    points = np.stack([xs, ys], axis=1).round().astype(np.int32)
    cv2.polylines(prob, [points], False, value, int(width_px))
    return prob


def test_a_sagging_cable_is_a_line_a_crooked_crack_beside_it_is_not():
    """The smooth-line part of the check (smooth_line_tolerance_px): a cable's gentle curve is no straight
    segment of 120 px, so the straight lines alone keep it; as a smooth constant-width line it goes."""
    both = _sagging_line(512, 512, sag_px=80, width_px=4)
    assert path_length(draw_crack(both, (20, 420), (490, 400), width_px=3)) > 400
    straight_only = measure_cracks(both, 0.5, smooth_line_tolerance_px=0)
    assert len(straight_only.cracks) == 2, "straight segments alone: the cable is a crack"
    m = measure_cracks(both, 0.5)  # the daemon's defaults
    assert len(m.cracks) == 1 and m.cracks[0].bbox[1] >= 380, "the cable goes, the crooked crack stays"
    assert MeasureConfig().smooth_line_tolerance_px == 0.75


def test_a_smooth_crack_that_widens_is_not_a_cable():
    """Only constant-width pieces count as smooth lines: a crack drawn along the same gentle curve that
    widens from 2 to 12 px (as wide cracks are labelled with smooth outlines) stays."""
    prob = np.full((512, 512), 0.02, np.float32)
    xs = np.arange(10, 502)
    t = (xs - 256) / 246.0
    ys = (170 + 80 * (1 - t * t)).round().astype(int)
    for x, y, w in zip(xs, ys, np.linspace(2, 12, xs.size), strict=True):
        cv2.circle(prob, (int(x), int(y)), int(round(w / 2)), 0.9, -1)
    m = measure_cracks(prob, 0.5)
    assert len(m.cracks) == 1 and m.cracks[0].length_px > 400
    assert m.cracks[0].max_width_px >= 10


def test_the_smooth_line_test_is_local():
    """A pixel's verdict depends only on its 31-px window: pixels drawn far away change no share (unlike
    the straight segments' probabilistic Hough transform, whose samples depend on the whole frame)."""
    from edge.measure import SMOOTH_RADIUS_PX, label_components, sample_skeleton, smooth_share

    def shares(prob: np.ndarray) -> np.ndarray:
        pieces = label_components((prob >= 0.5).astype(np.uint8), 20)
        return smooth_share(pieces, sample_skeleton((pieces.labels > 0).astype(np.uint8)), 120, 0.75)

    cable = _sagging_line(512, 512, sag_px=80, width_px=4)
    alone = shares(cable)
    assert alone.shape == (2,) and alone[1] > 0.95
    busy = cable.copy()
    far = int(512 / 3 + 80 + 3 * SMOOTH_RADIUS_PX)
    draw_crack(busy, (20, far + 60), (490, far + 80), width_px=3)
    both = shares(busy)
    assert both.shape == (3,) and both[1] == alone[1], "the cable's share is unchanged by a crack far below it"
    assert both[2] < 0.5, "a crooked crack is smooth only in stretches: no smooth line"


def test_smooth_line_tolerance_is_checked_in_the_config():
    with pytest.raises(ValueError, match="smooth_line_tolerance_px"):
        MeasureConfig(smooth_line_tolerance_px=-0.5)
    with pytest.raises(ValueError, match="straight_grid_segment_px"):
        MeasureConfig(straight_grid_segment_px=-1)


def test_the_configs_cleanup_is_every_clean_up_argument_of_measure_cracks():
    """One mapping from the [measure] section to measure_cracks (the daemon and the benchmarks use it): a
    clean-up setting added to MaskCleanup and MeasureConfig reaches the measurement without a third edit."""
    import dataclasses
    import inspect

    from edge.severity import MaskCleanup

    cleanup = MeasureConfig(smooth_line_tolerance_px=0.0, link_gap_px=7).cleanup()
    assert set(cleanup) == {f.name for f in dataclasses.fields(MaskCleanup)}
    assert set(cleanup) <= set(inspect.signature(measure_cracks).parameters)
    assert cleanup["smooth_line_tolerance_px"] == 0.0 and cleanup["link_gap_px"] == 7


def _brick_bond(size: int = 512, course: int = 40, brick: int = 100, angle_deg: float = 1.5) -> np.ndarray:
    """Mortar of a running bond, as a model marks it: long bed joints, short head joints, rotated slightly."""
    mortar = np.zeros((size, size), np.float32)
    for row, y in enumerate(range(20, size, course)):
        cv2.line(mortar, (0, y), (size - 1, y), 1.0, 3)
        for x in range((row % 2) * brick // 2, size, brick):
            cv2.line(mortar, (x, y), (x, min(y + course, size - 1)), 1.0, 3)
    turn = cv2.getRotationMatrix2D((size / 2, size / 2), angle_deg, 1.0)
    return cv2.warpAffine(mortar, turn, (size, size), flags=cv2.INTER_NEAREST)


def test_a_brick_bond_is_a_joint_grid_though_its_head_joints_are_short():
    from edge.measure import label_components, sample_skeleton, straight_share

    bond = _brick_bond()
    pieces = label_components((bond >= 0.5).astype(np.uint8), 20)
    samples = sample_skeleton((pieces.labels > 0).astype(np.uint8))
    assert pieces.n == 2, "the mortar is one piece"
    assert straight_share(pieces, samples, 120)[1] < 0.85, "long lines alone: the head joints are too short"
    assert straight_share(pieces, samples, 120, 20)[1] >= 0.85, "head joints count: square to the bed joints"
    assert measure_cracks(bond, 0.5).cracks == ()
    assert len(measure_cracks(bond, 0.5, straight_grid_segment_px=0).cracks) == 1, "the grid part off: it stays"
    assert MeasureConfig().straight_grid_segment_px == 20
    # the same 40 px head joints without any long joint in the piece are not a grid: only short straight bits
    heads = np.zeros((512, 512), np.float32)
    for x in range(40, 500, 60):
        cv2.line(heads, (x, 100), (x + 20, 140), 1.0, 3)
        cv2.line(heads, (x + 20, 140), (x + 10, 180), 1.0, 3)
    assert len(measure_cracks(heads, 0.5).cracks) >= 1


def test_a_crooked_crack_joined_to_a_joint_keeps_its_own_short_straight_stretches():
    """Only segments parallel or perpendicular to the piece's long joints count as grid: a crack's short
    straight stretches at other angles do not, so the crack that meets a joint stays."""
    prob = np.zeros((512, 512), np.float32)
    cv2.line(prob, (0, 256), (511, 256), 1.0, 3)  # a long joint
    x, y = 256, 256
    for dx, dy in [(25, 20), (-10, 30), (22, 18), (-14, 26), (24, 22), (-9, 28), (26, 17), (-12, 25)]:
        cv2.line(prob, (x, y), (x + dx, y + dy), 1.0, 3)  # straight stretches at 30-70 degrees off the joint
        x, y = x + dx, y + dy
    m = measure_cracks(prob, 0.5)
    assert len(m.cracks) == 1 and m.mask[300:].any(), "the crack (with its joint) stays"
