"""Test helpers for the edge I/O tests: a real (hand-built) ONNX model and real video/image files.

``darkness_model`` writes an ONNX graph, run by the real onnxruntime, whose output is
``sigmoid(gain * (cut - mean RGB))``: dark pixels (a drawn crack) get probability ~1, a light
background ~0. It follows the export contract exactly (input ``image`` N×3×H×W float32, output
``probability`` N×1×H×W, ModelMetadata in metadata_props), so the daemon runs on it end to end and
its alerts are deterministic, which an untrained tiny U-Net's would not be.
"""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from drawn_cracks import draw_crack
from onnx import TensorProto, helper

from contract.metadata import INPUT_NAME, OUTPUT_NAME, ModelMetadata


def darkness_model(path: Path, *, input_size: int = 64, cut: float = 0.35, gain: float = 40.0,
                   batch: int | str = "N", channels: int = 3, graph_size: int | str = "H") -> Path:
    """Write the darkness ONNX model to ``path`` (dynamic batch unless ``batch`` is an int; ``channels``
    input channels; a dynamic tile size unless ``graph_size`` is an int)."""
    height, width = (graph_size, "W" if graph_size == "H" else graph_size)
    image = helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [batch, channels, height, width])
    prob = helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [batch, 1, height, width])
    nodes = [
        helper.make_node("ReduceMean", [INPUT_NAME, "axes"], ["mean"], keepdims=1),
        helper.make_node("Sub", ["cut", "mean"], ["dark"]),
        helper.make_node("Mul", ["dark", "gain"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], [OUTPUT_NAME]),
    ]
    inits = [
        helper.make_tensor("axes", TensorProto.INT64, [1], [1]),
        helper.make_tensor("cut", TensorProto.FLOAT, [], [cut]),
        helper.make_tensor("gain", TensorProto.FLOAT, [], [gain]),
    ]
    graph = helper.make_graph(nodes, "darkness", [image], [prob], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    meta = ModelMetadata(width=4, input_size=input_size, threshold=0.5, model_name="darkness-test",
                         train_data="none (hand-built test graph)")
    for key, value in meta.to_props().items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def crack_ends(height: int = 120, width: int = 160) -> tuple[tuple[int, int], tuple[int, int]]:
    """Where :func:`crack_image` starts and ends its crack (x, y): near the top-left and bottom-right corners."""
    return (10, 10), (width - 10, height - 15)


def crack_image(height: int = 120, width: int = 160, *, crack: bool = True, seed: int = 0) -> np.ndarray:
    """A light textured surface (BGR uint8; ``seed`` picks the texture), with a dark 5-px crooked crack
    across it when ``crack``: always the same path, ``drawn_cracks.crack_path(*crack_ends(height, width))``."""
    rng = np.random.default_rng(seed)
    image = rng.integers(170, 210, size=(height, width, 3), dtype=np.uint8)
    if crack:
        draw_crack(image, *crack_ends(height, width), width_px=5, value=(30, 30, 30))
    return image


def write_video(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> Path:
    """Write ``frames`` (BGR, same size) as an MJPG .avi with the real cv2.VideoWriter."""
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    assert writer.isOpened(), f"cv2.VideoWriter cannot write {path}"
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def numbered_frame(i: int, height: int = 48, width: int = 64) -> np.ndarray:
    """A frame whose brightness encodes ``i`` (survives MJPG), to check order after decoding."""
    return np.full((height, width, 3), 8 * (i % 30) + 4, dtype=np.uint8)


def frame_number(image: np.ndarray) -> int:
    return int(round((float(image.mean()) - 4) / 8))


def _rational(value: float, denominator: int = 10000) -> tuple[int, int]:
    f = Fraction(value).limit_denominator(denominator)
    return f.numerator, f.denominator


def _dms(degrees: float) -> tuple:
    d = int(degrees)
    m = int((degrees - d) * 60)
    s = (degrees - d - m / 60) * 3600
    return ((d, 1), (m, 1), _rational(s, 1000))


def write_geotagged_jpeg(path: Path, lat: float, lon: float, *, alt_m: float = 520.0, height_m: float | None = 30.0,
                         gimbal_pitch: float = -90.0, image=None, taken: str = "2026:06:01 12:00:05",
                         offset: str | None = "+02:00", heading_deg: float = 123.4) -> Path:
    """A JPEG as a drone writes it: EXIF GPS + focal length + focal-plane resolution, DJI XMP heights."""
    piexif = pytest.importorskip("piexif", reason="piexif not installed (extra [geo])")

    image = crack_image(120, 160, crack=True, seed=4) if image is None else image
    height, width = image.shape[:2]
    ok, jpeg = cv2.imencode(".jpg", image)
    assert ok
    sensor_width_mm = 13.2
    exif = {
        "0th": {piexif.ImageIFD.Make: b"DJI"},
        "Exif": {
            piexif.ExifIFD.FocalLength: (88, 10),
            piexif.ExifIFD.PixelXDimension: width, piexif.ExifIFD.PixelYDimension: height,
            piexif.ExifIFD.FocalPlaneXResolution: _rational(width / sensor_width_mm), piexif.ExifIFD.FocalPlaneResolutionUnit: 4,
            piexif.ExifIFD.DateTimeOriginal: taken.encode(),
            **({} if offset is None else {piexif.ExifIFD.OffsetTimeOriginal: offset.encode()}),
        },
        "GPS": {
            piexif.GPSIFD.GPSLatitudeRef: b"S" if lat < 0 else b"N", piexif.GPSIFD.GPSLatitude: _dms(abs(lat)),
            piexif.GPSIFD.GPSLongitudeRef: b"W" if lon < 0 else b"E", piexif.GPSIFD.GPSLongitude: _dms(abs(lon)),
            piexif.GPSIFD.GPSAltitudeRef: 0, piexif.GPSIFD.GPSAltitude: _rational(alt_m),
            piexif.GPSIFD.GPSImgDirection: _rational(heading_deg % 360.0, 100), piexif.GPSIFD.GPSImgDirectionRef: b"T",
        },
    }
    out = io.BytesIO()
    piexif.insert(piexif.dump(exif), jpeg.tobytes(), out)
    data = out.getvalue()
    if height_m is not None:  # an XMP APP1 segment right after SOI, as DJI cameras write it
        xmp = (f'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><rdf:Description drone-dji:RelativeAltitude="+{height_m:.2f}" '
               f'drone-dji:GimbalPitchDegree="{gimbal_pitch:+.1f}"/></rdf:RDF></x:xmpmeta>').encode()
        body = b"http://ns.adobe.com/xap/1.0/\0" + xmp
        data = data[:2] + b"\xff\xe1" + (len(body) + 2).to_bytes(2, "big") + body + data[2:]
    path.write_bytes(data)
    return path
