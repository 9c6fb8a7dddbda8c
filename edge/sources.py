"""Frame sources: one URI names any camera, stream, video file or image folder.

``open_source(uri)`` returns a :class:`FrameSource`, an iterator of :class:`Frame` (BGR uint8 image,
UTC capture time, index, credential-free source id) with ``close()``:

==============================  ===================================================  ======
URI                             what                                                 kind
==============================  ===================================================  ======
``/data/clip.mp4``, ``file://``  video file (OpenCV/FFmpeg)                           file
``/data/frames/``                image folder, sorted by name, ``loop`` optional      file
``v4l2:///dev/video0``, ``0``    V4L2 device / USB camera index                       live
``rtsp://user:pw@cam/stream``   RTSP (FFmpeg; GStreamer with ``?gst=1``)             live
``csi://0``                     Jetson CSI camera (nvarguscamerasrc, GStreamer)      live
``gst:<pipeline> ! appsink``    a raw GStreamer pipeline ending in appsink           live
==============================  ===================================================  ======

File sources never drop a frame: the consumer sets the pace. Live sources read in their own thread
into a bounded queue that drops the OLDEST frame when the consumer is slower (a crack detector wants
the newest view, not a growing delay), count the drops, and reconnect with exponential back-off
when the stream is lost. An unreadable image or a frame that fails to decode is logged with its
name and skipped.
"""

from __future__ import annotations

import collections
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import cv2
import numpy as np

from edge.config import SourceConfig

log = logging.getLogger("edge.sources")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class SourceError(RuntimeError):
    """A source cannot be opened; the message names the URI (without credentials) and a fix."""


@dataclass
class Frame:
    """One captured frame. ``image`` is H×W×3 BGR uint8; ``capture_time`` is timezone-aware UTC."""

    image: np.ndarray
    capture_time: datetime
    index: int
    source_id: str
    name: str | None = None  # file name for folder sources (for logs and snapshots)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def redact_uri(uri: str) -> str:
    """The URI without user name and password (``rtsp://u:p@cam/s`` -> ``rtsp://cam/s``)."""
    if "://" not in uri:
        return uri
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def as_bgr(image: np.ndarray) -> np.ndarray:
    """Gray / BGRA / 16-bit images -> 3-channel BGR uint8 (what the pipeline expects)."""
    if image.dtype != np.uint8:
        image = cv2.convertScaleAbs(image, alpha=255.0 / max(float(image.max()), 1.0))
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


class _RateLimiter:
    """Spaces frames at least ``1 / fps`` apart (0 = no limit), waiting on ``stop`` so close() interrupts."""

    def __init__(self, fps: float, stop: threading.Event) -> None:
        self.period_s = 1.0 / fps if fps > 0 else 0.0
        self.stop = stop
        self.next_t = time.monotonic()

    def wait(self) -> None:
        if self.period_s:
            delay = self.next_t - time.monotonic()
            if delay > 0:
                self.stop.wait(delay)
            self.next_t = max(self.next_t + self.period_s, time.monotonic())


