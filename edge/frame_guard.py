"""The frame size guard: frames above ``source.max_frame_pixels`` are downscaled or rejected (pure).

A 10000×10000 frame would otherwise become ~1,600 tiles of float32 input (GBs of memory and minutes of
inference on a CPU) while the daemon cannot stop; the guard bounds the work per frame.
"""

from __future__ import annotations

import math

import cv2
import numpy as np


def fit_frame(image: np.ndarray, max_pixels: int, oversize: str) -> np.ndarray | None:
    """``image`` when it has at most ``max_pixels`` pixels (width × height); else, by ``oversize``:
    "downscale" returns it shrunk (aspect ratio kept, INTER_AREA) to at most ``max_pixels``,
    "reject" returns None.
    """
    height, width = image.shape[:2]
    if height * width <= max_pixels:
        return image
    if oversize == "reject":
        return None
    if oversize != "downscale":
        raise ValueError(f"oversize must be 'downscale' or 'reject', got {oversize!r}")
    scale = math.sqrt(max_pixels / (height * width))
    new_w, new_h = max(1, int(width * scale)), max(1, int(height * scale))
    while new_w * new_h > max_pixels:  # int rounding can leave it a few pixels over
        new_w -= 1
    return cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
