"""Overlay snapshots: the frame with its cracks drawn on it, as JPEG, and a local store with a size cap.

:func:`render_overlay` is pure (arrays in, bytes out). :class:`SnapshotStore` is the only part of the
edge core that writes files: ``<folder>/<alert_id>.jpg``, oldest deleted first when the folder's
snapshots exceed ``max_bytes``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from edge.measure import Crack
from edge.severity import SEVERITY_LEVELS

# BGR colours: the crack tint, and the box colour per severity.
TINT_BGR = (0, 0, 255)
# One colour per entry of severity.SEVERITY_LEVELS, in its order (yellow, orange, red).
SEVERITY_BGR = dict(zip(SEVERITY_LEVELS, ((0, 215, 255), (0, 140, 255), (0, 0, 255)), strict=True))
_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class SnapshotError(ValueError):
    """A snapshot cannot be rendered or stored; the message names the argument or file."""


def _label(crack: Crack) -> str:
    if crack.max_width_mm is not None and crack.length_mm is not None:
        return f"{crack.severity} w{crack.max_width_mm:.1f}mm L{crack.length_mm:.0f}mm"
    return f"{crack.severity} w{crack.max_width_px:.1f}px L{crack.length_px:.0f}px"


def render_overlay(
    frame_bgr: np.ndarray,
    mask: np.ndarray,
    cracks: Sequence[Crack],
    *,
    alpha: float = 0.5,
    jpeg_quality: int = 85,
    max_labels: int = 8,
) -> bytes:
    """JPEG of ``frame_bgr`` (H x W x 3 uint8) with the crack ``mask`` (H x W, nonzero = crack) tinted
    red at opacity ``alpha``, each crack's box (a few px outside the crack) in its severity colour (low yellow, medium orange,
    high red) and labelled with severity, max width and length (mm when known, else px).

    ``mask`` and the crack boxes must be in the frame's pixel coordinates (measure on the same
    frame size you draw on). ``jpeg_quality``: 1-100. Only the first ``max_labels`` cracks (the most
    severe, as :func:`edge.measure.measure_cracks` orders them) get a text label, so a frame of many
    small fragments stays readable; every crack gets its box.
    """
    if not isinstance(frame_bgr, np.ndarray) or frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3:
        raise SnapshotError(f"frame_bgr must be H x W x 3 (BGR), got shape {getattr(frame_bgr, 'shape', None)}")
    if frame_bgr.dtype != np.uint8:
        raise SnapshotError(f"frame_bgr must be uint8, got {frame_bgr.dtype}")
    if mask.shape != frame_bgr.shape[:2]:
        raise SnapshotError(
            f"mask is {mask.shape} but the frame is {frame_bgr.shape[:2]} (H x W): measure on the frame you draw"
        )
    if not 0.0 <= alpha <= 1.0:
        raise SnapshotError(f"alpha must be in [0, 1], got {alpha}")
    if not 1 <= jpeg_quality <= 100:
        raise SnapshotError(f"jpeg_quality must be in 1..100, got {jpeg_quality}")
    canvas = frame_bgr.copy()
    on = mask.astype(bool)
    if on.any():
        tinted = canvas[on].astype(np.float32) * (1.0 - alpha) + np.array(TINT_BGR, np.float32) * alpha
        canvas[on] = np.clip(tinted + 0.5, 0, 255).astype(np.uint8)
    height, width = canvas.shape[:2]
    scale = max(0.4, min(height, width) / 900.0)
    thickness = max(1, round(scale * 2))
    pad = 2 + thickness  # boxes go around the crack, not on its (tinted) border pixels
    for crack in cracks:
        x, y, w, h = crack.bbox
        top_left = (max(0, x - pad), max(0, y - pad))
        bottom_right = (min(width - 1, x + w - 1 + pad), min(height - 1, y + h - 1 + pad))
        cv2.rectangle(canvas, top_left, bottom_right, SEVERITY_BGR.get(crack.severity, (255, 255, 255)), thickness)
    # labels after all boxes, least severe first, so the most severe label ends up on top
    for crack in reversed(list(cracks)[:max_labels]):
        x, y, w, h = crack.bbox
        text = _label(crack)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        ty = y - pad - 4 if y - pad - th - base - 4 >= 0 else min(height - base - 1, y + h + pad + th + 4)
        tx = min(max(0, x), max(0, width - tw))
        colour = SEVERITY_BGR.get(crack.severity, (255, 255, 255))
        cv2.rectangle(canvas, (tx, ty - th - 2), (tx + tw, ty + base), (0, 0, 0), cv2.FILLED)
        cv2.putText(canvas, text, (tx, ty), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thickness, cv2.LINE_AA)
    ok, buf = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
    if not ok:  # pragma: no cover - OpenCV without a JPEG codec
        raise SnapshotError("OpenCV could not encode JPEG (is it built with libjpeg?)")
    return buf.tobytes()


class SnapshotStore:
    """JPEG snapshots in ``folder`` as ``<alert_id>.jpg``, at most ``max_bytes`` bytes in all.

    Saving a snapshot that takes the folder's ``*.jpg`` files over the cap deletes the oldest
    (by modification time, then name) until it fits; the new one is always kept. Files already in
    the folder at start-up count towards the cap. One store per folder (it keeps the total in memory).
    """

    def __init__(self, folder: str | os.PathLike, max_bytes: int | float) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, (int, float)) or not max_bytes >= 1:
            raise SnapshotError(f"snapshot max_bytes must be a positive number of bytes, got {max_bytes!r}")
        self.folder = Path(folder)
        self.max_bytes = int(max_bytes)  # a float from "snapshot_max_mb * 2**20" is fine
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SnapshotError(f"snapshot folder {self.folder} cannot be created: {exc}") from exc
        entries = []
        for path in self.folder.glob("*.jpg"):
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            entries.append((st.st_mtime_ns, path.name, st.st_size))
        entries.sort()
        self._files: list[tuple[str, int]] = [(name, size) for _, name, size in entries]
        self.total_bytes = sum(size for _, size in self._files)

    def path_for(self, alert_id: str) -> Path:
        """Where the snapshot of ``alert_id`` is (or would be) stored."""
        if not _SAFE_ID.match(alert_id):
            raise SnapshotError(f"alert_id {alert_id!r} must be 1-64 letters, digits, '_' or '-' (it names a file)")
        return self.folder / f"{alert_id}.jpg"

    def save(self, alert_id: str, jpeg: bytes) -> Path:
        """Write ``jpeg`` as ``<alert_id>.jpg`` (atomically: temp file + rename), enforce the cap, return the path."""
        path = self.path_for(alert_id)
        if len(jpeg) > self.max_bytes:
            raise SnapshotError(
                f"snapshot {path.name} is {len(jpeg)} bytes, more than the store's cap of {self.max_bytes} bytes: "
                "raise snapshots max_bytes or lower the JPEG quality"
            )
        tmp = path.with_suffix(".jpg.tmp")
        tmp.write_bytes(jpeg)
        os.replace(tmp, path)
        self._files = [(n, s) for n, s in self._files if n != path.name]
        self._files.append((path.name, len(jpeg)))
        self.total_bytes = sum(s for _, s in self._files)
        while self.total_bytes > self.max_bytes and len(self._files) > 1:
            name, size = self._files.pop(0)
            try:
                (self.folder / name).unlink()
            except FileNotFoundError:
                pass  # removed by someone else: it no longer counts either way
            self.total_bytes -= size
        return path

    def __len__(self) -> int:
        return len(self._files)