class FrameSource:
    """Base: an iterator of frames with ``close()``, ``source_id``, ``is_live`` and ``dropped_frames``."""

    is_live = False

    def __init__(self, source_id: str) -> None:
        self.source_id = source_id
        self.dropped_frames = 0
        self.oversized_files = 0  # image files skipped before decoding (too_large_to_decode)
        self._stop = threading.Event()

    def __iter__(self) -> Iterator[Frame]:
        return self.frames()

    def frames(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        """Stop reading; an iteration in progress ends after the current frame."""
        self._stop.set()

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


JPEG_END = b"\xff\xd9"  # the end-of-image marker every complete JPEG ends with
JPEG_START = b"\xff\xd8\xff"  # start-of-image marker and the first segment's marker byte


def jpeg_is_truncated(data: bytes) -> bool:
    """True when JPEG bytes lack their end-of-image marker (the file was cut short); trailing
    zero padding, which some cameras write, is allowed."""
    return not data.rstrip(b"\0").endswith(JPEG_END)


def _jpeg_tail(file: Path, size: int = 4096) -> bytes:
    with open(file, "rb") as fh:
        fh.seek(0, 2)
        fh.seek(max(0, fh.tell() - size))
        return fh.read()


def header_size(file: Path) -> tuple[int, int] | None:
    """(width, height) read from an image file's header without decoding its pixels; None when the
    header is not one Pillow knows.

    Pillow's format plugins parse only the header when an image is opened; they are called directly
    here because ``Image.open`` refuses to report the size of an image it deems a decompression bomb,
    which is exactly the image whose size must be reported.
    """
    try:
        from PIL import Image  # lazy: only image folders need it (the [edge] extra installs Pillow)
    except ImportError:
        return None
    Image.init()
    try:
        with open(file, "rb") as fh:
            prefix = fh.read(16)
            for format_id in Image.ID:
                factory, accept = Image.OPEN[format_id]
                if accept is not None and not accept(prefix):
                    continue
                fh.seek(0)
                try:
                    image = factory(fh, str(file))
                except Exception:  # noqa: BLE001 - not this format (or a bad header): try the next one
                    continue
                return image.size
    except OSError:
        return None
    return None


def too_large_to_decode(file: Path, config: SourceConfig) -> str | None:
    """Why `file` must not be decoded (its header says it is larger than the guard allows), or None.

    Decoding allocates width x height x channels bytes before any frame guard can act: a 440 KB PNG of
    20000 x 20000 pixels would take 1.2 GB. With ``oversize = "reject"`` anything above
    ``max_frame_pixels`` is skipped here; with "downscale" anything above ``max_decode_pixels``.
    """
    size = header_size(file)
    if size is None:
        return None
    pixels = size[0] * size[1]
    if config.oversize == "reject":
        limit, name = config.max_frame_pixels, "max_frame_pixels={} (oversize = reject)"
    else:
        limit, name = config.max_decode_pixels, "max_decode_pixels={}"
    if pixels <= limit:
        return None
    return f"{size[0]}x{size[1]} = {pixels} px > source.{name.format(limit)}"


def read_image(file: Path) -> np.ndarray | None:
    """Decode an image file with OpenCV (None when unreadable); a truncated JPEG is decoded (its missing
    bottom comes out grey) with a warning naming the file."""
    if file.suffix.lower() in (".jpg", ".jpeg"):
        try:
            with open(file, "rb") as fh:
                is_jpeg = fh.read(3) == JPEG_START
            truncated = is_jpeg and jpeg_is_truncated(_jpeg_tail(file))
        except OSError as exc:
            log.warning("cannot read %s: %s", file, exc.strerror)
            return None
        if truncated:
            log.warning("%s is a truncated JPEG (no end-of-image marker): its missing part decodes as grey and "
                        "may hide or fake cracks along the cut", file)
    return cv2.imread(str(file), cv2.IMREAD_UNCHANGED)


class ImageFolderSource(FrameSource):
    """Images in a folder (or one image file), in name order; unreadable files are logged and skipped, and so
    are files whose header says they are too large to decode (:func:`too_large_to_decode`)."""

    def __init__(self, path: Path, config: SourceConfig) -> None:
        super().__init__(str(path))
        self.path = path
        self.config = config
        self.loop = config.loop
        self.fps_limit = config.fps_limit
        if path.is_dir():
            self.files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        else:
            self.files = [path]
        if not self.files:
            raise SourceError(f"image folder {path} has no images ({', '.join(IMAGE_SUFFIXES)})")
        self.skipped_files = 0
        self.photo_time = config.photo_time
        self.photo_utc_offset = config.photo_utc_offset
        self._clock_warned = False

    def capture_time(self, file: Path) -> datetime:
        """The photo's own time (EXIF, config.photo_time = "exif"), else now; the fallback is logged once (info:
        plain PNGs and screenshots have no time of their own, and that is no fault)."""
        if self.photo_time == "exif":
            try:
                from edge.geo.exif import photo_capture_time

                when = photo_capture_time(file, utc_offset=self.photo_utc_offset)
            except ImportError as exc:
                when, why = None, str(exc)
            else:
                why = "no DateTimeOriginal with OffsetTimeOriginal (or source.photo_utc_offset) and no GPS time stamp"
            if when is not None:
                return when.astimezone(timezone.utc)
            if not self._clock_warned:
                self._clock_warned = True
                log.info("%s: %s; photos without their own time are stamped with the time they are read "
                         "(logged once per folder)", file, why)
        return utc_now()

    def frames(self) -> Iterator[Frame]:
        index = 0
        limiter = _RateLimiter(self.fps_limit, self._stop)
        while not self._stop.is_set():
            decoded_any = False
            for file in self.files:
                if self._stop.is_set():
                    return
                too_large = too_large_to_decode(file, self.config)
                if too_large is not None:
                    self.skipped_files += 1
                    self.oversized_files += 1
                    log.warning("skipping %s without decoding it: %s", file, too_large)
                    continue
                image = read_image(file)
                if image is None or image.size == 0:
                    self.skipped_files += 1
                    log.warning("skipping %s: not a readable image (corrupt or unsupported format)", file)
                    continue
                decoded_any = True
                limiter.wait()
                yield Frame(as_bgr(image), self.capture_time(file), index, self.source_id, name=file.name)
                index += 1
            if not self.loop or not decoded_any:
                return


class CaptureSource(FrameSource):
    """An OpenCV ``VideoCapture`` made by ``open_capture()``: a video file (no drops) or a live stream.

    Live (``live=True``): a reader thread fills a queue of ``queue_size`` frames, dropping the oldest
    when full (counted in ``dropped_frames``); when the stream fails to open or stops delivering it is
    re-opened after a back-off that doubles from ``reconnect_min_s`` to ``reconnect_max_s`` and
    resets after a good frame. ``index`` counts every frame read, so dropped frames leave gaps.
    File (``live=False``): frames are read in the consumer's thread, none dropped; a frame that fails
    to decode in mid-file is logged and skipped (up to ``max_bad_frames`` in a row, then end of file).
    """

    def __init__(
        self,
        open_capture: Callable[[], Any],
        source_id: str,
        config: SourceConfig,
        *,
        live: bool,
    ) -> None:
        super().__init__(source_id)
        self.is_live = live
        self.open_capture = open_capture
        self.loop = config.loop and not live
        self.fps_limit = config.fps_limit
        self.queue_size = config.queue_size
        self.reconnect_min_s = config.reconnect_min_s
        self.reconnect_max_s = config.reconnect_max_s
        self.max_bad_frames = config.max_bad_frames
        self.start_time = None if live else config.start_datetime()
        self.frames_read = 0
        self.reconnects = 0
        self._queue: collections.deque[Frame] = collections.deque()
        self._cond = threading.Condition()
        self._reader: threading.Thread | None = None
        if not live:
            self._check_opens()

    def _check_opens(self) -> None:
        cap = self.open_capture()
        ok = cap is not None and cap.isOpened()
        if cap is not None:
            cap.release()
        if not ok:
            raise SourceError(f"cannot open {self.source_id}: not a video OpenCV can decode (or no such file)")

    # -------------------------------------------------------------- file: read in the caller's thread
    def _file_frames(self) -> Iterator[Frame]:
        index = 0
        limiter = _RateLimiter(self.fps_limit, self._stop)
        while not self._stop.is_set():
            cap = self.open_capture()
            bad_in_row, delivered = 0, 0
            try:
                while not self._stop.is_set():
                    if not cap.grab():
                        break
                    ok, image = cap.retrieve()
                    if not ok or image is None or image.size == 0:
                        bad_in_row += 1
                        log.warning("%s: frame %d failed to decode, skipped", self.source_id, index)
                        if bad_in_row >= self.max_bad_frames:
                            log.error("%s: %d bad frames in a row, treating as end of file", self.source_id, bad_in_row)
                            break
                        continue
                    bad_in_row = 0
                    limiter.wait()
                    self.frames_read += 1
                    delivered += 1
                    yield Frame(as_bgr(image), self._file_time(cap), index, self.source_id)
                    index += 1
            finally:
                cap.release()
            if not self.loop or delivered == 0:
                return

    def _file_time(self, cap: Any) -> datetime:
        """A recorded video's frame time: source.start_time + the frame's position in the file; else now."""
        if self.start_time is None:
            return utc_now()
        return (self.start_time + timedelta(milliseconds=float(cap.get(cv2.CAP_PROP_POS_MSEC)))).astimezone(timezone.utc)

    # -------------------------------------------------------------- live: reader thread + drop-oldest
    def _put_dropping_oldest(self, frame: Frame) -> None:
        with self._cond:
            if len(self._queue) >= self.queue_size:
                self._queue.popleft()
                self.dropped_frames += 1
            self._queue.append(frame)
            self.frames_read += 1
            self._cond.notify_all()

    def _read_live(self) -> None:
        backoff_s = self.reconnect_min_s
        index = 0
        limiter = _RateLimiter(self.fps_limit, self._stop)
        while not self._stop.is_set():
            cap = None
            try:
                cap = self.open_capture()
                if cap is None or not cap.isOpened():
                    log.warning("%s: cannot open, retrying in %.1f s", self.source_id, backoff_s)
                else:
                    log.info("%s: opened", self.source_id)
                    while not self._stop.is_set():
                        ok, image = cap.read()
                        if not ok or image is None or image.size == 0:
                            log.warning("%s: stream lost, reconnecting in %.1f s", self.source_id, backoff_s)
                            break
                        backoff_s = self.reconnect_min_s  # a good frame resets the back-off
                        limiter.wait()
                        self._put_dropping_oldest(Frame(as_bgr(image), utc_now(), index, self.source_id))
                        index += 1
            except cv2.error as exc:  # a backend throwing inside read(): treat as a lost stream
                log.warning("%s: OpenCV error %s, reconnecting in %.1f s", self.source_id, exc, backoff_s)
            finally:
                if cap is not None:
                    cap.release()
            if self._stop.wait(backoff_s):
                break
            self.reconnects += 1
            backoff_s = min(backoff_s * 2.0, self.reconnect_max_s)
        with self._cond:
            self._cond.notify_all()

    def _live_frames(self) -> Iterator[Frame]:
        if self._reader is None:
            self._reader = threading.Thread(target=self._read_live, name=f"source:{self.source_id}", daemon=True)
            self._reader.start()
        while True:
            with self._cond:
                while not self._queue and not self._stop.is_set():
                    self._cond.wait(0.5)
                if self._stop.is_set():
                    return
                frame = self._queue.popleft()
            yield frame

    def wait_frames_read(self, count: int, timeout_s: float) -> bool:
        """Block until the reader has read ``count`` frames in all (live sources); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self.frames_read >= count, timeout=timeout_s)

    def queued(self) -> int:
        """Frames waiting in a live source's queue."""
        with self._cond:
            return len(self._queue)

    def frames(self) -> Iterator[Frame]:
        return self._live_frames() if self.is_live else self._file_frames()

    def close(self) -> None:
        super().close()
        with self._cond:
            self._cond.notify_all()
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(timeout=5.0)


def opencv_has_gstreamer() -> bool:
    """True when this OpenCV build can open GStreamer pipelines (JetPack's OpenCV can; pip wheels cannot)."""
    match = re.search(r"GStreamer:\s*(\w+)", cv2.getBuildInformation())
    return bool(match and match.group(1).upper() == "YES")


def csi_pipeline(sensor_id: int, width: int = 1920, height: int = 1080, fps: int = 30, flip: int = 0) -> str:
    """GStreamer pipeline for a Jetson CSI camera: nvarguscamerasrc -> NVMM -> nvvidconv -> BGR appsink."""
    return (
        f"nvarguscamerasrc sensor-id={sensor_id} ! "
        f"video/x-raw(memory:NVMM),width={width},height={height},framerate={fps}/1,format=NV12 ! "
        f"nvvidconv flip-method={flip} ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! "
        "appsink drop=true max-buffers=1 sync=false"
    )


def rtsp_gst_pipeline(uri: str, latency_ms: int = 200) -> str:
    """GStreamer pipeline for RTSP with hardware-agnostic decoding (decodebin picks nvv4l2decoder on Jetson)."""
    return (
        f"rtspsrc location={uri} latency={latency_ms} protocols=tcp ! decodebin ! videoconvert ! "
        "video/x-raw,format=BGR ! appsink drop=true max-buffers=1 sync=false"
    )


def _gst_capture(pipeline: str, source_id: str) -> Callable[[], Any]:
    if not opencv_has_gstreamer():
        raise SourceError(
            f"{source_id} needs an OpenCV built with GStreamer (JetPack's python3-opencv has it; "
            "the opencv-python pip wheels do not)"
        )
    return lambda: cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER)


