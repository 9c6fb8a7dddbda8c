"""The daemon's pipeline: capture -> tiles -> backend -> stitch/measure/alert -> publisher, overlapped.

Three threads joined by bounded queues, so decoding, inference and post-processing run at the same
time and the backend is not left waiting for a decoder when frames are available::

    capture thread      source frame -> (resize to GSD) -> tiles -> model input      --frame queue-->
    inference (caller)  tiles of one or more queued frames in batches -> backend.infer --result queue-->
    post thread         stitch -> measure_cracks -> AlertPolicy -> snapshot -> build_alert -> publisher

Back-pressure: the frame queue holds ``source.queue_size`` prepared frames. A file source blocks
when it is full (no frame is ever dropped); a live source drops the oldest queued frame (the newest
view matters) and counts it. Shutdown: setting the ``stop`` event passed to :meth:`Pipeline.run`
stops capture; frames already captured (the one in flight and at most the queue's worth) are
finished and their alerts published, then ``run`` returns. The CLI installs the SIGINT/SIGTERM
handlers that set the event; the library never touches signals.

Alert sequence numbers come from edge/sequence.py, the stats from edge/stats.py; edge/daemon.py
wires a pipeline from a config.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np

from contract.backends import Backend
from contract.backends.flips import passes
from contract.predict import frame_tiles
from contract.tiling import TileGrid, default_overlap, resize_to_gsd, stitch
from edge.alerts import AlertPolicy, build_alert, model_info, new_alert_id
from edge.config import EdgeConfig
from edge.frame_guard import fit_frame
from edge.geo import FrameGeo, FrameLocator
from edge.geo.ground import crack_ground_position
from edge.measure import FrameMeasurement, measure_cracks
from edge.publish import Publisher
from edge.sequence import SequenceCounter
from edge.snapshots import SnapshotStore, render_overlay
from edge.sources import Frame, FrameSource
from edge.stats import PipelineStats

log = logging.getLogger("edge.pipeline")

_END = object()  # sentinel closing a queue


class PipelineError(RuntimeError):
    """The pipeline cannot be built or stopped on an error; the message names the setting or stage."""


@dataclass
class Prepared:
    """A captured frame, cut into tiles and converted to the model's input, waiting for inference."""

    frame: Frame
    image: np.ndarray  # the frame after any GSD resize: what is measured and drawn
    gsd_mm_per_px: float | None
    grid: TileGrid
    model_input: np.ndarray  # N×3×tile×tile float32
    received_s: float  # time.monotonic() when the capture thread got the frame


@dataclass
class Inferred:
    prepared: Prepared
    probs: np.ndarray  # N×1×tile×tile


@dataclass
class FrameOutcome:
    """What the post-processing stage made of one frame (given to ``on_frame`` hooks, e.g. the demo)."""

    frame: Frame
    image: np.ndarray
    measurement: FrameMeasurement
    alert: dict | None
    snapshot_jpeg: bytes | None
    probability: np.ndarray  # H x W float32: the stitched crack probability the measurement thresholded


def check_model_input(backend: Backend, tile: int | None) -> int:
    """The tile side to cut frames into; PipelineError when the model's graph input cannot take the
    pipeline's tiles (3-channel RGB, square, the size its metadata records and ``tiling.tile`` asks for)."""
    _, channels, tile_h, tile_w = backend.input_shape
    meta = backend.metadata
    if channels != 3:
        raise PipelineError(
            f"the model's input has {channels} channel(s) but the edge pipeline feeds 3-channel RGB tiles "
            f"(the model contract, docs/CONTRACTS.md): export the model with 3 input channels"
        )
    if tile_h != tile_w or tile_h != meta.input_size:
        raise PipelineError(
            f"the model's graph input is {tile_h}×{tile_w} but its metadata says input_size {meta.input_size}: "
            f"the metadata does not describe this graph; re-export the model (or fix its metadata)"
        )
    if tile is not None and tile != tile_h:
        raise PipelineError(
            f"tiling.tile = {tile} but the model takes {tile_h}×{tile_w} tiles: "
            f"leave tiling.tile unset or set it to {tile_h}"
        )
    return tile_h


def crack_places(where: FrameGeo, measurement: FrameMeasurement, image: np.ndarray) -> list[tuple[float, float] | None]:
    """Each crack's (lat, lon) on the ground (edge/geo/ground.py), None for all without a fresh position."""
    position = where.position
    if position is None or position.stale:
        return [None] * len(measurement.cracks)
    fix, (height, width) = position.fix, image.shape[:2]
    return [crack_ground_position(fix.lat, fix.lon, fix.heading_deg, measurement.gsd_mm_per_px, c.bbox, width, height)[:2]
            for c in measurement.cracks]


