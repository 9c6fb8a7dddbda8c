"""Training augmentation as the paper: random rotation, shift, shear and flip, then a random crop.

All four geometric changes are composed into one affine matrix and applied with one
``cv2.warpAffine`` per array: bilinear for the image, nearest-neighbour for the mask (the paper's
"nearest interpolation" for labels, so a mask stays exactly {0, 1}). Both arrays go through the same
matrix, so image and mask stay aligned pixel for pixel.

Border: ``reflect`` (default) mirrors the image *and* its mask into the corners a rotation uncovers,
so every pixel of the result is labelled and counts in the loss; ``constant`` fills them with black and
marks them invalid (``valid = 0``), so they are left out of the loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

BORDERS = ("reflect", "constant")


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random geometric augmentation (each drawn uniformly in [-range, +range])."""

    rotation_deg: float = 90.0  # with the flips, 90 covers every crack orientation
    shift_frac: float = 0.1  # fraction of the image side
    shear_deg: float = 10.0
    flip: bool = True  # horizontal and vertical flips, each with probability 1/2
    border: str = "reflect"

    def __post_init__(self) -> None:
        if self.border not in BORDERS:
            raise ValueError(f"augmentation border must be one of {BORDERS}, got {self.border!r}")
        for name in ("rotation_deg", "shift_frac", "shear_deg"):
            if getattr(self, name) < 0:
                raise ValueError(f"augmentation {name} must be >= 0, got {getattr(self, name)}")


def affine_matrix(
    height: int,
    width: int,
    *,
    rotation_deg: float = 0.0,
    shift_xy: tuple[float, float] = (0.0, 0.0),
    shear_deg: float = 0.0,
    flip_x: bool = False,
    flip_y: bool = False,
) -> np.ndarray:
    """2 x 3 matrix: flip, shear (x along y), rotate about the image centre, then shift (pixels)."""
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    to_origin = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]], float)
    flip = np.diag([-1.0 if flip_x else 1.0, -1.0 if flip_y else 1.0, 1.0])
    shear = np.array([[1, math.tan(math.radians(shear_deg)), 0], [0, 1, 0], [0, 0, 1]], float)
    a = math.radians(rotation_deg)
    rotate = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]], float)
    back = np.array([[1, 0, cx + shift_xy[0]], [0, 1, cy + shift_xy[1]], [0, 0, 1]], float)
    return (back @ rotate @ shear @ flip @ to_origin)[:2]


def warp_pair(
    image: np.ndarray, mask: np.ndarray, matrix: np.ndarray, border: str = "reflect"
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Apply one affine matrix to an image (bilinear) and its mask (nearest); same output size.

    Returns ``(image, mask, valid)``; ``valid`` is None with the reflect border (every pixel is
    labelled), else a uint8 map that is 0 where the warp reached outside the source.
    """
    h, w = mask.shape[:2]
    mode = cv2.BORDER_REFLECT_101 if border == "reflect" else cv2.BORDER_CONSTANT
    warped = cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=mode, borderValue=0)
    warped_mask = cv2.warpAffine(mask, matrix, (w, h), flags=cv2.INTER_NEAREST, borderMode=mode, borderValue=0)
    valid = None
    if border == "constant":
        ones = np.ones((h, w), np.uint8)
        valid = cv2.warpAffine(ones, matrix, (w, h), flags=cv2.INTER_NEAREST, borderMode=mode, borderValue=0)
    return warped, warped_mask, valid


def random_affine(
    image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, config: AugmentConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Random rotation, shift, shear and flips (ranges in ``config``) applied to an aligned pair."""
    h, w = mask.shape[:2]
    u = rng.uniform(-1.0, 1.0, size=4)
    flips = rng.random(2) < 0.5 if config.flip else (False, False)
    matrix = affine_matrix(
        h,
        w,
        rotation_deg=u[0] * config.rotation_deg,
        shift_xy=(u[1] * config.shift_frac * w, u[2] * config.shift_frac * h),
        shear_deg=u[3] * config.shear_deg,
        flip_x=bool(flips[0]),
        flip_y=bool(flips[1]),
    )
    return warp_pair(image, mask, matrix, config.border)


def random_crop(
    image: np.ndarray,
    mask: np.ndarray,
    size: int,
    rng: np.random.Generator,
    valid: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A random ``size`` x ``size`` window of an aligned pair; returns ``(image, mask, valid)``.

    A side shorter than ``size`` is padded with zeros at the bottom/right, marked ``valid = 0``.
    """
    h, w = mask.shape[:2]
    if valid is None:
        valid = np.ones((h, w), np.uint8)
    pad_h, pad_w = max(0, size - h), max(0, size - w)
    if pad_h or pad_w:
        image = np.pad(image, [(0, pad_h), (0, pad_w)] + [(0, 0)] * (image.ndim - 2))
        mask = np.pad(mask, [(0, pad_h), (0, pad_w)])
        valid = np.pad(valid, [(0, pad_h), (0, pad_w)])
        h, w = mask.shape
    y0 = int(rng.integers(0, h - size + 1))
    x0 = int(rng.integers(0, w - size + 1))
    window = (slice(y0, y0 + size), slice(x0, x0 + size))
    return image[window], mask[window], valid[window]
