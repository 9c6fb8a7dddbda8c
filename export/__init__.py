"""Checkpoint -> ONNX (+metadata, parity check) -> TensorRT engine."""
