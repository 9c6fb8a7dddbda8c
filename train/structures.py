"""Straight structures of real surfaces that are not cracks: tiles, bricks, formwork, saw cuts, chamfers,
cables and their shadows, railing shadows, road paint, repair patches, periodic lines, shadows of straight
objects (pure functions, RGB uint8 in and out, the crack mask stays 0).

Each *family* is one kind of structure an inspector meets, drawn into a crack-free surface with its
own geometry and colours, all drawn from a passed ``numpy.random.Generator`` (same state -> same
image). Families are split in two, and the split is the point: a distractor figure measured on the
families a model trains on says little about the joints of a building it has never seen.

* :data:`TRAINING_FAMILIES` may be drawn into training samples (``train.synth.SynthConfig.structure_families``,
  ``train.run --synth-structure-families``; :data:`DEFAULT_TRAINING_FAMILIES` unless told otherwise);
* :data:`HELD_OUT_FAMILIES` are never drawn in training by default; benchmarks measure on them (and on
  the training families with other seeds) and say which is which.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import cv2
import numpy as np

Family = Callable[[np.ndarray, np.random.Generator], np.ndarray]  # float32 H x W x 3 in 0..255 -> same


def _rotated_coords(h: int, w: int, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (u along, v across) in a frame rotated by ``angle`` radians about the centre."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    x -= w / 2.0
    y -= h / 2.0
    c, s = math.cos(angle), math.sin(angle)
    return x * c + y * s, -x * s + y * c


def _band(distance: np.ndarray, half_width: float, softness: float) -> np.ndarray:
    """1 inside ``|distance| <= half_width``, falling to 0 over ``softness`` pixels (anti-aliased edges)."""
    return np.clip((half_width + 0.5 * softness - np.abs(distance)) / max(softness, 1e-3), 0.0, 1.0)


def _periodic_distance(u: np.ndarray, period: float, offset: float) -> np.ndarray:
    """Distance of each coordinate to the nearest line of a family spaced ``period`` apart."""
    return np.abs((u - offset + period / 2.0) % period - period / 2.0)


def _texture(h: int, w: int, rng: np.random.Generator, sigma: float, amount: float) -> np.ndarray:
    """Smooth multiplicative noise around 1 (the grain of mortar, grout or paint)."""
    noise = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), sigma)
    return 1.0 + amount * noise / (noise.std() + 1e-6)


def _blend(image: np.ndarray, alpha: np.ndarray, colour: np.ndarray) -> np.ndarray:
    return image * (1.0 - alpha[..., None]) + colour * alpha[..., None]


def _grout_colour(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Grout or mortar: lighter or darker than the surface, grey or tinted."""
    base = float(image.mean())
    level = base * rng.uniform(1.15, 1.45) if rng.random() < 0.5 else base * rng.uniform(0.35, 0.7)
    tint = np.array([1.0, rng.uniform(0.93, 1.02), rng.uniform(0.82, 1.0)], np.float32)
    return np.clip(level * tint, 0, 255).astype(np.float32)


