"""Frame sources on real OpenCV files: video (MJPG .avi written here), image folders, drop-oldest."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from edge_helpers import crack_image, frame_number, numbered_frame, write_video

from edge.config import SourceConfig
from edge.sources import CaptureSource, ImageFolderSource, SourceError, open_source, redact_uri


def test_video_file_yields_every_frame_in_order_with_metadata(tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.avi", [numbered_frame(i) for i in range(12)])
    with open_source(SourceConfig(uri=f"file://{video}")) as source:
        frames = list(source)
    assert not source.is_live and source.dropped_frames == 0
    assert [f.index for f in frames] == list(range(12))
    assert [frame_number(f.image) for f in frames] == list(range(12))
    assert all(f.image.shape == (48, 64, 3) and f.image.dtype == np.uint8 for f in frames)
    assert all(f.capture_time.tzinfo is not None for f in frames)
    assert frames[0].source_id == str(video)
    assert all(a.capture_time <= b.capture_time for a, b in zip(frames, frames[1:], strict=False))


def test_video_loop_restarts_and_keeps_counting(tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.avi", [numbered_frame(i) for i in range(5)])
    source = open_source(SourceConfig(uri=str(video), loop=True))
    frames = []
    for frame in source:
        frames.append(frame)
        if len(frames) == 12:
            source.close()
    assert [f.index for f in frames] == list(range(12))
    assert [frame_number(f.image) for f in frames] == [i % 5 for i in range(12)]


def test_image_folder_sorted_and_a_corrupt_image_is_skipped_with_its_name(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in (2, 0, 1):
        cv2.imwrite(str(folder / f"img_{i}.png"), numbered_frame(i))
    (folder / "img_1b.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    cv2.imwrite(str(folder / "gray_3.png"), numbered_frame(3)[..., 0])  # single channel -> BGR
    (folder / "notes.txt").write_text("ignored")
    with caplog.at_level(logging.WARNING, logger="edge.sources"):
        source = open_source(SourceConfig(uri=str(folder)))
        frames = list(source)
    assert isinstance(source, ImageFolderSource)
    assert [f.name for f in frames] == ["gray_3.png", "img_0.png", "img_1.png", "img_2.png"]
    assert [f.index for f in frames] == [0, 1, 2, 3]
    assert all(f.image.ndim == 3 and f.image.shape[2] == 3 for f in frames)
    assert source.skipped_files == 1
    assert any("img_1b.jpg" in r.getMessage() and "skipping" in r.getMessage() for r in caplog.records)


def test_image_folder_loop(tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i}.png"), numbered_frame(i))
    source = open_source(SourceConfig(uri=str(folder), loop=True))
    names = []
    for frame in source:
        names.append(frame.name)
        if len(names) == 7:
            source.close()
    assert names == ["0.png", "1.png", "2.png"] * 2 + ["0.png"]


class GatedCapture:
    """A real VideoCapture that holds every frame after the first until ``gate`` is set.

    It pins down the order the test needs (the consumer has the first frame before the reader runs
    ahead); without it a loaded machine may schedule the consumer only after the reader's 30th frame.
    """

    def __init__(self, path: Path, gate: threading.Event) -> None:
        self.cap, self.gate, self.reads = cv2.VideoCapture(str(path)), gate, 0

    def isOpened(self) -> bool:  # noqa: N802 - the cv2.VideoCapture interface
        return self.cap.isOpened()

    def read(self):
        if self.reads == 1:
            assert self.gate.wait(20.0), "the consumer never took the first frame"
        self.reads += 1
        return self.cap.read()

    def release(self) -> None:
        self.cap.release()


def test_live_source_drops_the_oldest_frames_for_a_slow_consumer(tmp_path: Path) -> None:
    """A reader that outpaces the consumer keeps only the newest `queue_size` frames and counts the rest."""
    video = write_video(tmp_path / "live.avi", [numbered_frame(i) for i in range(30)])
    gate = threading.Event()
    source = CaptureSource(lambda: GatedCapture(video, gate), "live-test", live=True, config=SourceConfig(queue_size=3,
                           reconnect_min_s=60.0, reconnect_max_s=60.0))  # after the 30 frames: wait (close ends it)
    frames = iter(source)
    first = next(frames)  # starts the reader; the consumer now stalls
    gate.set()
    assert source.wait_frames_read(30, timeout_s=20.0), f"reader read only {source.frames_read} frames"
    assert source.queued() == 3
    rest = [next(frames) for _ in range(3)]
    source.close()
    assert first.index == 0 and frame_number(first.image) == 0
    assert [f.index for f in rest] == [27, 28, 29]
    assert [frame_number(f.image) for f in rest] == [27, 28, 29]
    assert source.dropped_frames == 30 - 1 - 3  # everything not delivered was dropped, and counted


def test_live_source_reconnects_after_the_stream_ends(tmp_path: Path) -> None:
    video = write_video(tmp_path / "live.avi", [numbered_frame(i) for i in range(4)])
    opened = threading.Semaphore(0)

    def opener() -> cv2.VideoCapture:
        opened.release()
        return cv2.VideoCapture(str(video))

    source = CaptureSource(opener, "live-test", SourceConfig(queue_size=64, reconnect_min_s=0.01, reconnect_max_s=0.02), live=True)
    frames = iter(source)
    got = [next(frames) for _ in range(10)]  # 4 frames per connection: needs >= 2 reconnects
    source.close()
    assert source.reconnects >= 2
    assert [f.index for f in got] == list(range(10))
    assert [frame_number(f.image) for f in got] == [i % 4 for i in range(10)]


def test_missing_camera_does_not_crash_and_close_interrupts_the_back_off() -> None:
    source = CaptureSource(lambda: None, "cam-absent", SourceConfig(reconnect_min_s=30.0, reconnect_max_s=30.0), live=True)
    frames = iter(source)
    closer = threading.Timer(0.2, source.close)
    closer.start()
    assert list(frames) == []  # ends when closed, no exception
    closer.join()
    assert source.frames_read == 0


def test_errors_name_the_uri_without_credentials(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        open_source(SourceConfig(uri=str(tmp_path / "missing.mp4")))
    with pytest.raises(SourceError, match="no images"):
        (tmp_path / "empty").mkdir()
        open_source(SourceConfig(uri=str(tmp_path / "empty")))
    (tmp_path / "junk.mp4").write_bytes(b"not a video at all")
    with pytest.raises(SourceError, match="junk.mp4"):
        open_source(SourceConfig(uri=str(tmp_path / "junk.mp4")))
    with pytest.raises(SourceError, match="unknown scheme 'ftp'") as info:
        open_source(SourceConfig(uri="ftp://user:secret@host/x"))
    assert "secret" not in str(info.value)
    with pytest.raises(SourceError, match="no source given"):
        open_source(SourceConfig(uri=""))


def test_redact_uri_strips_credentials() -> None:
    assert redact_uri("rtsp://admin:pa55@10.0.0.2:554/stream1?x=1") == "rtsp://10.0.0.2:554/stream1?x=1"
    assert redact_uri("rtsp://cam/stream") == "rtsp://cam/stream"
    assert redact_uri("/data/clip.mp4") == "/data/clip.mp4"


def test_live_uris_are_recognised_without_hardware() -> None:
    """URI forms map to live sources; opening is lazy (a camera may come up after the daemon)."""
    for uri in ("v4l2:///dev/video9", "7", "rtsp://user:pw@127.0.0.1:9/none"):
        source = open_source(SourceConfig(uri=uri, reconnect_min_s=30.0, reconnect_max_s=30.0))
        assert source.is_live and "pw" not in source.source_id
        source.close()


def test_a_truncated_jpeg_is_decoded_with_a_warning_naming_the_file(tmp_path: Path, caplog) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    ok, data = cv2.imencode(".jpg", crack_image(240, 320, seed=1))
    assert ok
    (folder / "whole.jpg").write_bytes(data.tobytes())
    (folder / "cut.jpg").write_bytes(data.tobytes()[: len(data) * 2 // 3])
    with caplog.at_level(logging.WARNING):
        frames = list(open_source(SourceConfig(uri=str(folder))))
    assert [f.name for f in frames] == ["cut.jpg", "whole.jpg"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "cut.jpg is a truncated JPEG" in warnings[0]


def test_random_bytes_named_jpg_are_skipped_not_called_a_truncated_jpeg(tmp_path: Path, caplog) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    (folder / "noise.jpg").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    cv2.imwrite(str(folder / "ok.png"), numbered_frame(1))
    with caplog.at_level(logging.WARNING):
        frames = list(open_source(SourceConfig(uri=str(folder))))
    messages = [r.getMessage() for r in caplog.records]
    assert [f.name for f in frames] == ["ok.png"]
    assert not any("truncated" in m for m in messages), messages
    assert any("skipping" in m and "noise.jpg" in m and "not a readable image" in m for m in messages)


def huge_png(path: Path, width: int, height: int) -> None:
    """A real, decodable 1-bit PNG of width x height black pixels: a few hundred KB on disk, and
    width x height bytes once OpenCV decodes it to 8-bit grey."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\0" * (1 + (width + 7) // 8)  # filter byte + packed bits
    squeeze = zlib.compressobj(9)
    body = b"".join(squeeze.compress(row * 1000) for _ in range(height // 1000)) + squeeze.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", body) + chunk(b"IEND", b""))


@pytest.mark.parametrize("oversize", ["reject", "downscale"])
def test_an_oversize_image_file_is_skipped_before_decoding(tmp_path: Path, oversize: str) -> None:
    """A 20000 x 20000 PNG (about 0.4 MB on disk, 400 MB decoded) is skipped from its header: the child
    process that reads the folder never grows by anything like the decoded size."""
    import subprocess
    import sys

    folder = tmp_path / "frames"
    folder.mkdir()
    huge_png(folder / "bomb.png", 20000, 20000)
    cv2.imwrite(str(folder / "small.png"), numbered_frame(2))
    assert (folder / "bomb.png").stat().st_size < 2_000_000
    code = (
        "import logging, resource, sys\n"
        "from edge.config import SourceConfig\n"
        "from edge.sources import open_source\n"
        "logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format='%(message)s')\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        f"source = open_source(SourceConfig(uri={str(folder)!r}, oversize={oversize!r}))\n"
        "names = [f.name for f in source]\n"
        "grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before\n"
        "print('RESULT', names, source.oversized_files, grown // 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[1]).stdout
    result = next(line for line in out.splitlines() if line.startswith("RESULT"))
    names, oversized, grown_mib = result.removeprefix("RESULT ").rsplit(" ", 2)
    assert names == "['small.png']" and oversized == "1", out
    assert int(grown_mib) < 100, f"reading the folder grew the process by {grown_mib} MiB"
    limit = "max_frame_pixels" if oversize == "reject" else "max_decode_pixels"
    assert f"bomb.png without decoding it: 20000x20000 = 400000000 px > source.{limit}" in out


def test_the_frame_guard_rejects_or_downscales_decoded_frames() -> None:
    """Video and camera frames are decoded before any header can be read: the guard acts on the frame."""
    from edge.frame_guard import fit_frame

    frame = np.zeros((240, 320, 3), np.uint8)
    assert fit_frame(frame, 19200, "reject") is None
    assert fit_frame(frame, 19200, "downscale").shape == (120, 160, 3)
    assert fit_frame(frame, 76800, "reject") is frame
