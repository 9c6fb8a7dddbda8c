"""Config: one typed tree from TOML + flags; errors name the file, the field path and the expectation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edge.config import ConfigError, EdgeConfig, load_config

EXAMPLE = Path(__file__).resolve().parents[1] / "deploy" / "edge.example.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edge.toml"
    path.write_text(text)
    return path


def test_defaults_work_without_a_file() -> None:
    cfg = load_config()
    assert isinstance(cfg, EdgeConfig) and cfg.mqtt is None and cfg.model.backend == "auto"
    assert cfg.device_id and "/" not in cfg.device_id


def test_file_then_set_then_flags_override_in_that_order(tmp_path: Path) -> None:
    path = write(tmp_path, 'device_id = "cam7"\n[source]\nuri = "a.mp4"\nqueue_size = 8\n[model]\npath = "m.onnx"\n')
    cfg = load_config(path, ["source.queue_size=2", "source.loop=true", "tiling.overlap=32", "source.uri=b.mp4"],
                      source="c.mp4", broker="mqtt://broker:1884", device_id=None)
    assert cfg.device_id == "cam7"
    assert (cfg.source.uri, cfg.source.queue_size, cfg.source.loop) == ("c.mp4", 2, True)
    assert cfg.tiling.overlap == 32
    assert cfg.mqtt is not None and cfg.mqtt.broker_uri == "mqtt://broker:1884" and cfg.mqtt.qos == 1


def test_errors_name_the_file_and_every_bad_field(tmp_path: Path) -> None:
    path = write(tmp_path, '[source]\nqueue_size = 0\n[tiling]\ntile = 500\n[mqtt]\nbroker_uri = "tcp://x"\nqos = 0\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = str(info.value)
    assert str(path) in text
    assert "source.queue_size: Input should be greater than or equal to 1 (got 0)" in text
    assert "tiling.tile: must be a multiple of 16" in text
    assert "mqtt.broker_uri: must start with mqtt:// or mqtts://" in text
    assert "mqtt.qos" in text


def test_a_typo_is_an_error_not_silently_ignored(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"alerts\.cooldown: unknown option"):
        load_config(write(tmp_path, "[alerts]\ncooldown = 5\n"))


def test_cross_field_checks_name_the_section(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"tiling: .*target_gsd_mm_per_px needs gsd_mm_per_px"):
        load_config(None, ["tiling.target_gsd_mm_per_px=0.5"])
    with pytest.raises(ConfigError, match=r"source: .*reconnect_max_s \(1.0\) must be >= reconnect_min_s \(2.0\)"):
        load_config(None, ["source.reconnect_min_s=2", "source.reconnect_max_s=1"])
    with pytest.raises(ConfigError, match=r"device_id: must not contain '/'"):
        load_config(None, device_id="a/b")


def test_missing_file_bad_toml_and_bad_set_syntax(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[source\n"))
    with pytest.raises(ConfigError, match="expected section.key=value"):
        load_config(None, ["source.loop"])


def test_severity_section_maps_onto_the_measure_rules() -> None:
    from edge.severity import SeverityRules

    cfg = load_config(None, ["measure.severity.high_length_px=0", "measure.severity.high_width_px=12"])
    rules = SeverityRules(**cfg.measure.severity.rules_kwargs())
    assert rules.high_length_px is None and rules.high_width_px == 12.0


def test_mqtt_section_builds_the_mqtt_publisher_arguments() -> None:
    cfg = load_config(None, ["mqtt.topic_prefix=roads", "mqtt.keepalive_s=15"], broker="mqtt://127.0.0.1:1")
    import inspect

    from edge.config import MqttConfig
    from edge.mqtt import MqttPublisher

    assert inspect.signature(MqttPublisher).parameters["config"].annotation in (MqttConfig, "MqttConfig")
    assert cfg.mqtt is not None and cfg.mqtt.topic_prefix == "roads" and cfg.mqtt.tls.ca_file is None


def test_the_example_config_is_valid() -> None:
    if not EXAMPLE.is_file():
        pytest.skip(f"{EXAMPLE} not written yet")
    cfg = load_config(EXAMPLE)
    assert cfg.source.uri and cfg.model.path


def _field_paths(model: type, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], str]]:
    """(section path, field name) of every option of the config tree, sections included as their parent's."""
    from pydantic import BaseModel

    out = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        nested = [a for a in (getattr(annotation, "__args__", None) or (annotation,))
                  if isinstance(a, type) and issubclass(a, BaseModel)]
        if nested:
            out += _field_paths(nested[0], (*prefix, name))
        else:
            out.append((prefix, name))
    return out


def test_every_config_option_is_documented_in_the_example() -> None:
    """deploy/edge.example.toml names every option of EdgeConfig (set, or commented out) in its section."""
    from edge.config import EdgeConfig

    section: tuple[str, ...] = ()
    seen: set[tuple[tuple[str, ...], str]] = set()
    for raw in EXAMPLE.read_text(encoding="utf-8").splitlines():
        line = raw.strip().lstrip("#").strip()
        header = re.match(r"^\[([\w.]+)\]", line)
        if header and not raw.strip().startswith("#"):
            section = tuple(header.group(1).split("."))
            continue
        key = re.match(r"^(\w+)\s*=", line)
        if key:
            seen.add((section, key.group(1)))
    missing = [".".join((*s, f)) for s, f in _field_paths(EdgeConfig) if (s, f) not in seen]
    assert not missing, f"options missing from {EXAMPLE}: {missing}"


def test_the_config_imports_no_runtime_module() -> None:
    """Reading a configuration must not pull in measurement, MQTT or OpenCV code (layering, start-up cost):
    the defaults it needs live in pure modules."""
    import subprocess
    import sys

    code = ("import sys, edge.config; print(sorted(m for m in sys.modules if m.startswith('edge')), "
            "'cv2' in sys.modules, 'numpy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[1]).stdout.strip()
    assert out == "['edge', 'edge.config', 'edge.mqtt_names', 'edge.severity'] False False", out
