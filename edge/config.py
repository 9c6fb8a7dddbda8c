"""The daemon's configuration: one typed tree, loaded from TOML, overridden by flags, validated once.

``load_config(path, overrides)`` returns an :class:`EdgeConfig`; any problem raises one
:class:`ConfigError` whose message names the file, the field path (``source.queue_size``) and what was
expected. Every option has a default that works on a developer laptop, so an empty file is valid
(see deploy/edge.example.toml for every option with a comment).
"""

from __future__ import annotations

import os
import socket
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# Only pure definitions: the configuration is read before (and without) any runtime module.
from contract.metadata import SIDE_MULTIPLE
from edge.mqtt_names import parse_broker_uri, topic_part_problem
from edge.severity import SEVERITY_LEVELS, MaskCleanup, SeverityRules

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10 (pyproject pins tomli there)
    import tomli as tomllib  # type: ignore[no-redef]


_RULES = SeverityRules()  # the severity defaults live in the pure rules dataclass
_CLEANUP = MaskCleanup()  # and the mask clean-up defaults in theirs


class ConfigError(ValueError):
    """The configuration is invalid; the message names the file, the field path and what was expected."""


class _Section(BaseModel):
    """Base of every section: unknown keys are errors (a typo must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SourceConfig(_Section):
    """Where frames come from (edge/sources.py)."""

    uri: str = Field("", description="video file, image folder, v4l2:///dev/video0, USB index, rtsp://, csi://0, gst:...")
    loop: bool = Field(False, description="restart a file/folder source at its end (files only)")
    fps_limit: float = Field(0.0, ge=0, description="read at most this many frames per second, 0 = no limit")
    reconnect_min_s: float = Field(0.5, gt=0, description="first back-off after a live source is lost, seconds")
    reconnect_max_s: float = Field(30.0, gt=0, description="largest back-off between reconnect attempts, seconds")
    queue_size: int = Field(4, ge=1, le=1024, description="frames buffered between capture and inference")
    max_bad_frames: int = Field(25, ge=1, description="a video ends after this many undecodable frames in a row")
    max_frame_pixels: int = Field(
        16_777_216, ge=4096, description="largest frame (width x height) processed as is; default 4096x4096"
    )
    oversize: Literal["downscale", "reject"] = Field(
        "downscale", description="a larger frame is shrunk to max_frame_pixels, or skipped (both logged)"
    )
    max_decode_pixels: int = Field(
        67_108_864, ge=4096,
        description="image files larger than this (read from their header) are skipped before decoding; "
                    "default 8192x8192 (with oversize = reject: max_frame_pixels)",
    )
    shutdown_grace_s: float = Field(
        10.0, ge=0, description="after SIGTERM, frames in flight still not inferred after this are abandoned, s"
    )
    photo_time: Literal["exif", "clock"] = Field(
        "exif", description="image files: capture time from the photo's EXIF (DateTimeOriginal + OffsetTimeOriginal, "
        "else the GPS time stamp; the clock when it has neither) | clock = when it is read"
    )
    photo_utc_offset: str | None = Field(
        None, description="zone of cameras that write DateTimeOriginal without OffsetTimeOriginal, e.g. +02:00"
    )
    start_time: str | None = Field(
        None, description="video file: when its first frame was recorded (ISO 8601 with offset, e.g. "
        "2024-05-03T09:12:00+02:00); frames are stamped with it plus their position in the file"
    )

    @field_validator("photo_utc_offset")
    @classmethod
    def _utc_offset(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                datetime.strptime(value.replace(":", ""), "%z")
            except ValueError:
                raise ValueError(f"must be an offset from UTC like +02:00 or -05:30, got {value!r}") from None
        return value

    @field_validator("start_time")
    @classmethod
    def _aware_time(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                when = datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value)
            except ValueError:
                raise ValueError(f"must be an ISO 8601 time like 2024-05-03T09:12:00+02:00, got {value!r}") from None
            if when.tzinfo is None:
                raise ValueError(f"needs its offset from UTC (e.g. {value}+02:00 or {value}Z)")
        return value

    def start_datetime(self) -> datetime | None:
        """``start_time`` as a timezone-aware datetime (None when unset)."""
        if self.start_time is None:
            return None
        text = self.start_time
        return datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)

    @model_validator(mode="after")
    def _backoff_order(self) -> SourceConfig:
        if self.max_decode_pixels < self.max_frame_pixels:
            raise ValueError(f"max_decode_pixels ({self.max_decode_pixels}) must be >= max_frame_pixels "
                             f"({self.max_frame_pixels}): a frame that may be processed must be decodable")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError(
                f"reconnect_max_s ({self.reconnect_max_s}) must be >= reconnect_min_s ({self.reconnect_min_s})"
            )
        return self


class ModelSection(_Section):
    """Which model file and which runtime (contract/backends/)."""

    path: str = Field("", description=".onnx, .engine/.plan (+ .json sidecar) or .pt checkpoint")
    backend: Literal["auto", "tensorrt", "onnxruntime", "torch"] = "auto"
    providers: list[str] | None = Field(None, description="onnxruntime execution providers, best first")
    batch_size: int = Field(4, ge=1, le=256, description="tiles per backend call (within an engine's profile)")
    threshold: float | None = Field(None, gt=0, lt=1, description="overrides the model metadata's threshold")
    intra_op_threads: int = Field(0, ge=0, description="onnxruntime/torch CPU threads, 0 = runtime default")
    ort_allow_spinning: bool = Field(
        False, description="onnxruntime threads busy-wait between operators (faster alone, slower beside post-processing)"
    )
    device: str = Field("cpu", description="torch backend device: cpu, cuda, cuda:1")
    flips: Literal[1, 2, 4] = Field(
        4, description="passes per tile, each mirrored, their probabilities averaged (contract/backends/flips.py): "
        "1 as is; 2 + left-right; 4 + upside-down and both. Fewer false alerts on straight joints for that many "
        "times the inference (docs/EDGE.md)",
    )


class TilingConfig(_Section):
    """How frames are cut into model-sized tiles (contract/tiling.py)."""

    tile: int | None = Field(None, gt=0, description="tile side in px, default: the model's input size")
    overlap: int | None = Field(
        None, ge=0, description="overlap between neighbouring tiles, px; default: an eighth of the tile, at most 64"
    )
    gsd_mm_per_px: float | None = Field(None, gt=0, description="camera ground sampling distance, mm per pixel")
    target_gsd_mm_per_px: float | None = Field(None, gt=0, description="resize frames to this GSD before tiling")

    @field_validator("tile")
    @classmethod
    def _multiple_of_16(cls, value: int | None) -> int | None:
        if value is not None and value % SIDE_MULTIPLE:
            raise ValueError(f"must be a multiple of {SIDE_MULTIPLE} (the U-Net halves it 4 times)")
        return value

    @model_validator(mode="after")
    def _target_needs_gsd(self) -> TilingConfig:
        if self.target_gsd_mm_per_px is not None and self.gsd_mm_per_px is None:
            raise ValueError("target_gsd_mm_per_px needs gsd_mm_per_px (the camera's own GSD)")
        if self.tile is not None and self.overlap is not None and self.overlap >= self.tile:
            raise ValueError(f"overlap ({self.overlap}) must be smaller than tile ({self.tile})")
        return self


class SeverityConfig(_Section):
    """Width/length limits of the severity classes: the fields, defaults and checks of
    edge/severity.py's :class:`SeverityRules` (its dataclass is the one home of both).

    Millimetre limits apply when tiling.gsd_mm_per_px is set, else the ``*_px`` limits; a length
    limit of 0 disables that length rule.
    """

    medium_width_mm: float = Field(_RULES.medium_width_mm, description="max width >= this is medium, mm")
    high_width_mm: float = Field(_RULES.high_width_mm, description="max width >= this is high, mm")
    medium_length_mm: float = Field(_RULES.medium_length_mm, ge=0, description="length >= this is medium, mm")
    high_length_mm: float = Field(_RULES.high_length_mm, ge=0, description="length >= this is high, mm")
    medium_width_px: float = Field(_RULES.medium_width_px, description="without a GSD: medium width, px")
    high_width_px: float = Field(_RULES.high_width_px, description="without a GSD: high width, px")
    medium_length_px: float = Field(_RULES.medium_length_px, ge=0, description="without a GSD: medium length, px")
    high_length_px: float = Field(_RULES.high_length_px, ge=0, description="without a GSD: high length, px")

    @model_validator(mode="after")
    def _valid_rules(self) -> SeverityConfig:
        self.rules()  # SeverityRules checks its own limits; its message names the field
        return self

    def rules_kwargs(self) -> dict[str, float | None]:
        """Keyword arguments for ``edge.severity.SeverityRules`` (0 length limits become None)."""
        data: dict[str, float | None] = dict(self.model_dump())
        for key in ("medium_length_mm", "high_length_mm", "medium_length_px", "high_length_px"):
            data[key] = data[key] or None
        return data

    def rules(self) -> SeverityRules:
        """The pure rules object that ``measure_cracks`` applies."""
        return SeverityRules(**self.rules_kwargs())


class MeasureConfig(_Section):
    """Mask clean-up and crack measurement (edge/measure.py)."""

    min_area_px: int = Field(_CLEANUP.min_area_px, ge=1, description="cracks smaller than this many pixels are ignored")
    min_length_px: float = Field(
        _CLEANUP.min_length_px, ge=0, description="pieces with a shorter skeleton are specks, not cracks, px (0 = off)"
    )
    link_gap_px: int = Field(_CLEANUP.link_gap_px, ge=0, description="pieces closer than this are one crack, px (0 = off)")
    open_px: int = Field(_CLEANUP.open_px, ge=0, description="morphological opening of the mask, px (0 = off)")
    close_px: int = Field(_CLEANUP.close_px, ge=0, description="morphological closing of the mask, px (0 = off)")
    straight_min_length_px: float = Field(
        _CLEANUP.straight_min_length_px, ge=0,
        description="pieces made of straight lines at least this long (with shorter ones parallel or perpendicular "
        "to them: joint grids) are joints, not cracks, px (0 = off)",
    )
    straight_min_share: float = Field(
        _CLEANUP.straight_min_share, gt=0, le=1,
        description="share of a piece's centre line on such straight lines that makes it a joint",
    )
    straight_support_ratio: float = Field(
        _CLEANUP.straight_support_ratio, gt=0, le=1,
        description="the straight check also judges a piece by the fainter line it lies in (prob >= threshold x "
        "this); 1 = each piece alone",
    )
    smooth_line_tolerance_px: float = Field(
        _CLEANUP.smooth_line_tolerance_px, ge=0, le=5,
        description="the straight check also drops smooth constant-width curves as long (cables, pipes, kerbs) "
        "whose centre line strays at most this far (px, standard deviation) from a straight line over every "
        "31-px stretch; 0 = straight lines only",
    )
    straight_grid_segment_px: float = Field(
        _CLEANUP.straight_grid_segment_px, ge=0,
        description="on a piece with such long lines, straight stretches at least this long parallel or perpendicular "
        "to them count as line too (joint grids, brick bonds), px (0 = long lines only)",
    )
    severity: SeverityConfig = SeverityConfig()

    def cleanup(self) -> dict[str, Any]:
        """The mask clean-up settings (every field but ``severity``, the :class:`edge.severity.MaskCleanup`
        fields) as keyword arguments of :func:`edge.measure.measure_cracks`."""
        return self.model_dump(exclude={"severity"})


class AlertsConfig(_Section):
    """Which frames raise an alert, and the local snapshots (edge/alerts.py, edge/snapshots.py)."""

    min_severity: str = Field("low", description="low | medium | high: smaller cracks never alert")
    min_coverage: float = Field(0.0, ge=0, le=1, description="fraction of frame pixels that must be crack")
    cooldown_s: float = Field(60.0, ge=0, description="suppress repeats of the same crack for this long, s")
    match_overlap: float = Field(0.5, gt=0, le=1, description="box overlap at which two cracks are the same")
    match_margin_px: float = Field(16.0, ge=0, description="boxes grow by this before the overlap test, px")
    source_cooldown_s: float = Field(0.0, ge=0, description="at most one alert per source this often, s (0 = off)")
    per_photo: bool = Field(
        True, description="image folders: every photo is a new view, alerted on its own cracks (a survey); "
        "false = photos are frames of one scene (a fixed camera's time-lapse)"
    )
    match_distance_m: float = Field(
        1.5, gt=0, description="with positions: two cracks within this distance on the ground are the same, m"
    )
    snapshot_dir: str | None = Field("snapshots", description="JPEG overlays; empty disables them")
    snapshot_max_mb: float = Field(512.0, gt=0, description="oldest snapshots are deleted beyond this, MB")
    state_path: str = Field("edge_state.json", description="alert sequence counter that survives restarts")
    max_tracks_per_source: int = Field(1024, ge=1, description="cracks remembered per source for the cool-down")

    @field_validator("min_severity")
    @classmethod
    def _known_severity(cls, value: str) -> str:
        if value not in SEVERITY_LEVELS:
            raise ValueError(f"must be one of {', '.join(SEVERITY_LEVELS)}")
        return value

    @field_validator("snapshot_dir")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value or None


class GeoConfig(_Section):
    """Where each frame was taken (edge/geo/): the source of positions and how old one may be."""

    source: Literal["auto", "none", "fixed", "exif", "gpsd", "mavlink", "log"] = Field(
        "auto", description="auto (the image file's EXIF GPS where it has one, else none) | none | fixed (lat/lon "
        "below) | exif | gpsd | mavlink | log (a recorded NMEA/GPX file, log_path)"
    )
    log_path: str | None = Field(None, description="log: NMEA 0183 or GPX file recorded beside the video")
    max_age_s: float = Field(2.0, gt=0, description="a position further than this from the capture time is flagged stale, s")
    track_keep_s: float = Field(120.0, gt=0, description="gpsd/MAVLink fixes kept for matching by capture time, s")
    lat: float | None = Field(None, ge=-90, le=90, description="fixed: latitude, degrees (WGS 84)")
    lon: float | None = Field(None, ge=-180, le=180, description="fixed: longitude, degrees (WGS 84)")
    alt_m: float | None = Field(None, description="fixed: altitude above sea level, m")
    heading_deg: float | None = Field(None, ge=0, lt=360, description="fixed: camera heading, degrees from north")
    gpsd_host: str = Field("127.0.0.1", description="gpsd: host")
    gpsd_port: int = Field(2947, ge=1, le=65535, description="gpsd: TCP port")
    mavlink_url: str = Field("udpin:0.0.0.0:14550", description="mavlink: pymavlink connection string")
    mavlink_baud: int = Field(57600, ge=1, description="mavlink: serial baud rate (serial ports only)")

    @model_validator(mode="after")
    def _fixed_needs_position(self) -> GeoConfig:
        if self.source == "fixed" and (self.lat is None or self.lon is None):
            raise ValueError('source = "fixed" needs lat and lon')
        if self.source == "log" and not self.log_path:
            raise ValueError('source = "log" needs log_path (an NMEA or GPX file)')
        return self


class CameraConfig(_Section):
    """Camera geometry for the GSD of each frame (edge/gsd.py); EXIF fills what is unset here."""

    focal_length_mm: float | None = Field(None, gt=0, description="lens focal length, mm (default: EXIF)")
    sensor_width_mm: float | None = Field(None, gt=0, description="sensor width along the image width, mm (default: EXIF)")
    distance_m: float | None = Field(None, gt=0, description="fixed camera-to-surface distance, m (default: the height from geo)")
    ground_alt_m: float | None = Field(None, description="surface altitude above sea level, m, when geo gives only alt_m")
    distance_error_m: float = Field(0.5, ge=0, description="worst-case error of that distance/height, m")
    max_tilt_deg: float = Field(5.0, ge=0, lt=60, description="bound on the camera's tilt from the surface normal when no attitude is known, degrees")


class TlsConfig(_Section):
    """TLS files for mqtts:// (PEM)."""

    ca_file: str | None = Field(None, description="CA bundle that signed the broker's certificate")
    certfile: str | None = Field(None, description="client certificate (mutual TLS)")
    keyfile: str | None = Field(None, description="client private key")


