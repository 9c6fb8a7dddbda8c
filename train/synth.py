"""Synthetic training samples: crack-free surfaces, hairline cracks drawn on them, and distractors.

Three pieces, all pure functions on RGB uint8 H x W x 3 arrays with randomness only from a passed
``numpy.random.Generator`` (same generator state -> same output):

* :func:`crack_free_background` turns a labelled photograph into a crack-free surface by
  inpainting its (dilated) crack pixels; :func:`crack_free_windows` lists crack-free windows of a mask.
* :func:`render_hairline_cracks` draws 1-3 branching hairline cracks (1-3 px, 8-35 % darker, the
  walk prefers darker pixels so a crack follows the surface's grain) and returns their mask.
* :func:`render_distractors` draws what must *not* be called a crack (mask stays 0): straight dark
  lines, joint / seam grids, sharp brightness edges, painted marks and formwork streaks. Straight and
  regular is the point: a straight construction joint must not be an alert. The structures of real
  surfaces (tiles, bricks, formwork with tie holes, saw cuts, chamfers, cables, road paint) are
  families of their own in ``train.structures``, some held out from training for measurement.

:class:`SyntheticCrops` is a torch dataset of such samples that returns what ``train.data.TrainCrops``
returns, deterministic per (seed, epoch, index).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from functools import lru_cache

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from train.augment import AugmentConfig, random_affine, random_crop
from train.data import to_chw_float
from train.photometric import PhotometricConfig, random_photometric
from train.structures import DEFAULT_TRAINING_FAMILIES, check_families, render_structures

SUPERSAMPLE = 4  # cracks and lines are drawn at 4x and area-averaged down: sub-pixel widths, anti-aliased
# drawn_structures: a pixel counts as drawn where its brightness ratio to the bare surface changes this sharply
# across 3 x 3 pixels (x 255 of the log ratio: 12 = a 4.8 % step; the faintest drawn joint darkens 10 %)
DRAWN_MIN_CHANGE = 12
_SUB = SUPERSAMPLE * 16  # cv2 drawing with shift=4: coordinates in 1/16 of a supersampled pixel


@dataclass(frozen=True)
class SynthConfig:
    """Every range and probability of the synthetic generator (ranges drawn uniformly)."""

    # hairline cracks
    crack_count: tuple[int, int] = (1, 3)  # cracks per cracked sample (inclusive)
    width_px: tuple[float, float] = (1.0, 3.0)  # crack width; varies along the crack within this range
    darkening: tuple[float, float] = (0.08, 0.35)  # fraction of brightness removed at a fully covered pixel
    length_frac: tuple[float, float] = (0.4, 1.2)  # walk length as a fraction of the image side
    step_px: float = 2.0  # walk step
    max_turn_deg: float = 40.0  # largest turn per step
    follow_texture: float = 1.2  # weight of "go where the surface is darker" in the walk (0 = ignore)
    straightness: float = 3.0  # weight pulling the walk back to its slowly drifting heading
    randomness: float = 0.7  # Gumbel noise scale of the walk's choices (higher = more tortuous)
    branch_prob: float = 0.5  # probability that a crack has branches (1-2 of them)
    branch_length_frac: tuple[float, float] = (0.15, 0.5)  # branch length as a fraction of its crack's
    blur_sigma: tuple[float, float] = (0.3, 0.7)  # softening of the crack to match the image's sharpness
    # broken hairlines: with fade_prob a crack (or branch) has 1-3 stretches (fade_length_frac of it each)
    # where its darkening falls by fade_depth, never below the visibility floor below; labelled throughout
    fade_prob: float = 0.5
    fade_depth: tuple[float, float] = (0.4, 0.8)
    fade_length_frac: tuple[float, float] = (0.1, 0.3)
    # a crack must stay visible on a coarse surface: its darkening (in grey levels) is raised to at least
    # this multiple of the surface's fine-texture std; where that exceeds darkening[1] the surface is too
    # coarse for a hairline and none is drawn (an invisible crack would be a wrong label); 0 = no floor
    min_contrast_to_texture: float = 2.5
    # wide cracks: with wide_prob a crack is drawn wide and deep (an open crack or spall: a dark band of
    # uneven width along a tortuous path, its inside labelled crack), so that a uniform dark band (a joint,
    # labelled background) differs from a crack by its course, not by being wide or dark; 0 = hairlines only
    wide_prob: float = 0.0
    wide_width_px: tuple[float, float] = (4.0, 12.0)
    wide_darkening: tuple[float, float] = (0.4, 0.8)
    # distractors (mask stays 0)
    line_width_px: tuple[float, float] = (1.0, 6.0)
    line_darkening: tuple[float, float] = (0.1, 0.5)
    line_count: tuple[int, int] = (1, 3)
    grid_spacing_px: tuple[float, float] = (24.0, 96.0)
    grid_width_px: tuple[float, float] = (1.0, 4.0)
    grid_darkening: tuple[float, float] = (0.1, 0.4)
    edge_factor: tuple[float, float] = (0.55, 0.85)  # brightness of the darker side (the other is 1)
    edge_softness_px: tuple[float, float] = (0.3, 1.5)
    paint_width_px: tuple[float, float] = (4.0, 14.0)
    paint_opacity: tuple[float, float] = (0.6, 0.95)
    streak_contrast: tuple[float, float] = (0.03, 0.1)  # std of formwork streaks, fraction of brightness
    p_line: float = 0.5
    p_grid: float = 0.35
    p_edge: float = 0.3
    p_paint: float = 0.2
    p_streaks: float = 0.3
    # straight structures of real surfaces (train.structures): which families training may draw, and how often
    structure_families: tuple[str, ...] = DEFAULT_TRAINING_FAMILIES
    p_structures: float = 0.5
    # mix of one synthetic sample
    p_crack: float = 0.6  # hairline cracks drawn
    p_distractor: float = 0.5  # distractors drawn (before the cracks); neither -> plain crack-free negative

    def __post_init__(self) -> None:
        check_families(self.structure_families)
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "structure_families":
                continue
            if (f.name.startswith("p_") or f.name.endswith("_prob")) and not 0.0 <= value <= 1.0:
                raise ValueError(f"synth {f.name} must be a probability in [0, 1], got {value}")
            if isinstance(value, tuple) and (len(value) != 2 or value[0] > value[1] or value[0] < 0):
                raise ValueError(f"synth {f.name} must be a (low, high) pair with 0 <= low <= high, got {value}")
        for name in ("darkening", "line_darkening", "grid_darkening", "wide_darkening"):
            if getattr(self, name)[1] >= 1.0:
                raise ValueError(f"synth {name} must stay below 1, got {getattr(self, name)}")
        for name in ("width_px", "wide_width_px"):
            if getattr(self, name)[0] < 0.5:
                raise ValueError(f"synth {name} must be >= 0.5 px, got {getattr(self, name)}")
        if self.crack_count[0] < 1:
            raise ValueError(f"synth crack_count must be >= 1, got {self.crack_count}")
        if self.step_px <= 0:
            raise ValueError(f"synth step_px must be > 0, got {self.step_px}")


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def _integer(rng: np.random.Generator, bounds: tuple[int, int]) -> int:
    return int(rng.integers(bounds[0], bounds[1] + 1))


# ----------------------------------------------------------------------------- crack-free surfaces


def crack_free_background(
    image: np.ndarray,
    mask: np.ndarray,
    *,
    dilate_px: int = 5,
    inpaint_radius_px: float = 5.0,
    max_crack_fraction: float = 0.2,
    max_crack_width_px: float = 21.0,
) -> np.ndarray | None:
    """The image with its crack pixels (dilated by ``dilate_px``) inpainted; None when unusable.

    Labels are narrower than the visible crack (its dark rim is unlabelled), hence the dilation.
    Telea inpainting fills the region smoothly; the surface's fine texture is then put back by adding
    the high-pass detail of a crack-free part of the same image (shifted copy), so the fill does not
    read as a smooth streak. A wide region still smears, so the result is None (not usable as a
    crack-free surface) when the dilated crack covers more than ``max_crack_fraction`` of the image
    or a crack is wider than ``max_crack_width_px`` (from the mask's distance transform). An image
    without crack pixels is returned as a copy.
    """
    if image.shape[:2] != mask.shape:
        raise ValueError(f"crack_free_background: image {image.shape[:2]} and mask {mask.shape} differ in size")
    if not mask.any():
        return image.copy()
    binary = (mask > 0).astype(np.uint8)
    half_width = float(cv2.distanceTransform(binary, cv2.DIST_L2, 3).max())
    if 2.0 * half_width - 1.0 > max_crack_width_px:
        return None
    side = 2 * dilate_px + 1
    grown = cv2.dilate(binary, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side))) if dilate_px else binary
    if grown.mean() > max_crack_fraction:
        return None
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    filled = cv2.cvtColor(cv2.inpaint(bgr, grown, inpaint_radius_px, cv2.INPAINT_TELEA), cv2.COLOR_BGR2RGB)
    return _restore_texture(image, filled, grown)


def _restore_texture(image: np.ndarray, filled: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Add to ``filled`` (inside ``region``) the fine detail of the least-cracked shifted copy of ``image``."""
    h, w = region.shape
    source = image.astype(np.float32)
    detail = source - cv2.GaussianBlur(source, (0, 0), 2.0)
    best, best_overlap = None, None
    for fy, fx in ((0.0, 0.31), (0.37, 0.0), (0.29, 0.43), (0.5, 0.5), (0.13, 0.71), (0.61, 0.19)):
        shift = (int(fy * h), int(fx * w))
        overlap = int(np.count_nonzero(np.roll(region, shift, axis=(0, 1)) & region))
        if best_overlap is None or overlap < best_overlap:
            best, best_overlap = shift, overlap
    borrowed = np.roll(detail, best, axis=(0, 1))
    blend = cv2.GaussianBlur(region.astype(np.float32), (0, 0), 1.5)[..., None]
    out = filled.astype(np.float32) + borrowed * blend
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def crack_free_windows(
    mask: np.ndarray, size: int, margin_px: int = 16, stride: int | None = None
) -> list[tuple[int, int]]:
    """Top-left ``(y, x)`` of every ``size`` x ``size`` window (on a ``stride`` grid, default size // 2)
    with no crack pixel inside it or within ``margin_px`` of it."""
    h, w = mask.shape
    stride = stride or max(1, size // 2)
    if h < size or w < size:
        return []
    side = 2 * margin_px + 1
    grown = cv2.dilate((mask > 0).astype(np.uint8), np.ones((side, side), np.uint8)) if margin_px else (mask > 0)
    integral = cv2.integral(grown.astype(np.uint8))
    windows = []
    for y in range(0, h - size + 1, stride):
        for x in range(0, w - size + 1, stride):
            count = integral[y + size, x + size] - integral[y, x + size] - integral[y + size, x] + integral[y, x]
            if count == 0:
                windows.append((y, x))
    return windows


# ----------------------------------------------------------------------------- hairline cracks


def _padded_guide(grey: np.ndarray, config: SynthConfig) -> tuple[np.ndarray, int]:
    """Standardised, slightly smoothed grey levels (what the crack walk calls dark or light), padded
    by the returned margin on every side."""
    smooth = cv2.GaussianBlur(grey, (0, 0), 1.0)
    guide = (smooth - smooth.mean()) / (smooth.std() + 4.0)
    margin = int(math.ceil(2.0 * config.step_px)) + 2
    return cv2.copyMakeBorder(guide, margin, margin, margin, margin, cv2.BORDER_REPLICATE), margin


def _walk(
    guide: np.ndarray,
    margin: int,
    start: tuple[float, float],
    heading: float,
    length_px: float,
    rng: np.random.Generator,
    config: SynthConfig,
) -> np.ndarray:
    """Vertices (N x 2, x/y) of a tortuous walk that prefers darker pixels; stops at the image border.

    ``guide`` is padded by ``margin`` >= 2 * step_px + 2 on every side (:func:`_padded_guide`), so a
    look-ahead from any point inside the image needs no bounds check.

    At each step 5 turns within +-``max_turn_deg`` are scored: darkness of the guide two steps ahead,
    minus a pull back to a slowly drifting heading, plus Gumbel noise; the best one is taken. Plain
    Python floats: with 5 candidates a numpy call per step costs more than the arithmetic.
    """
    look, step = 2.0 * config.step_px, config.step_px
    h, w = guide.shape[0] - 2 * margin, guide.shape[1] - 2 * margin
    steps = max(2, int(length_px / config.step_px))
    turns = np.radians(np.linspace(-config.max_turn_deg, config.max_turn_deg, 5))
    candidates = list(zip(turns.tolist(), np.cos(turns).tolist(), np.sin(turns).tolist(), strict=True))
    gumbel = (-np.log(-np.log(rng.uniform(1e-9, 1.0, size=(steps, len(turns))))) * config.randomness).tolist()
    drift = (heading + rng.normal(0.0, 0.06, size=steps).cumsum()).tolist()  # the heading wanders slowly
    jitter = rng.normal(0.0, 0.25, size=(steps, 2)).tolist()  # sub-pixel roughness of the crack edge
    follow, pull = config.follow_texture, config.straightness
    x, y = start
    direction = heading
    points = [(x, y)]
    for i in range(steps):
        cos_d, sin_d = math.cos(direction), math.sin(direction)
        best, best_k = -math.inf, 0
        noise = gumbel[i]
        for k, (turn, cos_t, sin_t) in enumerate(candidates):
            cos_a, sin_a = cos_d * cos_t - sin_d * sin_t, sin_d * cos_t + cos_d * sin_t
            px, py = int(x + look * cos_a + margin), int(y + look * sin_a + margin)
            off = (direction + turn - drift[i] + math.pi) % (2.0 * math.pi) - math.pi
            score = noise[k] - follow * float(guide[py, px]) - pull * off * off
            if score > best:
                best, best_k = score, k
        turn, cos_t, sin_t = candidates[best_k]
        direction += turn
        x += step * (cos_d * cos_t - sin_d * sin_t) + jitter[i][0]
        y += step * (sin_d * cos_t + cos_d * sin_t) + jitter[i][1]
        points.append((x, y))
        if not (0 <= x < w and 0 <= y < h):
            break
    return np.asarray(points, np.float64)


def _width_profile(count: int, rng: np.random.Generator, width_px: tuple[float, float], scale: float = 1.0) -> np.ndarray:
    """Widths along a crack: a base width modulated slowly, tapering at both ends, within ``width_px``."""
    base = _uniform(rng, width_px) * scale
    knots = max(2, count // 10 + 2)
    modulation = np.interp(np.linspace(0, knots - 1, count), np.arange(knots), rng.uniform(0.6, 1.3, size=knots))
    t = np.linspace(0.0, 1.0, count)
    taper = np.clip(np.minimum(t, 1.0 - t) / 0.12, 0.5, 1.0)
    return np.clip(base * modulation * taper, width_px[0], width_px[1])


def _fade_profile(count: int, rng: np.random.Generator, config: SynthConfig) -> np.ndarray:
    """Darkening multipliers along a crack of ``count`` points: 1, except (with ``fade_prob``) 1-3 stretches
    where it falls smoothly to 1 - ``fade_depth`` and back (a hairline that comes and goes)."""
    profile = np.ones(count)
    if count < 4 or rng.random() >= config.fade_prob:
        return profile
    t = np.arange(count, dtype=np.float64)
    for _ in range(int(rng.integers(1, 4))):
        half = max(1.0, _uniform(rng, config.fade_length_frac) * count / 2)
        centre = rng.uniform(0, count)
        bump = np.clip(1.0 - np.abs(t - centre) / half, 0.0, 1.0)  # a triangle, smoothed below
        profile = np.minimum(profile, 1.0 - _uniform(rng, config.fade_depth) * (3 * bump**2 - 2 * bump**3))
    return profile


def _draw_polyline(canvas: np.ndarray, points: np.ndarray, widths: np.ndarray, value: float | np.ndarray) -> None:
    """A polyline of varying width (and ``value``, one per point or one for all) on a supersampled canvas:
    one ``cv2.polylines`` per run of segments with the same quantised thickness and value; OpenCV's round
    segment ends join the runs smoothly."""
    fixed = np.round(points * _SUB).astype(np.int32)
    segments = len(fixed) - 1
    thickness = np.maximum(1, np.round(widths[:segments] * SUPERSAMPLE)).astype(int)
    values = np.broadcast_to(np.round(np.asarray(value, np.float64)), (len(points),))[:segments].astype(int)
    cuts = np.flatnonzero((np.diff(thickness) != 0) | (np.diff(values) != 0)) + 1
    for start, stop in zip(np.r_[0, cuts].tolist(), np.r_[cuts, segments].tolist(), strict=True):
        cv2.polylines(canvas, [fixed[start : stop + 1]], False, int(values[start]), int(thickness[start]),
                      cv2.LINE_8, shift=4)


def render_hairline_cracks(
    background: np.ndarray, rng: np.random.Generator, config: SynthConfig
) -> tuple[np.ndarray, np.ndarray]:
    """1-3 branching hairline cracks drawn into ``background``; returns ``(image, mask)``.

    Each crack is a walk whose steps prefer darker neighbouring pixels (cracks follow the surface's
    grain) around a slowly drifting heading, with 1-2 branches with probability ``branch_prob``. It is
    drawn at 4x with a width varying along it within ``width_px`` and area-averaged down (sub-pixel,
    anti-aliased); the image is darkened multiplicatively (so the texture shows through) by the
    crack's ``darkening`` times its coverage, softened by ``blur_sigma``. On a coarse surface the
    darkening is raised to ``min_contrast_to_texture`` x the fine-texture std, so that no labelled
    crack is invisible; with ``fade_prob`` a crack fades in stretches (down to that floor, still
    labelled: a hairline that comes and goes is one crack); with ``wide_prob`` a crack is drawn wide
    (``wide_width_px``, ``wide_darkening``: an open crack, its inside labelled); a surface that would need more than ``darkening[1]`` gets no crack (the
    background is returned with an empty mask). The mask is every pixel with
    coverage >= 0.5 plus the crack's 8-connected centre line, so a 1-px crack is a connected 1-px mask.
    """
    h, w = background.shape[:2]
    grey = cv2.cvtColor(background, cv2.COLOR_RGB2GRAY).astype(np.float32)
    guide, margin = _padded_guide(grey, config)
    texture_std = float((grey - cv2.GaussianBlur(grey, (0, 0), 2.0)).std())
    darkening_floor = config.min_contrast_to_texture * texture_std / max(float(grey.mean()), 1.0)
    if darkening_floor > config.darkening[1]:
        return background.copy(), np.zeros((h, w), np.uint8)
    big = (h * SUPERSAMPLE, w * SUPERSAMPLE)
    coverage_canvas = np.zeros(big, np.uint8)
    darkness_canvas = np.zeros(big, np.uint8)  # darkening x 255: 1/4 of a float canvas to clear and average
    centre = np.zeros((h, w), np.uint8)
    side = max(h, w)
    for _ in range(_integer(rng, config.crack_count)):
        start = (rng.uniform(0, w), rng.uniform(0, h))
        heading = rng.uniform(0, 2 * math.pi)
        length = _uniform(rng, config.length_frac) * side
        wide = config.wide_prob > 0 and rng.random() < config.wide_prob  # no draw at 0: same streams as before
        width_px, darkening_range = (config.wide_width_px, config.wide_darkening) if wide else (config.width_px, config.darkening)
        darkening = min(max(_uniform(rng, darkening_range), darkening_floor), darkening_range[1])
        # grow in both directions from the start, so the crack is not anchored at one end
        ahead = _walk(guide, margin, start, heading, length / 2, rng, config)
        behind = _walk(guide, margin, start, heading + math.pi, length / 2, rng, config)
        trunk = np.concatenate([behind[::-1], ahead[1:]])
        paths = [(trunk, _width_profile(len(trunk), rng, width_px))]
        if rng.random() < config.branch_prob:
            for _ in range(int(rng.integers(1, 3))):
                at = int(rng.integers(len(trunk) // 5, max(len(trunk) // 5 + 1, 4 * len(trunk) // 5)))
                at = min(at, len(trunk) - 2)
                local = math.atan2(*(trunk[at + 1] - trunk[at])[::-1])
                branch_heading = local + rng.choice([-1.0, 1.0]) * math.radians(rng.uniform(20, 70))
                branch_length = _uniform(rng, config.branch_length_frac) * length
                branch = _walk(guide, margin, tuple(trunk[at]), branch_heading, branch_length, rng, config)
                paths.append((branch, _width_profile(len(branch), rng, width_px, scale=0.7)))
        for points, widths in paths:
            _draw_polyline(coverage_canvas, points, widths, 255)
            fade = _fade_profile(len(points), rng, config)
            _draw_polyline(darkness_canvas, points, widths, np.maximum(darkening * fade, darkening_floor) * 255)
            cv2.polylines(centre, [np.round(points * 16).astype(np.int32)], False, 1, 1, cv2.LINE_8, shift=4)
    coverage = cv2.resize(coverage_canvas, (w, h), interpolation=cv2.INTER_AREA)
    darkness = cv2.resize(darkness_canvas, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    sigma = _uniform(rng, config.blur_sigma)
    if sigma > 0:
        darkness = cv2.GaussianBlur(darkness, (0, 0), sigma)
    factor = 1.0 - darkness
    image = cv2.multiply(background, cv2.merge([factor, factor, factor]), dtype=cv2.CV_8U)
    mask = ((coverage >= 128) | (centre > 0)).astype(np.uint8)
    return image, mask


# ----------------------------------------------------------------------------- distractors


@lru_cache(maxsize=8)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    return x, y


def _full_line(canvas: np.ndarray, through: tuple[float, float], angle: float, width_px: float, value: int) -> None:
    """A straight line across the whole (supersampled) canvas through a point given in 1x pixels."""
    reach = 2.0 * max(canvas.shape)
    cx, cy = through[0] * SUPERSAMPLE, through[1] * SUPERSAMPLE
    dx, dy = math.cos(angle) * reach, math.sin(angle) * reach
    p0 = (int(round((cx - dx) * 16)), int(round((cy - dy) * 16)))
    p1 = (int(round((cx + dx) * 16)), int(round((cy + dy) * 16)))
    cv2.line(canvas, p0, p1, value, max(1, int(round(width_px * SUPERSAMPLE))), cv2.LINE_8, shift=4)


def _draw_lines(canvas: np.ndarray, h: int, w: int, rng: np.random.Generator, config: SynthConfig) -> None:
    for _ in range(_integer(rng, config.line_count)):
        _full_line(canvas, (rng.uniform(0, w), rng.uniform(0, h)), rng.uniform(0, math.pi),
                   _uniform(rng, config.line_width_px), round(255 * _uniform(rng, config.line_darkening)))


def _draw_grid(canvas: np.ndarray, h: int, w: int, rng: np.random.Generator, config: SynthConfig) -> None:
    """Regularly spaced parallel joints in one or two (near-perpendicular) orientations."""
    angle = rng.uniform(0, math.pi)
    orientations = [angle] if rng.random() < 0.5 else [angle, angle + math.pi / 2 + rng.normal(0, 0.02)]
    width, darkening = _uniform(rng, config.grid_width_px), round(255 * _uniform(rng, config.grid_darkening))
    reach = math.hypot(h, w)
    for theta in orientations:
        spacing = _uniform(rng, config.grid_spacing_px)
        normal = (-math.sin(theta), math.cos(theta))
        offset = rng.uniform(0, spacing)
        for k in range(-int(reach / spacing) - 1, int(reach / spacing) + 2):
            d = offset + k * spacing
            through = (w / 2 + d * normal[0], h / 2 + d * normal[1])
            _full_line(canvas, through, theta, width, darkening)


def _edge_factor(h: int, w: int, rng: np.random.Generator, config: SynthConfig) -> np.ndarray:
    """A half-plane brightness step (a kerb, a shadow's edge): factor 1 on one side, darker on the other."""
    x, y = _grid(h, w)
    angle = rng.uniform(0, 2 * math.pi)
    cx, cy = rng.uniform(0.2 * w, 0.8 * w), rng.uniform(0.2 * h, 0.8 * h)
    signed = (x - cx) * math.cos(angle) + (y - cy) * math.sin(angle)
    side = 1.0 / (1.0 + np.exp(np.clip(-signed / _uniform(rng, config.edge_softness_px), -30, 30)))
    low = _uniform(rng, config.edge_factor)
    return (1.0 - (1.0 - low) * side).astype(np.float32)


def _streak_factor(h: int, w: int, rng: np.random.Generator, config: SynthConfig) -> np.ndarray:
    """Formwork board texture: faint parallel streaks of random strength, i.e. a 1-D profile across them."""
    x, y = _grid(h, w)
    angle = rng.uniform(0, math.pi)
    u = x * math.cos(angle) + y * math.sin(angle)
    u -= u.min()
    length = int(u.max()) + 2
    profile = cv2.GaussianBlur(rng.normal(0.0, 1.0, size=(1, length)).astype(np.float32), (0, 0), rng.uniform(0.7, 3.0))
    profile = profile[0] / (profile.std() + 1e-6) * _uniform(rng, config.streak_contrast)
    return (1.0 + profile[u.astype(np.int32)]).astype(np.float32)


def _paint_alpha(h: int, w: int, rng: np.random.Generator, config: SynthConfig) -> np.ndarray:
    """Opacity of one or two thick painted strokes or arcs (spray-paint marks, lane paint)."""
    alpha = np.zeros((h, w), np.float32)
    opacity = _uniform(rng, config.paint_opacity)
    for _ in range(int(rng.integers(1, 3))):
        thickness = max(2, int(round(_uniform(rng, config.paint_width_px))))
        if rng.random() < 0.5:
            p0 = (int(rng.uniform(0, w) * 16), int(rng.uniform(0, h) * 16))
            p1 = (int(rng.uniform(0, w) * 16), int(rng.uniform(0, h) * 16))
            cv2.line(alpha, p0, p1, opacity, thickness, cv2.LINE_AA, shift=4)
        else:
            centre = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
            axes = (int(rng.uniform(0.1, 0.5) * w) + 1, int(rng.uniform(0.1, 0.5) * h) + 1)
            start = rng.uniform(0, 360)
            cv2.ellipse(alpha, centre, axes, rng.uniform(0, 180), start, start + rng.uniform(60, 300),
                        opacity, thickness, cv2.LINE_AA)
    return cv2.GaussianBlur(alpha, (0, 0), 0.6)


_PAINT_COLOURS = np.array([[245, 245, 240], [240, 205, 40], [230, 80, 50], [250, 250, 250]], np.float32)


def render_distractors(image: np.ndarray, rng: np.random.Generator, config: SynthConfig) -> np.ndarray:
    """Straight lines, joint grids, sharp edges, painted marks and formwork streaks (each with its
    ``p_*``; at least one) drawn into ``image``; the crack mask of the result stays empty."""
    h, w = image.shape[:2]
    kinds = rng.random(5) < np.array([config.p_line, config.p_grid, config.p_edge, config.p_paint, config.p_streaks])
    if not kinds.any():
        kinds[int(rng.integers(0, 5))] = True
    factor = np.ones((h, w), np.float32)
    if kinds[0] or kinds[1]:
        dark = np.zeros((h * SUPERSAMPLE, w * SUPERSAMPLE), np.uint8)  # darkening x 255
        if kinds[1]:
            _draw_grid(dark, h, w, rng, config)
        if kinds[0]:
            _draw_lines(dark, h, w, rng, config)
        dark = cv2.resize(dark, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
        factor *= 1.0 - cv2.GaussianBlur(dark, (0, 0), rng.uniform(0.3, 0.7))
    if kinds[2]:
        factor *= _edge_factor(h, w, rng, config)
    if kinds[4]:
        factor *= _streak_factor(h, w, rng, config)
    out = image.astype(np.float32) * factor[..., None]
    if kinds[3]:
        alpha = _paint_alpha(h, w, rng, config)[..., None]
        colour = _PAINT_COLOURS[int(rng.integers(0, len(_PAINT_COLOURS)))]
        # paint shows the surface's relief: its colour is shaded by the local brightness
        shade = 0.8 + 0.2 * image.mean(axis=2, keepdims=True, dtype=np.float32) / max(float(image.mean()), 1.0)
        out = out * (1.0 - alpha) + colour * np.minimum(shade, 1.1) * alpha
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- torch dataset


def reflect_to_size(image: np.ndarray, size: int) -> np.ndarray:
    """An image with a side shorter than ``size`` mirrored (reflect, edge pixel not repeated) up to it."""
    h, w = image.shape[:2]
    pad_h, pad_w = max(0, size - h), max(0, size - w)
    if not (pad_h or pad_w):
        return image
    widths = [(pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2)] + [(0, 0)] * (image.ndim - 2)
    return np.pad(image, widths, mode="reflect" if min(h, w) > 1 else "edge")


def drawn_structures(before: np.ndarray, after: np.ndarray, min_change: float = DRAWN_MIN_CHANGE) -> np.ndarray:
    """uint8 0/1: where drawing distractors or structures into ``before`` made ``after`` change sharply.

    The change is the brightness ratio (``ln((after + 16) / (before + 16))``, the largest over the colour
    channels, x 255). A pixel counts where the change stands out of a 15 x 15 neighbourhood (white top-hat:
    a line or mark narrower than 15 px) or steps across 3 x 3 pixels (morphological gradient: a line's
    shoulders, the edge of a shadow or a chamfer), while a shadow's or a panel's inside (one ratio over a
    textured area) and faint streaks do not: the pixels a model is tempted to mark as a crack."""
    ratio = np.log((after.astype(np.float32) + 16.0) / (before.astype(np.float32) + 16.0))
    change = np.abs(ratio).max(axis=2) * 255.0
    line = cv2.morphologyEx(change, cv2.MORPH_TOPHAT, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (15, 15)))
    step = cv2.morphologyEx(change, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
    return ((line >= min_change) | (step >= min_change)).astype(np.uint8)


def synthetic_sample(background: np.ndarray, rng: np.random.Generator, size: int, config: SynthConfig,
                     augment: AugmentConfig, *, mark_drawn: bool = False
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """One generated ``size`` x ``size`` uint8 ``(image, mask, drawn)`` on a crack-free ``background``.

    A random crop (mirrored up to ``size`` when smaller), the geometric warp ``augment`` (reflect
    border: the surface is drawn on after it), then with ``p_distractor`` distractors and with
    ``p_crack`` hairline cracks (cracks last, so a crack over a joint keeps its label), and with
    ``p_structures`` one of ``structure_families`` (train.structures: tiles, formwork, chamfers,
    road paint by default; the held-out families never unless named); with none of them it is a
    plain crack-free negative. ``drawn`` (0/1, only with ``mark_drawn``, else None) marks the distractor and
    structure pixels (:func:`drawn_structures`) away from every crack pixel (more than 2 px): background a loss
    may weigh more (``--joint-weight``). The draw is the same either way.
    """
    background = reflect_to_size(background, size)
    empty = np.zeros(background.shape[:2], np.uint8)
    image, _, _ = random_crop(background, empty, size, rng)
    image, _, _ = random_affine(np.ascontiguousarray(image), empty[:size, :size], rng, augment)
    surface = image
    mask = np.zeros((size, size), np.uint8)
    draw_distractors, draw_cracks = rng.random(2) < (config.p_distractor, config.p_crack)
    if draw_distractors:
        image = render_distractors(image, rng, config)
    if config.p_structures and config.structure_families and rng.random() < config.p_structures:
        image = render_structures(image, rng, config.structure_families)
    drawn = None
    if mark_drawn:
        drawn = drawn_structures(surface, image) if image is not surface else np.zeros((size, size), np.uint8)
    if draw_cracks:
        image, mask = render_hairline_cracks(image, rng, config)
        if drawn is not None:
            drawn &= 1 - cv2.dilate(mask, np.ones((5, 5), np.uint8))
    return image, mask, drawn


class SyntheticCrops(Dataset):
    """Synthetic training crops: ``(image 3xSxS, mask 1xSxS, valid 1xSxS)`` float32, as ``TrainCrops``.

    Sample ``index`` uses background ``index % len(backgrounds)``: a random ``size`` crop of it
    (mirrored up to ``size`` when smaller), the geometric augmentation ``augment``, then with
    ``p_distractor`` distractors and with ``p_crack`` hairline cracks (cracks last, so a crack over a
    joint keeps its label); with neither it is a plain crack-free negative. ``photometric`` (off by
    default: the trainer may apply its own) is applied last. The geometric warp always uses the
    reflect border (the surface is drawn on after it, so no pixel may be blank). Randomness comes from
    ``numpy.random.default_rng([seed, epoch, index, 7])``: the same with any number of workers, and
    a resumed run sees the same samples. ``valid`` is all ones (nothing is padded).
    """

    def __init__(
        self,
        backgrounds: list[np.ndarray],
        size: int,
        config: SynthConfig,
        seed: int = 0,
        length: int | None = None,
        *,
        augment: AugmentConfig | None = None,
        photometric: PhotometricConfig | None = None,
    ) -> None:
        if not backgrounds:
            raise ValueError("SyntheticCrops needs at least one crack-free background image")
        for i, image in enumerate(backgrounds):
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"background {i} must be RGB uint8 H x W x 3, got {image.dtype} {image.shape}")
        if size < 16:
            raise ValueError(f"SyntheticCrops size must be >= 16, got {size}")
        self.backgrounds = backgrounds
        self.size = size
        self.config = config
        self.seed = seed
        self.length = len(backgrounds) if length is None else int(length)
        # the crack is drawn after the warp, so corners a constant border would blacken must be mirrored
        self.augment = replace(augment or AugmentConfig(), border="reflect")
        self.photometric = photometric
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def sample(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The uint8 ``(image S x S x 3, mask S x S)`` of sample ``index`` (for previews and tests)."""
        rng = np.random.default_rng([self.seed, self.epoch, index, 7])
        image, mask, _ = synthetic_sample(self.backgrounds[index % len(self.backgrounds)], rng, self.size,
                                          self.config, self.augment)
        if self.photometric is not None:
            image = random_photometric(image, rng, self.photometric)
        return image, mask

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        image, mask = self.sample(index)
        return (
            torch.from_numpy(to_chw_float(image)),
            torch.from_numpy(mask[None].astype(np.float32)),
            torch.from_numpy(np.ones((1, self.size, self.size), np.float32)),
        )


# ----------------------------------------------------------------------------- a source for train.data.TrainCrops


class SynthSource:
    """Generated crops as one more source of :class:`train.data.TrainCrops` (``--synth-fraction``).

    The surfaces are crack-free versions of training images (:func:`crack_free_background`), up to
    ``per_source`` from each data set, so generated hairlines and distractors sit on the textures the
    model trains on. Sample ``item`` draws on surface ``item``; what is drawn follows
    :func:`synthetic_sample` with the caller's generator, so it is deterministic per crop.
    """

    def __init__(self, backgrounds: list[np.ndarray], config: SynthConfig | None = None,
                 augment: AugmentConfig | None = None, joint_weight: float = 1.0) -> None:
        if not backgrounds:
            raise ValueError("no crack-free surface could be made from the training images (every crack too wide "
                             "or too large a share of its image); train without --synth-fraction")
        if not (math.isfinite(joint_weight) and joint_weight >= 1.0):
            raise ValueError(f"joint weight must be >= 1, got {joint_weight!r}")
        self.backgrounds = backgrounds
        self.config = config or SynthConfig()
        self.augment = replace(augment or AugmentConfig(), border="reflect")
        self.joint_weight = float(joint_weight)

    @classmethod
    def from_training_images(cls, sets: list, seed: int = 0, per_source: int = 60,
                             config: SynthConfig | None = None, augment: AugmentConfig | None = None,
                             joint_weight: float = 1.0) -> SynthSource:
        """Up to ``per_source`` crack-free surfaces from each of ``sets`` (``train.data.CrackImages``), seeded."""
        rng = np.random.default_rng([seed, 0x5EED])
        backgrounds = []
        for data in sets:
            taken = 0
            for i in rng.permutation(len(data)):
                surface = crack_free_background(data.images[i], data.masks[i])
                if surface is not None:
                    backgrounds.append(surface)
                    taken += 1
                if taken >= per_source:
                    break
        return cls(backgrounds, config, augment, joint_weight)

    def __len__(self) -> int:
        return len(self.backgrounds)

    def sample(self, item: int, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A ``size`` x ``size`` uint8 ``(image, mask)`` on surface ``item`` with its per-pixel loss weight
        (float32): ``joint_weight`` on the drawn distractor and structure pixels, 1 elsewhere."""
        weighted = self.joint_weight != 1.0
        image, mask, drawn = synthetic_sample(self.backgrounds[item % len(self.backgrounds)], rng, size, self.config,
                                              self.augment, mark_drawn=weighted)
        if not weighted:  # the default: nothing to find, every pixel weighs 1
            return image, mask, np.ones(mask.shape, np.float32)
        return image, mask, 1.0 + np.float32(self.joint_weight - 1.0) * drawn.astype(np.float32)
