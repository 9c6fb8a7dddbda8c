"""The CLI: `python -m edge --help`, `run` on a real ONNX model, SIGTERM handling, config errors, demo."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import cv2
from edge_helpers import crack_image, darkness_model

from edge.__main__ import EXIT_CONFIG, main
from edge.demo import SAMPLES, run_demo

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def test_help_explains_every_flag_with_its_default(capsys) -> None:
    for argv in (["--help"], ["run", "--help"], ["demo", "--help"]):
        try:
            main(argv)
        except SystemExit as exc:
            assert exc.code == 0
    text = capsys.readouterr().out
    for flag in ("--config", "--set", "--source", "--model", "--backend", "--device-id", "--broker", "--out"):
        assert flag in text
    assert text.count("(default:") >= 9


def test_config_error_exits_2_and_names_the_field(tmp_path: Path, capsys) -> None:
    path = tmp_path / "edge.toml"
    path.write_text("[source]\nqueue_size = -1\n")
    assert main(["run", "--config", str(path)]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert f"{path}: source.queue_size" in err


def test_run_prints_alerts_as_json_lines(tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), crack_image(seed=1))
    cv2.imwrite(str(folder / "b.png"), crack_image(crack=False, seed=2))
    model = darkness_model(tmp_path / "m.onnx", input_size=128)
    result = subprocess.run(
        [sys.executable, "-m", "edge", "run", "--source", str(folder), "--model", str(model), "--device-id", "cli",
         "--set", f"alerts.state_path={json.dumps(str(tmp_path / 's.json'))}",
         "--set", f"alerts.snapshot_dir={json.dumps(str(tmp_path / 'snaps'))}"],
        cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    alerts = [r for r in records if r["type"] == "alert"]
    assert len(alerts) == 1 and alerts[0]["device_id"] == "cli" and alerts[0]["frame_index"] == 0
    assert records[-1]["type"] == "stats" and records[-1]["frames"] == 2
    assert "stopped after 2 frames, 1 alerts" in result.stderr


def test_sigterm_stops_an_endless_source_cleanly(tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), crack_image(seed=1))
    model = darkness_model(tmp_path / "m.onnx", input_size=128)
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge", "run", "--source", str(folder), "--model", str(model),
         "--set", "source.loop=true", "--set", "alerts.snapshot_dir=''", "--set", "alerts.cooldown_s=0",
         "--set", f"alerts.state_path={json.dumps(str(tmp_path / 's.json'))}"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()  # blocks until the daemon published its first alert
    assert json.loads(first)["type"] == "alert"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "SIGTERM: finishing the frame in flight" in err and "stopped after" in err


def test_demo_runs_the_chain_on_the_bundled_samples(tmp_path: Path, capsys) -> None:
    model = darkness_model(tmp_path / "m.onnx", input_size=128)  # any ONNX model following the contract
    stats = run_demo(tmp_path / "out", model=model)
    samples = sorted(p.stem for p in SAMPLES.iterdir() if p.suffix == ".jpg")
    assert len(samples) >= 5 and stats["frames"] == len(samples)
    assert sorted(p.stem for p in (tmp_path / "out" / "overlays").iterdir()) == samples
    alerts = [json.loads(line) for line in (tmp_path / "out" / "alerts.jsonl").read_text().splitlines()]
    assert sum(a["type"] == "alert" for a in alerts) == stats["alerts"] >= 1
    printed = capsys.readouterr().out
    assert all(name in printed for name in samples)


def test_demo_without_a_model_says_how_to_get_one(tmp_path: Path, capsys) -> None:
    assert main(["demo", "--out", str(tmp_path), "--model", str(tmp_path / "none.onnx")]) == 1
    assert "pass --model" in capsys.readouterr().err
