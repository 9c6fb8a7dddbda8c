"""INT8 calibration data and caches; the alert threshold chosen on validation data."""
