"""The ingest's settings: one typed model, every default and unit in one place.

``python -m edge.ingest`` builds it from its flags (their defaults come from here); tests and the
benchmark build it directly. Invalid values raise :class:`IngestConfigError` naming the field.
"""

from __future__ import annotations

import socket

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edge.mqtt_names import parse_broker_uri


class IngestConfigError(ValueError):
    """An ingest setting is invalid; the message names the field and what was expected."""


class IngestConfig(BaseModel):
    """Where to read (broker, topics), where to write (database, snapshot folder), how to batch."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    broker_uri: str = Field("mqtt://localhost:1883", description="mqtt://host[:port] or mqtts://host[:port]")
    db_url: str = Field("sqlite:///alerts.db", description="sqlite:///path.db or postgresql://user@host[:port]/db")
    prefix: str = Field(
        "crack", description="topic prefix the devices publish under; '+' levels match a site, e.g. crack/+"
    )
    group: str = Field("ingest", description="shared-subscription group: workers of one group share the alerts")
    client_id: str = Field(
        "", description="MQTT client id, stable across restarts of this worker (default ingest-<group>-<host>-<index>)"
    )
    index: int = Field(0, ge=0, description="this worker's number among the group's workers (makes the client id)")
    session_expiry_s: int = Field(
        86_400, ge=1, description="the broker keeps this worker's session (and queues its share) while away, s"
    )
    snapshot_dir: str = Field("snapshots", description="folder for snapshot JPEGs: <dir>/<device_id>/<alert_id>.jpg")
    batch_size: int = Field(200, ge=1, le=10_000, description="messages written per transaction, at most")
    batch_wait_s: float = Field(0.1, gt=0, le=60, description="a batch is written at the latest this long after its first message, s")
    receive_maximum: int = Field(
        1000, ge=1, le=65535, description="unacknowledged messages the broker may send this worker (MQTT 5 Receive Maximum)"
    )
    retry_min_s: float = Field(0.5, gt=0, description="first wait before retrying a failed commit, s")
    retry_max_s: float = Field(10.0, gt=0, description="longest wait between commit retries, s")
    keepalive_s: int = Field(30, ge=1, le=65535, description="MQTT keep-alive, s")
    max_message_bytes: int = Field(1024 * 1024, ge=1024, description="alert messages larger than this are rejected, bytes")
    username: str | None = Field(None, description="MQTT user name (password from password_file or $AELF_MQTT_PASSWORD)")
    password_file: str | None = Field(None, description="first line is the MQTT password")
    ca_file: str | None = Field(None, description="CA (PEM) for an mqtts:// broker; default the system store")

    @field_validator("broker_uri")
    @classmethod
    def _broker(cls, value: str) -> str:
        parse_broker_uri(value)
        return value

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        value = value.strip("/")
        if not value or "#" in value or "\0" in value:
            raise ValueError("must be non-empty topic levels without '#' ('+' matches a site level)")
        if any(level != "+" and "+" in level for level in value.split("/")):
            raise ValueError("'+' must be a whole topic level, e.g. crack/+")
        return value

    @field_validator("group")
    @classmethod
    def _group(cls, value: str) -> str:
        if not value or any(c in value for c in "/#+\0"):
            raise ValueError("must be a non-empty name without '/', '#' or '+'")
        return value

    @property
    def effective_client_id(self) -> str:
        """The configured client id, else ingest-<group>-<hostname>-<index> (stable across restarts)."""
        return self.client_id or f"ingest-{self.group}-{socket.gethostname()}-{self.index}"


def make_config(**values: object) -> IngestConfig:
    """IngestConfig from keyword values; IngestConfigError naming the first bad field otherwise."""
    try:
        return IngestConfig(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "(settings)"
        raise IngestConfigError(f"ingest setting {field}: {err['msg']} (got {err.get('input')!r})") from exc