class OutboxConfig(_Section):
    """The durable SQLite outbox of unacknowledged alerts (edge/outbox.py)."""

    path: str = Field("outbox.sqlite3", description="SQLite file (WAL); put it on persistent storage")
    max_alerts: int = Field(10_000, ge=1, description="beyond this, lowest-severity then oldest alerts are dropped")
    max_bytes: int = Field(256 * 1024 * 1024, ge=1, description="payload + snapshot bytes, same drop order, bytes")
    synchronous: Literal["NORMAL", "FULL"] = Field(
        "NORMAL", description="NORMAL survives a process kill; FULL also a power loss (fsync per alert)"
    )
    memory_max_alerts: int = Field(
        1000, ge=0, description="while the file cannot be written, hold at most this many alerts in memory"
    )
    wal_max_bytes: int = Field(
        1024 * 1024, ge=16 * 1024,
        description="write-ahead log size at which it is checkpointed and to which it is truncated, bytes",
    )
    reopen_interval_s: float = Field(
        10.0, gt=0, description="when the file cannot be opened at start, try again this often (alerts wait in memory), s"
    )


class MqttConfig(_Section):
    """MQTT delivery (edge/mqtt.py's MqttPublisher takes this section as it is)."""

    broker_uri: str = Field("mqtt://localhost:1883", description="mqtt://host:port or mqtts://host:port")
    topic_prefix: str = Field("crack", description="first topic level(s): <prefix>/<device_id>/alert")
    client_id: str | None = Field(None, description="default aelf-<device_id>")
    username: str | None = None
    password_file: str | None = Field(None, description="first line is the password (else $AELF_MQTT_PASSWORD)")
    tls: TlsConfig = TlsConfig()
    allow_insecure_credentials: bool = Field(False, description="allow a password over plain mqtt://")
    protocol: Literal["auto", "5", "3.1.1"] = Field(
        "auto", description="auto = MQTT 5, falling back to 3.1.1 when the broker refuses 5"
    )
    keepalive_s: int = Field(30, ge=1, le=65535, description="the broker publishes 'offline' ~1.5x this after a loss")
    qos: Literal[1, 2] = Field(1, description="alert QoS; the outbox deletes an alert on the broker's acknowledgement")
    max_inflight: int = Field(20, ge=1, le=1000, description="alerts sent and not yet acknowledged, at most")
    reconnect_min_s: float = Field(0.5, gt=0, description="first back-off after the broker is lost, seconds")
    reconnect_max_s: float = Field(30.0, gt=0, description="largest back-off; refused alerts are retried this often, s")
    echo_timeout_s: float = Field(
        10.0, gt=0, description="MQTT 3.1.1: an alert counts as accepted when the broker echoes it within this, s"
    )
    stats_interval_s: float = Field(30.0, ge=0, description="publish stats at least this often, 0 = never")
    publish_snapshots: bool = Field(True, description="publish overlay JPEGs on <prefix>/<device>/snapshot/<id>")
    max_payload_bytes: int = Field(256 * 1024, ge=1024, description="larger alerts lose their smallest cracks")
    outbox: OutboxConfig = OutboxConfig()

    @field_validator("broker_uri")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if not value.startswith(("mqtt://", "mqtts://")):
            raise ValueError("must start with mqtt:// or mqtts://")
        parse_broker_uri(value)  # host, port, no credentials in the URI
        return value

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return _topic_level("topic_prefix", value.strip("/"))

    @model_validator(mode="after")
    def _consistent(self) -> MqttConfig:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError(
                f"reconnect_max_s ({self.reconnect_max_s}) must be >= reconnect_min_s ({self.reconnect_min_s})"
            )
        tls_uri = self.broker_uri.startswith("mqtts://")
        for name in ("ca_file", "certfile", "keyfile"):
            if getattr(self.tls, name) is not None and not tls_uri:
                raise ValueError(f"tls.{name} is set but broker_uri {self.broker_uri!r} is not mqtts://")
        if self.tls.keyfile and not self.tls.certfile:
            raise ValueError("tls.keyfile is set without tls.certfile (the client certificate)")
        if self.username and not tls_uri and not self.allow_insecure_credentials:
            raise ValueError(
                f"refusing to send MQTT credentials (user {self.username!r}) over plain TCP to {self.broker_uri}: "
                "use mqtts:// with a CA file, or set allow_insecure_credentials = true on a trusted network"
            )
        return self


