"""The daemon end to end on a real ONNX model (real onnxruntime) and real image/video files."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from drawn_cracks import crack_path, path_length
from edge_helpers import crack_ends, crack_image, darkness_model, write_video

from contract.tiling import tile_grid
from edge.alerts import validate_alert
from edge.config import EdgeConfig, SourceConfig, load_config
from edge.daemon import build_pipeline, run_daemon
from edge.pipeline import PipelineError
from edge.publish import LogPublisher
from edge.sequence import SequenceCounter
from edge.sources import CaptureSource


def make_config(tmp_path: Path, source: Path, **sets: object) -> EdgeConfig:
    model = darkness_model(tmp_path / "model.onnx", input_size=64)
    overrides = [
        f"source.uri={source}", f"model.path={model}", "tiling.overlap=16", "model.batch_size=4",
        f"alerts.snapshot_dir={tmp_path / 'snaps'}", f"alerts.state_path={tmp_path / 'state.json'}",
        "alerts.cooldown_s=0", "stats_interval_s=3600", "device_id=cam-test",
    ]
    overrides += [f"{k}={v}" for k, v in sets.items()]
    return load_config(None, overrides)


def folder_of(tmp_path: Path, images: dict[str, np.ndarray]) -> Path:
    folder = tmp_path / "frames"
    folder.mkdir(exist_ok=True)
    for name, image in images.items():
        cv2.imwrite(str(folder / name), image)
    return folder


def test_alerts_for_a_crack_and_none_for_a_blank_frame(tmp_path: Path) -> None:
    folder = folder_of(tmp_path, {
        "a_crack.png": crack_image(120, 160, crack=True, seed=1),
        "b_blank.png": crack_image(120, 160, crack=False, seed=2),
        "c_crack.png": crack_image(120, 160, crack=True, seed=3),
    })
    publisher = LogPublisher(stream=open(tmp_path / "alerts.jsonl", "w"))  # noqa: SIM115 - closed by the daemon
    stats = run_daemon(make_config(tmp_path, folder), publisher=publisher)
    assert stats["frames"] == 3 and stats["errors"] == 0
    alerts = publisher.alerts
    path = crack_path(*crack_ends(120, 160))  # the crack drawn into every crack_image
    (left, top), (right, bottom) = path.min(axis=0), path.max(axis=0)
    assert [a["frame_index"] for a in alerts] == [0, 2]  # the blank frame (index 1) raised nothing
    for alert in alerts:
        assert validate_alert(alert) == []
        assert alert["device_id"] == "cam-test" and alert["source"] == str(folder)
        assert alert["frame_size"] == {"width": 160, "height": 120}
        assert alert["model"]["name"] == "darkness-test" and alert["model"]["threshold"] == 0.5
        assert len(alert["cracks"]) == 1  # one crooked crack across several 64-px tiles: ONE crack
        crack = alert["cracks"][0]
        x, y, w, h = crack["bbox"]
        assert left - 5 <= x <= left + 2 and top - 5 <= y <= top + 2
        assert right - left - 5 <= w <= right - left + 10 and bottom - top - 5 <= h <= bottom - top + 7
        assert crack["length_px"] == pytest.approx(path_length(path), rel=0.1)
        assert 2.0 <= crack["max_width_px"] <= 6.0
        assert Path(alert["snapshot"]["path"]).is_file()
    assert [a["sequence"] for a in alerts] == [0, 1]
    lines = (tmp_path / "alerts.jsonl").read_text().splitlines()
    assert sum('"type":"alert"' in line for line in lines) == 2 and '"type":"stats"' in lines[-1]


def test_sequence_numbers_continue_after_a_restart(tmp_path: Path) -> None:
    folder = folder_of(tmp_path, {"a.png": crack_image(seed=1)})
    config = make_config(tmp_path, folder)
    first, second = LogPublisher(stream=open(tmp_path / "1.jsonl", "w")), LogPublisher(stream=open(tmp_path / "2.jsonl", "w"))  # noqa: SIM115
    run_daemon(config, publisher=first)
    run_daemon(config, publisher=second)
    assert [a["sequence"] for a in first.alerts + second.alerts] == [0, 1]
    assert SequenceCounter(tmp_path / "state.json").take() == 2


def test_video_file_frames_of_several_tiles_are_batched_and_none_dropped(tmp_path: Path) -> None:
    frames = [crack_image(100, 150, crack=i % 3 != 1, seed=i) for i in range(9)]
    video = write_video(tmp_path / "clip.avi", frames)
    config = make_config(tmp_path, video, **{"source.queue_size": 2, "alerts.snapshot_dir": '""'})
    seen: list[tuple[int, bool]] = []
    pipeline = build_pipeline(config, publisher=LogPublisher(stream=open(tmp_path / "a.jsonl", "w")),  # noqa: SIM115
                              on_frame=lambda o: seen.append((o.frame.index, bool(o.measurement.cracks))))
    stats = pipeline.run()
    assert [i for i, _ in seen] == list(range(9))  # every frame, in order
    assert [c for _, c in seen] == [i % 3 != 1 for i in range(9)]
    assert stats["dropped_frames"] == 0 and stats["frames"] == 9
    assert pipeline.stats.tiles == 9 * 6  # 100×150 in 64-px tiles, overlap 16: 2 × 3 tiles per frame
    assert stats["latency_ms_p50"] is not None and stats["fps"] > 0


class StopDuringInference:
    """A real backend wrapper that sets the stop event while frame `at` is inside infer()."""

    def __init__(self, backend, stop: threading.Event, at_call: int) -> None:
        self.backend, self.stop, self.at_call, self.calls = backend, stop, at_call, 0
        self.metadata, self.input_shape, self.precision = backend.metadata, backend.input_shape, backend.precision

    def infer(self, batch: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.calls == self.at_call:
            self.stop.set()  # SIGTERM arrives while this frame is in flight
        return self.backend.infer(batch)


def test_stop_finishes_the_frame_in_flight_and_ends_an_endless_source(tmp_path: Path) -> None:
    folder = folder_of(tmp_path, {f"{i}.png": crack_image(64, 64, seed=i) for i in range(3)})
    config = make_config(tmp_path, folder, **{"source.loop": "true", "model.batch_size": 1, "source.queue_size": 1})
    pipeline = build_pipeline(config, publisher=LogPublisher(stream=open(tmp_path / "a.jsonl", "w")))  # noqa: SIM115
    stop = threading.Event()
    pipeline.backend = StopDuringInference(pipeline.backend, stop, at_call=5)
    done: list[int] = []
    pipeline.on_frame = lambda o: done.append(o.frame.index)
    stats = pipeline.run(stop)  # a looping folder never ends by itself
    assert stop.is_set()
    assert 5 in done  # the frame being inferred when stop was set was finished
    assert done == list(range(len(done)))  # and every frame captured before it, in order
    assert pipeline.stats.frames_captured == stats["frames"] == len(done)  # nothing left half-done
    assert len(done) <= 5 + 1 + 1 + 1  # at most: in flight + the queue + the one being captured


def test_live_source_back_pressure_drops_oldest_and_is_counted(tmp_path: Path) -> None:
    video = write_video(tmp_path / "live.avi", [crack_image(64, 64, crack=False, seed=i) for i in range(40)])
    config = make_config(tmp_path, video, **{"source.queue_size": 1, "model.batch_size": 1})
    pipeline = build_pipeline(config, publisher=LogPublisher(stream=open(tmp_path / "a.jsonl", "w")))  # noqa: SIM115
    gate = threading.Event()
    release_after = threading.Event()
    live = CaptureSource(lambda: cv2.VideoCapture(str(video)), "live", live=True,
                         config=SourceConfig(queue_size=1, reconnect_min_s=60, reconnect_max_s=60))
    pipeline.source = live
    inner = pipeline.backend

    class SlowUntilRead:  # the consumer blocks (on an event, not a sleep) until the reader read everything
        metadata, input_shape, precision = inner.metadata, inner.input_shape, inner.precision

        def infer(self, batch: np.ndarray) -> np.ndarray:
            if not gate.is_set():
                gate.set()
                assert live.wait_frames_read(40, timeout_s=30)
                release_after.set()
            return inner.infer(batch)

    pipeline.backend = SlowUntilRead()
    stop = threading.Event()
    indices: list[int] = []

    def on_frame(outcome) -> None:
        indices.append(outcome.frame.index)
        if outcome.frame.index == 39:
            stop.set()

    pipeline.on_frame = on_frame
    stats = pipeline.run(stop)
    assert release_after.is_set() and indices[-1] == 39
    assert indices == sorted(indices) and len(indices) < 40
    assert stats["dropped_frames"] == 40 - len(indices)  # every frame not processed is counted as dropped


def test_wrong_tile_size_is_refused_with_the_setting(tmp_path: Path) -> None:
    folder = folder_of(tmp_path, {"a.png": crack_image()})
    config = make_config(tmp_path, folder, **{"tiling.tile": 128})
    with pytest.raises(Exception, match=r"tiling.tile = 128 but the model takes 64×64 tiles"):
        build_pipeline(config, publisher=LogPublisher())


@pytest.mark.parametrize("oversize", ["downscale", "reject"])
def test_frames_above_max_frame_pixels_are_downscaled_or_rejected_with_a_warning(
    tmp_path: Path, oversize: str, caplog
) -> None:
    folder = folder_of(tmp_path, {"big.png": crack_image(240, 320, crack=True, seed=1),
                                  "small.png": crack_image(60, 80, crack=True, seed=2)})
    config = make_config(tmp_path, folder, **{"source.max_frame_pixels": 19200, "source.oversize": f"'{oversize}'",
                                              "model.batch_size": 1})
    publisher = LogPublisher(stream=open(tmp_path / "a.jsonl", "w"))  # noqa: SIM115 - closed by the daemon
    stats = run_daemon(config, publisher=publisher)
    assert stats["frames_oversized"] == 1 and stats["errors"] == 0
    sizes = [a["frame_size"] for a in publisher.alerts]
    if oversize == "downscale":
        assert stats["frames"] == 2
        assert sizes == [{"width": 160, "height": 120}, {"width": 80, "height": 60}]  # 320x240 -> 19,200 px
        assert any("downscaled to 160x120" in r.getMessage() for r in caplog.records)
    else:
        assert stats["frames"] == 1 and sizes == [{"width": 80, "height": 60}]
        # an image file is measured from its header and skipped before it is decoded
        assert any("without decoding it" in r.getMessage() and "76800 px" in r.getMessage() for r in caplog.records)


def test_a_one_channel_model_is_refused_at_start_with_the_reason(tmp_path: Path) -> None:
    folder = folder_of(tmp_path, {"a.png": crack_image(seed=1)})
    config = make_config(tmp_path, folder)
    darkness_model(Path(config.model.path), input_size=64, channels=1)
    with pytest.raises(PipelineError, match=r"input has 1 channel\(s\) but the edge pipeline feeds 3-channel RGB"):
        build_pipeline(config, publisher=LogPublisher(stream=open(tmp_path / "a.jsonl", "w")))  # noqa: SIM115


def test_a_graph_whose_input_size_disagrees_with_its_metadata_is_refused(tmp_path: Path) -> None:
    folder = folder_of(tmp_path, {"a.png": crack_image(seed=1)})
    config = make_config(tmp_path, folder)
    darkness_model(Path(config.model.path), input_size=64, graph_size=32)
    with pytest.raises(PipelineError, match="graph input is 32×32 but its metadata says input_size 64"):
        build_pipeline(config, publisher=LogPublisher(stream=open(tmp_path / "a.jsonl", "w")))  # noqa: SIM115


def test_a_stop_abandons_inference_still_running_after_the_grace_period(tmp_path: Path, caplog) -> None:
    """A frame of many tiles on a slow backend: SIGTERM (the stop event) must not wait for all of them."""
    folder = folder_of(tmp_path, {"a.png": crack_image(480, 640, seed=1)})
    config = make_config(tmp_path, folder, **{"model.batch_size": 1, "source.shutdown_grace_s": 0.3})
    pipeline = build_pipeline(config, publisher=LogPublisher(stream=open(tmp_path / "a.jsonl", "w")))  # noqa: SIM115
    inner, stop, batches = pipeline.backend, threading.Event(), []

    class SlowAfterStop:  # each batch takes 0.1 s of (simulated) compute once the stop was requested
        metadata, input_shape, precision = inner.metadata, inner.input_shape, inner.precision

        def infer(self, batch: np.ndarray) -> np.ndarray:
            batches.append(len(batch))
            if len(batches) == 1:
                stop.set()  # the stop request arrives while the first frame is being inferred
            if stop.is_set():
                threading.Event().wait(0.1)
            return inner.infer(batch)

    pipeline.backend = SlowAfterStop()
    with caplog.at_level(logging.WARNING):
        stats = pipeline.run(stop)
    tiles = len(tile_grid(480, 640, 64, 16).origins)
    assert stats["frames_abandoned"] == 1 and stats["frames"] == 0
    assert len(batches) < tiles / 4, f"{len(batches)} of {tiles} batches ran after a 0.3 s grace"
    assert any("abandoned" in r.getMessage() for r in caplog.records)
