"""``python -m edge``: run the crack-detection daemon, or the demo.

    python -m edge run --config edge.toml [--source URI] [--model FILE] [--set section.key=value ...]
    python -m edge demo [--out DIR] [--model FILE]

Thin on purpose: parse flags, load and validate the config once, install SIGINT/SIGTERM handlers
that set a stop event (the pipeline finishes the frame in flight), call one function.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge.config import EdgeConfig

EXIT_CONFIG = 2  # invalid configuration / arguments
EXIT_RUNTIME = 1  # model, source or runtime failure


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m edge",
        description="AELF U-Net crack detection at the edge: camera/video -> 512x512 tiles -> segmentation -> "
        "crack measurements -> alerts (stdout JSON lines, or MQTT when [mqtt] is configured).",
        epilog="Config reference with every option: deploy/edge.example.toml. Docs: docs/EDGE.md.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{run,demo}")
    run = sub.add_parser("run", help="run the daemon until the source ends or SIGINT/SIGTERM",
                         description="Run the daemon. Flags override the config file; the tree is validated once.")
    run.add_argument("--config", metavar="FILE", help="TOML config file (default: none, built-in defaults)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                     help="override one option, value in TOML syntax, repeatable "
                     "(e.g. --set source.loop=true --set tiling.overlap=32) (default: none)")
    run.add_argument("--source", metavar="URI", help="frame source: video file, image folder, v4l2:///dev/video0, "
                     "USB index, rtsp://..., csi://0, gst:<pipeline> (default: source.uri of the config)")
    run.add_argument("--model", metavar="FILE", help="model file: .onnx, .engine/.plan (+ .json sidecar) or .pt "
                     "(default: model.path of the config)")
    run.add_argument("--backend", choices=["auto", "tensorrt", "onnxruntime", "torch"],
                     help="inference runtime; auto picks by file extension (default: model.backend, auto)")
    run.add_argument("--device-id", metavar="ID", help="this device's id in alerts and MQTT topics "
                     "(default: device_id of the config, else the host name)")
    run.add_argument("--broker", metavar="URI", help="publish over MQTT to mqtt://host:port or mqtts://host:port "
                     "(default: mqtt.broker_uri when [mqtt] is configured, else alerts go to stdout)")
    run.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                     help="log verbosity on stderr (default: logging.level of the config, INFO)")
    demo = sub.add_parser("demo", help="run the whole chain on the bundled sample images (no broker, no GPU)",
                          description="Run the daemon's chain on edge/assets/samples and write overlays + alerts.")
    demo.add_argument("--out", default="demo_out", metavar="DIR",
                      help="folder for overlays/, snapshots/ and alerts.jsonl (default: %(default)s)")
    demo.add_argument("--model", metavar="FILE", help="ONNX model to use (default: edge/assets/demo_model.onnx)")
    demo.add_argument("--source", metavar="URI", help="images/video to run on (default: edge/assets/samples)")
    return parser


def setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # paho's packet log (CONNECT, PUBLISH, PUBACK ...) only when DEBUG is asked for.
    logging.getLogger("edge.mqtt.paho").setLevel(logging.DEBUG if level == "DEBUG" else logging.WARNING)


def delivery_summary(config: EdgeConfig, stats: dict) -> str:
    """The closing line: frames, alerts, and where alerts not yet acknowledged by the broker wait.

    ``stats`` is what ``run_daemon`` returns: its ``alerts_queued`` / ``alerts_queued_in`` come from the
    publisher's own backlog after it closed.
    """
    line = f"stopped after {stats['frames']} frames, {stats['alerts']} alerts"
    if config.mqtt is None:
        return line + " (printed on stdout)"
    queued = stats["alerts_queued"]
    if not queued:
        return line + f"; all delivered to {config.mqtt.broker_uri}"
    return (line + f"; {queued} alert(s) not yet acknowledged by {config.mqtt.broker_uri} are queued in "
            f"{stats['alerts_queued_in']} and are sent at the next start")


def install_stop_handlers(stop: threading.Event) -> None:
    """SIGINT/SIGTERM set ``stop`` (the pipeline finishes the frame in flight); a second signal exits at once."""

    def handler(signum: int, _frame: object) -> None:
        if stop.is_set():
            logging.getLogger("edge").warning("second %s: exiting now", signal.Signals(signum).name)
            raise SystemExit(128 + signum)
        logging.getLogger("edge").info("%s: finishing the frame in flight, then stopping",
                                       signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def files_written(config) -> str:
    """One line saying where the daemon keeps its files (they survive restarts; relative paths are the cwd's)."""
    from pathlib import Path

    places = []
    if config.alerts.snapshot_dir:
        places.append(f"snapshots in {Path(config.alerts.snapshot_dir).resolve()}/")
    places.append(f"alert sequence in {Path(config.alerts.state_path).resolve()}")
    if config.mqtt is not None:
        places.append(f"outbox in {Path(config.mqtt.outbox.path).resolve()}")
    return "files: " + ", ".join(places) + " (set alerts.snapshot_dir, alerts.state_path, mqtt.outbox.path to move them)"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from contract.backends import BackendError
    from edge.config import ConfigError, load_config
    from edge.sources import SourceError

    if args.command == "demo":
        setup_logging("WARNING")
        from edge.demo import DemoError, run_demo

        try:
            run_demo(args.out, model=args.model, source=args.source)
        except (DemoError, BackendError, SourceError, ConfigError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_RUNTIME
        return 0

    try:
        config = load_config(args.config, args.overrides, source=args.source, model=args.model,
                             backend=args.backend, device_id=args.device_id, broker=args.broker)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    setup_logging(args.log_level or config.logging.level)
    from edge.daemon import run_daemon
    from edge.outbox import OutboxError
    from edge.pipeline import PipelineError
    from edge.sequence import SequenceError

    stop = threading.Event()
    install_stop_handlers(stop)
    logging.getLogger("edge").info("%s", files_written(config))
    try:
        stats = run_daemon(config, stop)
    except (BackendError, SourceError, PipelineError, SequenceError, OutboxError, ValueError, ImportError) as exc:
        logging.getLogger("edge").error("%s", exc)
        return EXIT_RUNTIME
    logging.getLogger("edge").info("%s", delivery_summary(config, stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