class Pipeline:
    """One source, one backend, one publisher; :meth:`run` processes frames until the source ends or ``stop``."""

    def __init__(
        self,
        config: EdgeConfig,
        *,
        source: FrameSource,
        backend: Backend,
        publisher: Publisher,
        snapshots: SnapshotStore | None = None,
        model_sha256: str | None = None,
        on_frame: Callable[[FrameOutcome], None] | None = None,
        locator: FrameLocator | None = None,
    ) -> None:
        self.config = config
        self.locator = locator or FrameLocator.from_config(config)  # position + GSD per frame (edge/geo/)
        self.source = source
        self.backend = backend
        self.publisher = publisher
        self.snapshots = snapshots
        self.on_frame = on_frame
        meta = backend.metadata
        max_batch = backend.input_shape[0]
        self.tile = check_model_input(backend, config.tiling.tile)
        self.overlap = default_overlap(self.tile) if config.tiling.overlap is None else config.tiling.overlap
        if self.overlap >= self.tile:
            raise PipelineError(
                f"tiling.overlap ({self.overlap}) must be smaller than the tile ({self.tile}): this model takes "
                f"{self.tile}-px tiles, so set an overlap below that, e.g. --set tiling.overlap={self.tile // 4}"
            )
        self.batch_size = max(1, min(config.model.batch_size, max_batch))
        self.flips = flips = passes(backend)  # mirrored passes per tile the backend averages
        self.threshold = config.model.threshold or meta.threshold_for(flips)
        if config.model.threshold is None and not meta.has_threshold_for(flips):
            log.warning("the model's threshold %.2f was calibrated on single-pass predictions, not on %d mirrored "
                        "passes averaged (model.flips): calibrate it with `python -m calibration.threshold --flips %d "
                        "--write` or set model.threshold", meta.threshold, flips, flips)
        self.rules = config.measure.severity.rules()
        self.cleanup = config.measure.cleanup()
        self.policy = AlertPolicy(config.alerts)
        self.sequence = SequenceCounter(config.alerts.state_path)
        self.model_info = model_info(meta.model_name, model_sha256 or "0" * 64, self.threshold, backend.precision)
        log.info("model %s on %s (%s), %d-px tiles, overlap %d px, batch %d, threshold %.2f, %d pass(es) per tile",
                 meta.model_name, backend.name, backend.precision, self.tile, self.overlap, self.batch_size,
                 self.threshold, flips)
        self.stats = PipelineStats()
        queue_size = config.source.queue_size
        self._frames: queue.Queue = queue.Queue(maxsize=queue_size)
        self._results: queue.Queue = queue.Queue(maxsize=max(2, queue_size))
        self._oversize_seen: set[tuple[int, int]] = set()
        self._failure: BaseException | None = None
        self._next_stats_s = 0.0

    # ------------------------------------------------------------------ capture thread
    def _guard_size(self, frame: Frame) -> tuple[np.ndarray | None, float | None]:
        """The frame within source.max_frame_pixels (downscaled, GSD adjusted), or None when rejected."""
        src, gsd = self.config.source, self.config.tiling.gsd_mm_per_px
        height, width = frame.image.shape[:2]
        image = fit_frame(frame.image, src.max_frame_pixels, src.oversize)
        if image is frame.image:
            return image, gsd
        self.stats.frames_oversized += 1
        first = (height, width) not in self._oversize_seen
        self._oversize_seen.add((height, width))
        if image is None:
            log.warning("frame %d of %s is %dx%d = %d px > source.max_frame_pixels=%d: rejected (source.oversize)",
                        frame.index, frame.source_id, width, height, width * height, src.max_frame_pixels)
            return None, gsd
        if first:
            log.warning("frames of %s are %dx%d = %d px > source.max_frame_pixels=%d: downscaled to %dx%d "
                        "(logged once per size)", frame.source_id, width, height, width * height,
                        src.max_frame_pixels, image.shape[1], image.shape[0])
        return image, None if gsd is None else gsd * width / image.shape[1]

    def _prepare(self, frame: Frame) -> Prepared | None:
        image, gsd = self._guard_size(frame)
        if image is None:
            return None
        target = self.config.tiling.target_gsd_mm_per_px
        if gsd is not None and target is not None:
            image, gsd = resize_to_gsd(image, gsd, target)
        grid, x = frame_tiles(image, self.backend.metadata, self.overlap, self.tile)  # the one inference path
        return Prepared(frame, image, gsd, grid, x, time.monotonic())

    def _put_frame(self, item: Prepared, stop: threading.Event) -> None:
        if self.source.is_live:
            while True:
                try:
                    self._frames.put_nowait(item)
                    return
                except queue.Full:
                    try:
                        self._frames.get_nowait()  # drop the oldest: the newest view matters
                        self.stats.frames_dropped += 1
                    except queue.Empty:
                        pass
        while not stop.is_set():  # file source: wait for room, never drop
            try:
                self._frames.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        self._frames.put(item)  # stopping: this frame was captured, finish it (inference still drains)

    def _capture(self, stop: threading.Event) -> None:
        try:
            for frame in self.source:
                item = self._prepare(frame)
                self.stats.frames_captured += 1
                if item is None:
                    continue
                self._put_frame(item, stop)
                if stop.is_set():
                    break
        except BaseException as exc:  # a source bug must stop the daemon, not hang it
            self._failure = exc
            log.exception("capture from %s failed", self.source.source_id)
        finally:
            self._frames.put(_END)

    # ------------------------------------------------------------------ inference (the run() thread)
    def _infer_loop(self) -> None:
        """Batch the tiles of one or more queued frames (up to batch_size), infer, hand frames on."""
        ended = False
        while not ended:
            item = self._frames.get()
            if item is _END:
                break
            group = [item]
            tiles = len(item.grid.origins)
            while tiles < self.batch_size:  # fill the batch with frames already waiting (never wait)
                try:
                    nxt = self._frames.get_nowait()
                except queue.Empty:
                    break
                if nxt is _END:
                    ended = True
                    break
                group.append(nxt)
                tiles += len(nxt.grid.origins)
            x = group[0].model_input if len(group) == 1 else np.concatenate([g.model_input for g in group])
            probs = self._infer_tiles(x)
            if probs is None:
                self._abandon(group)
                continue
            start = 0
            for g in group:
                n = len(g.grid.origins)
                self._results.put(Inferred(g, probs[start : start + n]))
                start += n

    def _infer_tiles(self, x: np.ndarray) -> np.ndarray | None:
        """Infer in batch_size pieces; None when the shutdown grace ran out in between (work abandoned)."""
        parts = []
        for start in range(0, x.shape[0], self.batch_size):
            if self._give_up.is_set():
                return None
            parts.append(self.backend.infer(x[start : start + self.batch_size]))
            self.stats.tiles += parts[-1].shape[0]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _abandon(self, group: list[Prepared]) -> None:
        for g in group:
            self.stats.frames_abandoned += 1
            log.warning("frame %d of %s abandoned: still not inferred %.0f s after the stop request "
                        "(source.shutdown_grace_s)", g.frame.index, g.frame.source_id, self.config.source.shutdown_grace_s)

    # ------------------------------------------------------------------ post-processing thread
    def _post_one(self, item: Inferred) -> None:
        p = item.prepared
        prob_map = stitch(item.probs, p.grid)
        where = self.locator.locate(p.frame, p.image.shape[1])
        gsd = where.gsd.gsd_mm_per_px if where.gsd else p.gsd_mm_per_px
        measurement = measure_cracks(prob_map, self.threshold, gsd_mm_per_px=gsd, rules=self.rules, **self.cleanup)
        alert, jpeg = None, None
        if measurement.cracks and self.policy.decide(measurement, p.frame.capture_time.timestamp(), p.frame.source_id,
                                                     view=p.frame.name, places=crack_places(where, measurement, p.image)):
            alert_id = new_alert_id()
            snapshot_ref = None
            if self.snapshots is not None or self.on_frame is not None:
                jpeg = render_overlay(p.image, measurement.mask, measurement.cracks)
            if self.snapshots is not None and jpeg is not None:
                snapshot_ref = {"path": str(self.snapshots.save(alert_id, jpeg).resolve())}  # readable from anywhere
            height, width = p.image.shape[:2]
            alert = build_alert(
                measurement, device_id=self.config.device_id, sequence=self.sequence.take(),
                created_at=datetime.now(timezone.utc), capture_time=p.frame.capture_time,
                source=p.frame.source_id, frame_index=p.frame.index, frame_size=(width, height),
                model_info=self.model_info, gsd_mm_per_px=gsd, snapshot=snapshot_ref, alert_id=alert_id,
                geo=where.alert_geo(), gsd_error_mm_per_px=where.gsd.error_mm_per_px if where.gsd else None,
                file=p.frame.name,
            )
            self.publisher.publish_alert(alert, jpeg)
            self.stats.alerts += 1
            self.stats.alert_latencies_s.append(time.monotonic() - p.received_s)
            log.info("alert %d: %d crack(s), severity %s, frame %d of %s", alert["sequence"], len(alert["cracks"]),
                     alert["severity"], p.frame.index, p.frame.source_id)
        elif measurement.cracks:
            log.debug("frame %d: %s", p.frame.index, self.policy.last_reason)
        if self.on_frame is not None:
            self.on_frame(FrameOutcome(p.frame, p.image, measurement, alert, jpeg, prob_map))

    def _post(self) -> None:
        while True:
            item = self._results.get()
            if item is _END:
                return
            try:
                self._post_one(item)
            except Exception:  # one bad frame must not stop the daemon; it is counted in the stats
                self.stats.errors += 1
                log.exception("post-processing frame %d of %s failed", item.prepared.frame.index,
                              item.prepared.frame.source_id)
            self.stats.frames_done += 1
            self.stats.latencies_s.append(time.monotonic() - item.prepared.received_s)
            if time.monotonic() >= self._next_stats_s:
                if self._next_stats_s:
                    self.report_stats()
                self._next_stats_s = time.monotonic() + self.config.stats_interval_s

    # ------------------------------------------------------------------ public
    def current_stats(self) -> dict[str, Any]:
        """Stats now: rates since the last call, latency percentiles, queue depths, drops."""
        return self.stats.snapshot(
            device_id=self.config.device_id,
            frame_queue=self._frames.qsize(),
            result_queue=self._results.qsize(),
            dropped_frames=self.stats.frames_dropped + self.source.dropped_frames,
            frames_oversized=self.stats.frames_oversized + self.source.oversized_files,
        )

    def report_stats(self) -> dict[str, Any]:
        """Log the stats and hand them to the publisher."""
        stats = self.current_stats()
        log.info("stats: %.1f fps, %.1f tiles/s, latency p50/p95/p99 %s/%s/%s ms, queues %d/%d, dropped %d, alerts %d",
                 stats["fps"], stats["tiles_per_s"], stats["latency_ms_p50"], stats["latency_ms_p95"],
                 stats["latency_ms_p99"], stats["frame_queue"], stats["result_queue"], stats["dropped_frames"],
                 stats["alerts"])
        try:
            self.publisher.publish_stats(stats)
        except Exception:
            log.exception("publisher failed to take the stats")
        return stats

    def run(self, stop: threading.Event | None = None) -> dict[str, Any]:
        """Process frames until the source ends or ``stop`` is set; finish frames in flight; return final stats."""
        stop = stop or threading.Event()
        self.stats = PipelineStats()
        self._done = threading.Event()
        self._give_up = threading.Event()
        self._next_stats_s = time.monotonic() + self.config.stats_interval_s
        capture = threading.Thread(target=self._capture, args=(stop,), name="edge-capture", daemon=True)
        post = threading.Thread(target=self._post, name="edge-post", daemon=True)
        watcher = threading.Thread(target=self._close_source_on_stop, args=(stop,), name="edge-stop", daemon=True)
        post.start()
        capture.start()
        watcher.start()
        try:
            self._infer_loop()
        except BaseException as exc:
            self._failure = self._failure or exc
            stop.set()
            log.exception("inference failed")
            while capture.is_alive():  # unblock a capture thread waiting for room
                try:
                    self._frames.get(timeout=0.1)
                except queue.Empty:
                    pass
        finally:
            self._results.put(_END)
            capture.join()
            post.join()
            self._done.set()
            watcher.join()
        final = self.report_stats()
        if self._failure is not None:
            raise PipelineError(f"pipeline stopped: {self._failure}") from self._failure
        return final

    def _close_source_on_stop(self, stop: threading.Event) -> None:
        """Close the source when ``stop`` is set (a live source may be blocked waiting for a camera);
        give up inference of frames still in flight ``source.shutdown_grace_s`` later."""
        while not self._done.is_set():
            if stop.wait(0.2):
                self.source.close()  # ends the source's iteration after the frame it is on
                if not self._done.wait(self.config.source.shutdown_grace_s):
                    self._give_up.set()
                return
