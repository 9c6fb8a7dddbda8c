"""onnxruntime INT8 quantization calibrated on tiles cut as the daemon cuts frames; the alert threshold chosen on validation data."""
