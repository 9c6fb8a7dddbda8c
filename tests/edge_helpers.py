"""Test helpers for the edge I/O tests: a real (hand-built) ONNX model and real video/image files.

``darkness_model`` writes an ONNX graph, run by the real onnxruntime, whose output is
``sigmoid(gain * (cut - mean RGB))``: dark pixels (a drawn crack) get probability ~1, a light
background ~0. It follows the export contract exactly (input ``image`` N×3×H×W float32, output
``probability`` N×1×H×W, ModelMetadata in metadata_props), so the daemon runs on it end to end and
its alerts are deterministic, which an untrained tiny U-Net's would not be.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
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


def crack_image(height: int = 120, width: int = 160, *, crack: bool = True, seed: int = 0) -> np.ndarray:
    """A light textured surface (BGR uint8), with a dark 3-px diagonal crack when ``crack``."""
    rng = np.random.default_rng(seed)
    image = rng.integers(170, 210, size=(height, width, 3), dtype=np.uint8)
    if crack:
        cv2.line(image, (10, 10), (width - 10, height - 15), (30, 30, 30), 3)
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
