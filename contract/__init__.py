"""The model contract every stage shares: the ground floor of the house (numpy and OpenCV only).

What a deployed model promises and how any stage runs it, in one place, so that training's
evaluation, threshold and INT8 calibration, the export parity check and the edge daemon give the
same probabilities for the same model and frame:

* :mod:`contract.metadata` - the metadata that travels with a model (input layout, threshold, ...);
* :mod:`contract.onnx_file` - reading and writing it in an ONNX file (``onnx`` imported lazily);
* :mod:`contract.sidecar` - the JSON sidecar beside a TensorRT engine and its compatibility check;
* :mod:`contract.tiling` / :mod:`contract.preprocess` - frame -> model-ready tiles -> stitched map;
* :mod:`contract.backends` - the backend protocol, onnxruntime and TensorRT (runtimes imported lazily);
* :mod:`contract.predict` - one frame through tiler, backend and stitcher: the one inference path;
* :mod:`contract.image_tiles` - tiles drawn from image folders exactly as the daemon cuts frames;
* :mod:`contract.metrics` - P/R/F-beta, ODS/OIS/AP: how the decision threshold is chosen and scored.

Importing this package never imports torch, paho, tensorrt, pycuda or any of ``train``, ``export``,
``calibration``, ``edge`` (``tests/test_import_rules.py`` holds it to that).
"""
