"""Relative file paths in a config file resolve against the file's folder, not the working directory."""

from __future__ import annotations

import os
from pathlib import Path

from edge.config import load_config


def test_relative_paths_in_a_config_file_are_relative_to_that_file(tmp_path: Path, monkeypatch) -> None:
    conf_dir = tmp_path / "etc" / "aelf"
    conf_dir.mkdir(parents=True)
    (conf_dir / "edge.toml").write_text(
        '[source]\nuri = "frames"\n[model]\npath = "../models/m.onnx"\n'
        '[alerts]\nsnapshot_dir = "snaps"\nstate_path = "/var/lib/x/state.json"\n'
        '[mqtt]\nbroker_uri = "mqtts://broker.example:8883"\n[mqtt.outbox]\npath = "outbox.sqlite3"\n[mqtt.tls]\nca_file = "ca.pem"\n'
    )
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(conf_dir / "edge.toml")
    assert Path(config.source.uri) == conf_dir.resolve() / "frames"
    assert Path(os.path.normpath(config.model.path)) == (tmp_path / "etc" / "models" / "m.onnx").resolve()
    assert Path(config.alerts.snapshot_dir) == conf_dir.resolve() / "snaps"
    assert config.alerts.state_path == "/var/lib/x/state.json"  # absolute: unchanged
    assert Path(config.mqtt.outbox.path) == conf_dir.resolve() / "outbox.sqlite3"
    assert Path(config.mqtt.tls.ca_file) == conf_dir.resolve() / "ca.pem"


def test_uris_camera_indexes_and_command_line_paths_are_left_alone(tmp_path: Path) -> None:
    conf = tmp_path / "edge.toml"
    for uri in ("rtsp://cam/stream", "v4l2:///dev/video0", "0", "gst:videotestsrc ! appsink", "csi://0"):
        conf.write_text(f'[source]\nuri = "{uri}"\n')
        assert load_config(conf).source.uri == uri
    conf.write_text('[model]\npath = "in_file.onnx"\n')
    config = load_config(conf, ["model.path=from_cli.onnx"])
    assert config.model.path == "from_cli.onnx"  # a flag is relative to the working directory


def test_a_rejected_value_is_quoted_once() -> None:
    import pytest

    from edge.config import ConfigError

    with pytest.raises(ConfigError) as err:
        load_config(None, broker="foo://broker:1883")
    assert str(err.value).count("foo://broker:1883") == 1
    assert "mqtt.broker_uri: must start with mqtt:// or mqtts:// (got 'foo://broker:1883')" in str(err.value)
