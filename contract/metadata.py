"""Model metadata: the contract that travels with every exported model (pure, stdlib only).

Written by ``export`` into ONNX ``metadata_props`` (flat string keys, see :meth:`ModelMetadata.to_props`)
and into the JSON sidecar beside a TensorRT engine; read by the edge runtime, which never guesses.
Stdlib only: every stage reads it, the edge runtime on devices without torch.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any

CONTRACT_VERSION = 1
INPUT_NAME = "image"
OUTPUT_NAME = "probability"
DEFAULT_TILE_PX = 512  # tile side a model is trained on and exported for unless told otherwise
SIDE_MULTIPLE = 16  # the U-Net halves its input four times: tile sides and whole images divide by 2**4
DEFAULT_THRESHOLD = 0.5  # decision threshold of a model not (yet) calibrated on validation data


class MetadataError(ValueError):
    """Model metadata is missing or malformed; the message names the key."""


@dataclass(frozen=True)
class ModelMetadata:
    """What a deployed model promises: input layout and scaling, output meaning, decision threshold."""

    arch: str = "aelf-unet"
    width: int = 64
    head: str = "deep"
    input_size: int = DEFAULT_TILE_PX  # tile side the model was trained/exported for (pixels)
    color_order: str = "RGB"
    scale: float = 1.0 / 255.0  # x = (pixel * scale - mean) / std
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    threshold: float = DEFAULT_THRESHOLD  # decision threshold on the output probability
    precision: str = "fp32"  # fp32 | fp16 | int8
    train_data: str = "unknown"
    train_commit: str = "unknown"
    model_name: str = "aelf-unet"
    contract_version: int = CONTRACT_VERSION
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise MetadataError(f"metadata 'threshold' must be in (0, 1), got {self.threshold}")
        if self.color_order not in ("RGB", "BGR"):
            raise MetadataError(f"metadata 'color_order' must be RGB or BGR, got {self.color_order!r}")
        if self.input_size <= 0 or self.input_size % SIDE_MULTIPLE:
            raise MetadataError(
                f"metadata 'input_size' must be a positive multiple of {SIDE_MULTIPLE}, got {self.input_size}"
            )
        if self.precision not in ("fp32", "fp16", "int8"):
            raise MetadataError(f"metadata 'precision' must be fp32, fp16 or int8, got {self.precision!r}")

    def threshold_for(self, flips: int = 1) -> float:
        """The decision threshold for predictions averaged over ``flips`` mirrorings
        (:mod:`contract.backends.flips`): ``extra["threshold_at_flips_<n>"]`` where calibrated at that many
        passes, else ``threshold`` (chosen on single-pass predictions)."""
        if flips == 1:
            return self.threshold
        key = threshold_key(flips)
        if key not in self.extra:
            return self.threshold
        try:
            value = float(self.extra[key])
        except ValueError:
            raise MetadataError(f"metadata {key!r} must be a number, got {self.extra[key]!r}") from None
        if not 0.0 < value < 1.0:
            raise MetadataError(f"metadata {key!r} must be in (0, 1), got {value}")
        return value

    def has_threshold_for(self, flips: int) -> bool:
        """Whether a threshold was calibrated for ``flips`` passes (one pass: always, ``threshold``)."""
        return flips == 1 or threshold_key(flips) in self.extra

    def replace(self, **changes: Any) -> ModelMetadata:
        data = asdict(self)
        data.update(changes)
        return ModelMetadata(**data)

    def to_props(self) -> dict[str, str]:
        """Flat string key/values for ONNX ``metadata_props`` (lists and dicts as JSON)."""
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = value if isinstance(value, str) else json.dumps(list(value) if isinstance(value, tuple) else value)
        return out

    @classmethod
    def from_props(cls, props: dict[str, str], source: str = "model") -> ModelMetadata:
        """Parse ``metadata_props``; raise MetadataError naming the missing or bad key."""
        required = ("arch", "input_size", "threshold", "scale", "mean", "std", "color_order")
        missing = [k for k in required if k not in props]
        if missing:
            raise MetadataError(
                f"{source} has no {', '.join(repr(m) for m in missing)} in its metadata: "
                "export it with `python -m export.onnx` so the runtime knows its input contract"
            )
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in props:
                continue
            raw = props[f.name]
            if f.type == "str":  # annotations are strings under `from __future__ import annotations`
                kwargs[f.name] = raw
                continue
            try:
                value = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise MetadataError(f"{source} metadata {f.name!r} is not valid JSON: {raw!r}") from exc
            if f.name in ("mean", "std"):
                if not (isinstance(value, list) and len(value) == 3):
                    raise MetadataError(f"{source} metadata {f.name!r} must be a list of 3 numbers, got {raw!r}")
                value = tuple(float(v) for v in value)
            kwargs[f.name] = value
        return cls(**kwargs)

    def to_json_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["mean"] = list(self.mean)
        data["std"] = list(self.std)
        return data

    @classmethod
    def from_json_dict(cls, data: dict[str, Any], source: str = "sidecar") -> ModelMetadata:
        return cls.from_props(
            {k: (v if isinstance(v, str) else json.dumps(v)) for k, v in data.items() if k in {f.name for f in fields(cls)}},
            source=source,
        )


def threshold_key(flips: int) -> str:
    """The ``extra`` key holding the threshold calibrated on predictions averaged over ``flips`` mirrorings."""
    return f"threshold_at_flips_{int(flips)}"


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a model file: the identity alerts and engine sidecars record."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
