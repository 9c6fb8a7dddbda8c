"""``python -m edge demo``: the whole chain on the bundled sample images, no broker, no GPU.

Runs source (edge/assets/samples) -> tiles -> onnxruntime (edge/assets/demo_model.onnx, or
``--model``) -> stitch -> measure -> alert policy -> LogPublisher, writes an overlay JPEG of every
frame (crack mask tinted, boxes labelled) and the alerts as JSON lines into ``--out``, and prints
one readable line per frame.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TextIO

from edge.config import EdgeConfig, load_config
from edge.daemon import build_pipeline
from edge.pipeline import FrameOutcome
from edge.publish import LogPublisher
from edge.snapshots import render_overlay

ASSETS = Path(__file__).resolve().parent / "assets"
SAMPLES = ASSETS / "samples"
DEMO_MODEL = ASSETS / "demo_model.onnx"

log = logging.getLogger("edge.demo")


class DemoError(RuntimeError):
    """The demo cannot run (no model); the message says how to get one."""


def demo_config(out: Path, model: Path, source: Path = SAMPLES, backend: str = "auto") -> EdgeConfig:
    """The daemon configuration the demo runs with: every sample once, every crack alerted, files under ``out``."""
    return load_config(None, [
        "device_id=demo",
        f"source.uri={json.dumps(str(source))}",
        f"model.path={json.dumps(str(model))}",
        f"model.backend={backend}",
        "model.batch_size=4",
        "alerts.cooldown_s=0",
        f"alerts.snapshot_dir={json.dumps(str(out / 'snapshots'))}",
        f"alerts.state_path={json.dumps(str(out / 'state.json'))}",
        "stats_interval_s=3600",
    ])


def describe(outcome: FrameOutcome) -> str:
    """One line per frame: name, cracks found, severity, widest crack, alert sequence."""
    m = outcome.measurement
    name = outcome.frame.name or f"frame {outcome.frame.index}"
    if not m.cracks:
        return f"{name:<45} no crack"
    widest = max(m.cracks, key=lambda c: c.max_width_px)
    alert = f"alert #{outcome.alert['sequence']}" if outcome.alert else "no alert (policy)"
    return (f"{name:<45} {len(m.cracks):>3} crack(s), severity {m.severity:<6} coverage {m.coverage:6.2%}, "
            f"widest {widest.max_width_px:.1f} px, longest {max(c.length_px for c in m.cracks):.0f} px -> {alert}")


def run_demo(out: str | os.PathLike = "demo_out", *, model: str | os.PathLike | None = None,
             source: str | os.PathLike | None = None, stream: TextIO | None = None) -> dict:
    """Run the demo; return the final stats (with ``alerts`` and ``frames``). Prints progress to ``stream``."""
    out = Path(out)
    model_path = Path(model) if model else DEMO_MODEL
    if not model_path.is_file():
        raise DemoError(
            f"demo model {model_path} not found: pass --model <file.onnx> (export one with "
            "`python -m export.onnx --checkpoint runs/<run>/best.pt --out model.onnx`)"
        )
    overlays = out / "overlays"
    overlays.mkdir(parents=True, exist_ok=True)
    state = out / "state.json"
    state.unlink(missing_ok=True)  # numbering starts at 0 on every demo run
    lines: list[str] = []

    def on_frame(outcome: FrameOutcome) -> None:
        jpeg = outcome.snapshot_jpeg or render_overlay(outcome.image, outcome.measurement.mask,
                                                       outcome.measurement.cracks)
        stem = Path(outcome.frame.name or f"frame_{outcome.frame.index:05d}").stem
        (overlays / f"{stem}.jpg").write_bytes(jpeg)
        lines.append(describe(outcome))
        print(lines[-1], file=stream, flush=True)

    config = demo_config(out, model_path, Path(source) if source else SAMPLES)
    with open(out / "alerts.jsonl", "w", encoding="utf-8") as alerts_file:
        publisher = LogPublisher(stream=alerts_file)
        pipeline = build_pipeline(config, publisher=publisher, on_frame=on_frame)
        try:
            flips = pipeline.flips
            print(f"model {model_path.name} ({pipeline.backend.name}, {pipeline.backend.precision}, "
                  f"threshold {pipeline.threshold:.2f}" + (f", {flips} mirrored passes averaged" if flips > 1 else "")
                  + f"), samples {config.source.uri}", file=stream, flush=True)
            stats = pipeline.run()
        finally:
            pipeline.source.close()
            publisher.close()
    print(f"{stats['frames']} frames, {stats['alerts']} alerts; overlays in {overlays}, alerts in "
          f"{out / 'alerts.jsonl'}", file=stream, flush=True)
    return stats
