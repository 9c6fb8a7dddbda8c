"""onnxruntime on the CPU, run the way the edge runtime runs it: tiles in, probabilities out (no torch).

Shared by the parity check (:mod:`export.parity`), INT8 evaluation (:mod:`calibration.int8`), the
threshold search (:mod:`calibration.threshold`) and ``benchmarks/bench_precision.py``.
"""

from __future__ import annotations

import os

import numpy as np

from edge.metadata import INPUT_NAME, ModelMetadata

DEFAULT_THREADS = 2  # intra-op threads: the CI / development machine has 2 cores


def ort_session(model: str | os.PathLike | bytes, threads: int | None = DEFAULT_THREADS, optimize: str = "all"):
    """An onnxruntime CPU session; ``optimize`` is the graph optimisation level: disable|basic|extended|all."""
    try:
        import onnxruntime as ort
    except ImportError as exc:  # the edge extra provides it
        raise ImportError("onnxruntime is not installed: `pip install onnxruntime` (extra 'export' or 'edge')") from exc
    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    if optimize not in levels:
        raise ValueError(f"optimize must be one of {sorted(levels)}, got {optimize!r}")
    options = ort.SessionOptions()
    options.graph_optimization_level = levels[optimize]
    options.log_severity_level = 3  # errors only: the QDQ warnings are expected and explained in docs
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])


def run_tiles(session, tiles: np.ndarray, batch_size: int = 4) -> np.ndarray:
    """Probabilities N x 1 x H x W of model-ready tiles N x 3 x H x W, ``batch_size`` tiles per call."""
    if tiles.ndim != 4 or tiles.shape[1] != 3:
        raise ValueError(f"tiles must be N x 3 x H x W float32, got shape {tiles.shape}")
    outputs = [
        session.run(None, {INPUT_NAME: np.ascontiguousarray(tiles[i : i + batch_size], dtype=np.float32)})[0]
        for i in range(0, len(tiles), batch_size)
    ]
    return np.concatenate(outputs, axis=0)


def predict_frame(session, frame_bgr: np.ndarray, meta: ModelMetadata, overlap: int | None = None, batch_size: int = 4) -> np.ndarray:
    """Probability map H x W of one BGR frame: tiled, inferred and stitched as the edge daemon does."""
    from calibration.dataset import frame_tiles
    from edge.tiling import stitch

    grid, tiles = frame_tiles(frame_bgr, meta, overlap)
    return stitch(run_tiles(session, tiles, batch_size), grid)
