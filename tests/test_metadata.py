"""Model metadata contract: round trips and errors that name the key."""

from __future__ import annotations

import pytest

from contract.metadata import MetadataError, ModelMetadata


def test_props_round_trip():
    meta = ModelMetadata(width=8, head="shallow", threshold=0.37, precision="int8", extra={"k": "v"})
    props = meta.to_props()
    assert all(isinstance(v, str) for v in props.values())
    assert ModelMetadata.from_props(props) == meta
    assert ModelMetadata.from_json_dict(meta.to_json_dict()) == meta


def test_missing_key_is_named():
    props = ModelMetadata().to_props()
    del props["threshold"]
    with pytest.raises(MetadataError, match="'threshold'.*export"):
        ModelMetadata.from_props(props, source="x.onnx")


@pytest.mark.parametrize(
    "key, value, message",
    [("threshold", "1.5", "threshold"), ("mean", "[0, 0]", "list of 3"), ("input_size", "500", "multiple of 16"),
     ("color_order", "HSV", "RGB or BGR"), ("scale", "not json", "not valid JSON")],
)
def test_bad_values_are_named(key, value, message):
    props = ModelMetadata().to_props()
    props[key] = value
    with pytest.raises(MetadataError, match=message):
        ModelMetadata.from_props(props)