def open_source(config: SourceConfig) -> FrameSource:
    """Open the source named by ``config.uri`` (see the module docstring for the forms).

    Raises :class:`SourceError` when the URI is not understood, a file/folder does not exist, or the
    source needs GStreamer that this OpenCV lacks. Live sources do not fail here when the camera is
    absent: they keep retrying with back-off (a camera may come up after the daemon).
    """
    text = config.uri.strip()
    if not text:
        raise SourceError("no source given: set source.uri (or --source) to a video, folder or camera URI")
    source_id = redact_uri(text)
    live = {"config": config, "live": True}
    if text.isdigit():
        index = int(text)
        return CaptureSource(lambda: cv2.VideoCapture(index), f"usb:{index}", **live)
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if text.startswith("gst:"):
        pipeline = text[4:].strip()
        return CaptureSource(_gst_capture(pipeline, "gst pipeline"), source_id, **live)
    if scheme == "v4l2":
        device = urlsplit(text).path or "/dev/video0"
        return CaptureSource(lambda: cv2.VideoCapture(device, cv2.CAP_V4L2), source_id, **live)
    if scheme == "csi":
        parts = urlsplit(text)
        query = {k: int(v[0]) for k, v in parse_qs(parts.query).items() if v and v[0].isdigit()}
        sensor = int((parts.netloc or "0").strip("/") or 0)
        pipeline = csi_pipeline(sensor, **{k: query[k] for k in ("width", "height", "fps", "flip") if k in query})
        return CaptureSource(_gst_capture(pipeline, source_id), source_id, **live)
    if scheme in ("rtsp", "rtsps", "http", "https", "rtmp", "udp", "tcp"):
        parts = urlsplit(text)
        if parse_qs(parts.query).get("gst") == ["1"]:
            clean = urlunsplit(parts._replace(query="&".join(
                f"{k}={v}" for k, vs in parse_qs(parts.query).items() if k != "gst" for v in vs)))
            opener = _gst_capture(rtsp_gst_pipeline(clean), source_id)
        else:
            opener = lambda: cv2.VideoCapture(text, cv2.CAP_FFMPEG)  # noqa: E731
        return CaptureSource(opener, source_id, **live)
    if scheme == "file":
        text = urlsplit(text).path
    elif scheme:
        raise SourceError(
            f"source {source_id!r}: unknown scheme {scheme!r}; use a path, file://, v4l2://, rtsp://, csi:// or gst:"
        )
    path = Path(text).expanduser()
    if not path.exists():
        raise SourceError(f"source {path} does not exist (expected a video file or an image folder)")
    if path.is_dir() or path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageFolderSource(path, config)
    return CaptureSource(lambda: cv2.VideoCapture(str(path)), str(path), config, live=False)