def tile_grid(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Floor or wall tiles: a regular grid of grout joints (2-8 px, coloured), tiles of slightly
    different brightness, a bevel line along each tile edge."""
    h, w = image.shape[:2]
    angle = rng.choice([0.0, math.pi / 2]) + rng.normal(0, math.radians(4))
    u, v = _rotated_coords(h, w, angle)
    pitch_u = rng.uniform(40, 160)
    pitch_v = pitch_u * rng.choice([1.0, 1.0, 0.5, 2.0])
    off_u, off_v = rng.uniform(0, pitch_u), rng.uniform(0, pitch_v)
    half = rng.uniform(1.0, 4.0)
    du, dv = _periodic_distance(u, pitch_u, off_u), _periodic_distance(v, pitch_v, off_v)
    tile_id = np.floor((u - off_u) / pitch_u) * 7919 + np.floor((v - off_v) / pitch_v)
    jitter = 1.0 + 0.08 * np.sin(tile_id * 12.9898) * rng.uniform(0.3, 1.0)
    out = image * jitter[..., None].astype(np.float32)
    bevel = np.maximum(_band(du - half - 1.0, 0.5, 0.8), _band(dv - half - 1.0, 0.5, 0.8))
    out *= (1.0 - rng.uniform(0.05, 0.2) * bevel)[..., None]
    grout = np.maximum(_band(du, half, 0.8), _band(dv, half, 0.8))
    colour = _grout_colour(image, rng)[None, None, :] * _texture(h, w, rng, 1.2, 0.06)[..., None]
    return _blend(out, grout * rng.uniform(0.85, 1.0), colour)


def brick_bond(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Running-bond brickwork: mortar courses, head joints offset by half a brick each course, each
    brick its own colour."""
    h, w = image.shape[:2]
    angle = rng.normal(0, math.radians(3)) + (math.pi / 2 if rng.random() < 0.2 else 0.0)
    u, v = _rotated_coords(h, w, angle)
    course = rng.uniform(18, 60)
    brick = course * rng.uniform(2.0, 3.5)
    off_v = rng.uniform(0, course)
    row = np.floor((v - off_v) / course)
    shift = (row % 2) * brick / 2.0
    off_u = rng.uniform(0, brick)
    half = rng.uniform(1.5, 5.0)
    bed = _band(_periodic_distance(v, course, off_v), half, 1.0)
    head = _band(_periodic_distance(u - shift, brick, off_u), half, 1.0)
    brick_id = row * 104729 + np.floor((u - shift - off_u) / brick)
    shade = 1.0 + 0.12 * np.sin(brick_id * 78.233) * rng.uniform(0.4, 1.0)
    tint = np.array([1.0, rng.uniform(0.75, 1.0), rng.uniform(0.6, 1.0)], np.float32)
    out = image * shade[..., None].astype(np.float32) * tint
    colour = _grout_colour(image, rng)[None, None, :] * _texture(h, w, rng, 1.0, 0.08)[..., None]
    return _blend(out, np.maximum(bed, head) * rng.uniform(0.85, 1.0), colour)


def formwork(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Cast concrete: panel joints (thin dark lines with a lighter lip, a small brightness step across)
    and tie holes in a regular pattern."""
    h, w = image.shape[:2]
    angle = rng.choice([0.0, math.pi / 2]) + rng.normal(0, math.radians(1.5))
    u, v = _rotated_coords(h, w, angle)
    factor = np.ones((h, w), np.float32)
    for coord, extent in ((u, w), (v, h)):
        if rng.random() < 0.7:
            at = rng.uniform(-0.4, 0.4) * extent
            d = coord - at
            factor *= np.where(d > 0, rng.uniform(0.94, 1.06), 1.0).astype(np.float32)  # panel step
            factor *= 1.0 - rng.uniform(0.25, 0.55) * _band(d, rng.uniform(0.5, 1.5), 0.8)
            factor *= 1.0 + rng.uniform(0.05, 0.15) * _band(d - rng.uniform(2.0, 3.0), 0.7, 0.8)  # lip
    pitch_u, pitch_v = rng.uniform(60, 150), rng.uniform(60, 150)
    radius = rng.uniform(3.0, 9.0)
    du = _periodic_distance(u, pitch_u, rng.uniform(0, pitch_u))
    dv = _periodic_distance(v, pitch_v, rng.uniform(0, pitch_v))
    r = np.sqrt(du**2 + dv**2)
    hole = _band(r, radius, 1.2)
    rim = _band(r - radius - 1.0, 0.8, 1.0) * (v % pitch_v < pitch_v / 2)
    factor *= 1.0 - rng.uniform(0.4, 0.7) * hole
    factor *= 1.0 + rng.uniform(0.05, 0.2) * rim
    return image * factor[..., None]


def saw_cut(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Saw-cut contraction or expansion joints across the slab: perfectly straight, 3-8 px, dark and
    sharp-edged, sometimes filled with black sealant that shows a thin highlight."""
    h, w = image.shape[:2]
    out = image.copy()
    base = rng.uniform(0, math.pi)
    for k in range(int(rng.integers(1, 3))):
        angle = base + (math.pi / 2 if k else 0.0) + rng.normal(0, 0.01)
        u, v = _rotated_coords(h, w, angle)
        d = v - rng.uniform(-0.35, 0.35) * min(h, w)
        half = rng.uniform(1.5, 4.0)
        cut = _band(d, half, 0.6)
        if rng.random() < 0.4:  # sealant
            colour = np.full(3, rng.uniform(15, 45), np.float32)
            out = _blend(out, cut, colour)
            out = _blend(out, _band(d, 0.5, 0.6) * rng.uniform(0.2, 0.5), np.full(3, 200.0, np.float32))
        else:
            out *= (1.0 - rng.uniform(0.55, 0.85) * cut)[..., None]
            out *= (1.0 + rng.uniform(0.04, 0.12) * _band(np.abs(d) - half - 1.5, 1.0, 1.0))[..., None]  # arris
    return out


def chamfer(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A chamfered edge or arris: a straight band 4-16 px wide lit differently from the faces beside it,
    the two faces of slightly different brightness."""
    h, w = image.shape[:2]
    u, v = _rotated_coords(h, w, rng.uniform(0, math.pi))
    d = v - rng.uniform(-0.3, 0.3) * min(h, w)
    half = rng.uniform(2.0, 8.0)
    face = np.where(d > half, rng.uniform(0.8, 1.1), 1.0).astype(np.float32)
    band = _band(d, half, rng.uniform(0.8, 2.5))
    lit = rng.uniform(0.55, 0.8) if rng.random() < 0.6 else rng.uniform(1.15, 1.35)
    gradient = 1.0 + (lit - 1.0) * (0.7 + 0.3 * np.clip((d + half) / (2 * half), 0, 1))
    return image * (face * (1.0 - band) + gradient * band)[..., None]


def cable_shadow(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A cable or pipe across the view with its soft shadow: a sagging dark line and a blurred band."""
    h, w = image.shape[:2]
    u, v = _rotated_coords(h, w, rng.uniform(0, math.pi))
    span = max(h, w)
    sag = rng.uniform(-0.06, 0.06) * span * (u / (span / 2.0)) ** 2
    d = v - rng.uniform(-0.3, 0.3) * min(h, w) - sag
    shadow_d = d - rng.choice([-1, 1]) * rng.uniform(10, 40)
    shadow = cv2.GaussianBlur(_band(shadow_d, rng.uniform(2.0, 6.0), 1.0).astype(np.float32), (0, 0),
                              rng.uniform(3.0, 6.0))
    out = image * (1.0 - rng.uniform(0.15, 0.35) * shadow)[..., None]
    cable = _band(d, rng.uniform(1.0, 3.0), 0.8)
    return _blend(out, cable, np.full(3, rng.uniform(20, 60), np.float32))


def paint_line(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A road or floor marking: a straight band 10-40 px wide, white or yellow, worn in patches."""
    h, w = image.shape[:2]
    u, v = _rotated_coords(h, w, rng.uniform(0, math.pi))
    d = v - rng.uniform(-0.3, 0.3) * min(h, w)
    half = rng.uniform(5.0, 20.0)
    colour = np.array([240, 240, 235] if rng.random() < 0.6 else [235, 200, 50], np.float32)
    wear = np.clip(_texture(h, w, rng, 4.0, 0.5) - rng.uniform(0.0, 0.3), 0, 1)
    alpha = _band(d, half, 1.0) * wear * rng.uniform(0.7, 0.95)
    return _blend(image, alpha.astype(np.float32), colour)


def railing_shadow(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The shadow of a railing, fence or scaffold cast on the surface: parallel soft-edged dark bars at a
    regular spacing, often with one or two cross rails; the light falls at a slant, so the bars may lean."""
    h, w = image.shape[:2]
    angle = rng.uniform(0, math.pi)
    u, v = _rotated_coords(h, w, angle)
    pitch = rng.uniform(20, 80)
    half = rng.uniform(1.5, min(8.0, pitch / 4))
    softness = rng.uniform(1.5, 6.0)
    lean = math.tan(rng.normal(0, math.radians(6)))  # the bars need not be square to the rails
    bars = _band(_periodic_distance(u + lean * v, pitch, rng.uniform(0, pitch)), half, softness)
    shadow = bars
    for _ in range(int(rng.integers(0, 3))):  # cross rails
        rail = _band(v - rng.uniform(-0.4, 0.4) * min(h, w), rng.uniform(2.0, 6.0), softness)
        shadow = np.maximum(shadow, rail)
    return image * (1.0 - rng.uniform(0.2, 0.5) * shadow)[..., None]


def patch_edge(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A repair patch or an inlaid slab: a rotated rectangle (often running out of the view) whose surface
    is lighter or darker and of a different grain, bounded by straight edges that may carry a thin dark
    sealant rim or a lit step."""
    h, w = image.shape[:2]
    u, v = _rotated_coords(h, w, rng.uniform(0, math.pi))
    cu, cv = rng.uniform(-0.3, 0.3) * w, rng.uniform(-0.3, 0.3) * h
    half_u, half_v = rng.uniform(0.15, 0.9) * w, rng.uniform(0.15, 0.9) * h
    outside = np.maximum(np.abs(u - cu) - half_u, np.abs(v - cv) - half_v)  # < 0 inside, distance to edge outside
    softness = rng.uniform(0.6, 2.0)
    inside = np.clip(0.5 - outside / softness, 0.0, 1.0)
    tone = rng.uniform(0.65, 0.88) if rng.random() < 0.5 else rng.uniform(1.12, 1.35)
    grain = _texture(h, w, rng, rng.uniform(0.8, 2.5), rng.uniform(0.04, 0.12))
    out = image * (1.0 + inside * (tone * grain - 1.0))[..., None]
    kind = rng.random()
    if kind < 0.45:  # sealant rim along the edge
        rim = _band(outside, rng.uniform(0.6, 2.0), 0.8)
        out = _blend(out, rim * rng.uniform(0.5, 0.9), np.full(3, rng.uniform(20, 60), np.float32))
    elif kind < 0.75:  # a raised patch: one side of the step lit, the other in shade
        step = _band(outside - 1.0, 1.0, 1.0)
        out *= (1.0 + rng.choice([-1.0, 1.0]) * rng.uniform(0.1, 0.25) * step)[..., None]
    return out


def line_family(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Man-made periodic lines of any kind: one or two families of parallel lines at any pitch and angle
    (grooves, ribs, planks, fences, slats and their shadows), dark or light, sharp or soft, solid or dashed."""
    h, w = image.shape[:2]
    alpha = np.zeros((h, w), np.float32)
    angle = rng.uniform(0, math.pi)
    for k in range(1 if rng.random() < 0.6 else 2):
        if k:
            angle += rng.choice([math.pi / 2, rng.uniform(math.pi / 6, 5 * math.pi / 6)])
        u, v = _rotated_coords(h, w, angle)
        pitch = rng.uniform(12, 120)
        half = rng.uniform(0.5, min(6.0, pitch / 4))
        lines = _band(_periodic_distance(v, pitch, rng.uniform(0, pitch)), half, rng.uniform(0.6, 4.0))
        if rng.random() < 0.3:  # dashed: gaps along the lines
            dash = rng.uniform(10, 60)
            lines *= (_periodic_distance(u, dash, rng.uniform(0, dash)) < dash * rng.uniform(0.2, 0.45))
        alpha = np.maximum(alpha, lines * rng.uniform(0.15, 0.55))
    sign = -1.0 if rng.random() < 0.7 else 1.0  # mostly darker than the surface
    return image * (1.0 + sign * alpha)[..., None]


def straight_shadow(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Shadows of straight objects: the soft dark band of a pole, beam or pipe (4-40 px, penumbra 2-15 px),
    one to three at irregular spacing, or the straight edge of a building's or vehicle's shadow."""
    h, w = image.shape[:2]
    u, v = _rotated_coords(h, w, rng.uniform(0, math.pi))
    softness = rng.uniform(2.0, 15.0)
    if rng.random() < 0.35:  # a shadow edge: a half-plane behind a soft boundary
        shade = np.clip(0.5 - (v - rng.uniform(-0.35, 0.35) * min(h, w)) / softness, 0.0, 1.0)
    else:
        shade = np.zeros((h, w), np.float32)
        at = rng.uniform(-0.4, 0.4) * min(h, w)
        for _ in range(int(rng.integers(1, 4))):
            shade = np.maximum(shade, _band(v - at, rng.uniform(2.0, 20.0), softness))
            at += rng.choice([-1, 1]) * rng.uniform(25, 120)
    return image * (1.0 - rng.uniform(0.2, 0.6) * shade)[..., None]


FAMILIES: dict[str, Family] = {
    "tile_grid": tile_grid,
    "formwork": formwork,
    "chamfer": chamfer,
    "paint_line": paint_line,
    "brick_bond": brick_bond,
    "saw_cut": saw_cut,
    "cable_shadow": cable_shadow,
    "railing_shadow": railing_shadow,  # added after the others: their seeds in bench_joints stay as they were
    "patch_edge": patch_edge,  # added after railing_shadow, for the same reason
    "line_family": line_family,
    "straight_shadow": straight_shadow,
}
TRAINING_FAMILIES: tuple[str, ...] = ("tile_grid", "formwork", "chamfer", "paint_line", "line_family", "straight_shadow")
# what train.run draws unless --synth-structure-families says otherwise
DEFAULT_TRAINING_FAMILIES: tuple[str, ...] = ("tile_grid", "formwork", "chamfer", "paint_line")
HELD_OUT_FAMILIES: tuple[str, ...] = ("brick_bond", "saw_cut", "cable_shadow", "railing_shadow", "patch_edge")


def check_families(names: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The names, checked against :data:`FAMILIES` (a ValueError names the unknown one)."""
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown structure family {unknown[0]!r}; expected some of {', '.join(FAMILIES)}")
    return tuple(names)


def render_structure(image: np.ndarray, rng: np.random.Generator, family: str) -> np.ndarray:
    """``image`` (uint8 H x W x 3) with one structure of ``family`` drawn in; the crack mask stays empty."""
    check_families([family])
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"render_structure needs an RGB uint8 H x W x 3 image, got {image.dtype} {image.shape}")
    out = FAMILIES[family](image.astype(np.float32), rng)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def render_structures(image: np.ndarray, rng: np.random.Generator, families: tuple[str, ...]) -> np.ndarray:
    """One family drawn at random from ``families`` (a second one in a quarter of the cases)."""
    if not families:
        return image
    count = 2 if rng.random() < 0.25 and len(families) > 1 else 1
    for name in rng.choice(list(families), size=count, replace=False):
        image = render_structure(image, rng, str(name))
    return image


__all__ = ["DEFAULT_TRAINING_FAMILIES", "FAMILIES", "HELD_OUT_FAMILIES", "TRAINING_FAMILIES", "check_families", "render_structure",
           "render_structures"]
