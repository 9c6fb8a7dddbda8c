"""Inference backends: TensorRT, onnxruntime, torch; each imports its runtime lazily."""
