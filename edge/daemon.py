"""The daemon's wiring: the source, backend, publisher and snapshot store that one config names, run once.

``run_daemon(config, stop)`` is what ``python -m edge run`` calls; ``build_pipeline`` is the same
wiring without running (the demo and the benchmarks use it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from contract.backends import load_backend
from contract.metadata import file_sha256
from edge.config import EdgeConfig
from edge.geo import FrameLocator
from edge.pipeline import FrameOutcome, Pipeline
from edge.publish import LogPublisher, Publisher
from edge.snapshots import SnapshotStore
from edge.sources import open_source


def make_publisher(config: EdgeConfig) -> Publisher:
    """MqttPublisher when an [mqtt] section is configured (imported only then), else LogPublisher."""
    if config.mqtt is None:
        return LogPublisher()
    from edge.mqtt import MqttPublisher  # lazy: paho is only needed for MQTT

    return MqttPublisher(config.device_id, config.mqtt)


def build_pipeline(
    config: EdgeConfig,
    *,
    publisher: Publisher | None = None,
    on_frame: Callable[[FrameOutcome], None] | None = None,
) -> Pipeline:
    """Open the source, load the backend, make the publisher and snapshot store named by ``config``."""
    backend = load_backend(
        config.model.path, config.model.backend, providers=config.model.providers,
        batch_size=config.model.batch_size, intra_op_threads=config.model.intra_op_threads or None,
        allow_spinning=config.model.ort_allow_spinning, device=config.model.device, flips=config.model.flips,
    )
    source = open_source(config.source)
    snapshots = None
    if config.alerts.snapshot_dir:
        snapshots = SnapshotStore(config.alerts.snapshot_dir, int(config.alerts.snapshot_max_mb * 1024 * 1024))
    return Pipeline(config, source=source, backend=backend, publisher=publisher or make_publisher(config),
                    snapshots=snapshots, model_sha256=file_sha256(config.model.path), on_frame=on_frame,
                    locator=FrameLocator.from_config(config).start())


def run_daemon(config: EdgeConfig, stop: threading.Event | None = None, *, publisher: Publisher | None = None) -> dict:
    """Build the pipeline, run it until the source ends or ``stop``, close everything; return final stats."""
    pipeline = build_pipeline(config, publisher=publisher)
    try:
        stats = pipeline.run(stop)
    finally:
        pipeline.source.close()
        pipeline.locator.close()
        pipeline.publisher.close()
        close = getattr(pipeline.backend, "close", None)
        if close is not None:
            close()
    backlog = pipeline.publisher.backlog()
    return {**stats, "alerts_queued": backlog.alerts, "alerts_queued_in": backlog.where}