def _topic_level(name: str, value: str) -> str:
    problem = topic_part_problem(name, value)
    if problem is not None:
        raise ValueError(problem)
    return value


class LoggingConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


def _default_device_id() -> str:
    """The host name, cleaned of characters MQTT topics cannot carry."""
    name = socket.gethostname() or "edge"
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name)


class EdgeConfig(_Section):
    """The whole daemon configuration (TOML sections of the same names)."""

    device_id: str = Field(default_factory=_default_device_id, min_length=1, max_length=128)
    stats_interval_s: float = Field(30.0, gt=0, description="log (and publish) pipeline stats this often, s")
    source: SourceConfig = SourceConfig()
    model: ModelSection = ModelSection()
    tiling: TilingConfig = TilingConfig()
    measure: MeasureConfig = MeasureConfig()
    alerts: AlertsConfig = AlertsConfig()
    geo: GeoConfig = GeoConfig()
    camera: CameraConfig = CameraConfig()
    mqtt: MqttConfig | None = None
    logging: LoggingConfig = LoggingConfig()

    @field_validator("device_id")
    @classmethod
    def _topic_safe(cls, value: str) -> str:
        return _topic_level("device_id", value)


def format_validation_error(exc: ValidationError, origin: str) -> str:
    """One readable message: each problem as ``<origin>: <field.path>: <reason> (got <value>)``."""
    lines = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"]) or "(top level)"
        reason = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            reason = "unknown option (check the spelling against deploy/edge.example.toml)"
        got = "" if err["type"] in ("missing", "extra_forbidden") else f" (got {err['input']!r})"
        lines.append(f"{origin}: {path}: {reason}{got}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"section.key=value"`` -> (["section", "key"], value); the value is read as TOML, else a string."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected section.key=value (e.g. source.loop=true)")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # bare words are strings: --set source.uri=/data/clip.mp4
    return [p.strip() for p in key.split(".")], value


def _set_path(tree: dict[str, Any], path: list[str], value: Any, item: str) -> None:
    node = tree
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {item!r}: {part!r} is a value, not a section")
        node = child
    node[path[-1]] = value


# Options that name files: relative values in a config file are relative to that file's folder.
PATH_FIELDS = (
    ("source", "uri"), ("model", "path"), ("alerts", "snapshot_dir"), ("alerts", "state_path"),
    ("mqtt", "outbox", "path"), ("mqtt", "password_file"),
    ("mqtt", "tls", "ca_file"), ("mqtt", "tls", "certfile"), ("mqtt", "tls", "keyfile"),
)


def _is_relative_path(value: object) -> bool:
    """True for a relative file path; False for URIs (rtsp://, v4l2://, csi://, gst:), camera indexes, empty."""
    if not isinstance(value, str) or not value or value.isdigit() or "://" in value or value.startswith("gst:"):
        return False
    return not Path(value).expanduser().is_absolute()


def resolve_relative_paths(tree: dict[str, Any], folder: Path) -> None:
    """Make the file paths of a config tree read from a file in ``folder`` relative to it (in place)."""
    for keys in PATH_FIELDS:
        node: Any = tree
        for key in keys[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and _is_relative_path(node.get(keys[-1])):
            node[keys[-1]] = str(folder / node[keys[-1]])


def load_config(
    path: str | os.PathLike | None = None,
    overrides: list[str] | None = None,
    **flags: Any,
) -> EdgeConfig:
    """Read ``path`` (TOML; None = defaults), apply ``--set`` ``overrides`` then ``flags``, validate once.

    Relative file paths in the file (``PATH_FIELDS``) are relative to the file's folder; those given
    by ``overrides`` and ``flags`` are relative to the working directory, as on any command line.

    ``flags`` are the CLI short-cuts, applied last: ``source``, ``model``, ``backend``, ``device_id``,
    ``broker`` (None values are ignored; ``broker`` enables the mqtt section).
    """
    origin = str(path) if path is not None else "command line"
    tree: dict[str, Any] = {}
    if path is not None:
        file = Path(path)
        try:
            tree = tomllib.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {file} does not exist (see deploy/edge.example.toml)") from exc
        except OSError as exc:
            raise ConfigError(f"config file {file}: cannot read it ({exc.strerror})") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {file} is not valid TOML: {exc}") from exc
        resolve_relative_paths(tree, file.resolve().parent)
    for item in overrides or []:
        keys, value = parse_override(item)
        _set_path(tree, keys, value, item)
    shortcuts = {
        "source": ["source", "uri"],
        "model": ["model", "path"],
        "backend": ["model", "backend"],
        "device_id": ["device_id"],
        "broker": ["mqtt", "broker_uri"],
    }
    for name, value in flags.items():
        if name not in shortcuts:
            raise TypeError(f"load_config got an unknown flag {name!r}; known: {', '.join(shortcuts)}")
        if value is not None:
            _set_path(tree, shortcuts[name], value, f"--{name.replace('_', '-')}")
    try:
        return EdgeConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, origin)) from None
