"""onnxruntime backend: FP32 or INT8 (QDQ) ONNX models, TensorRT/CUDA execution providers when present.

Named ``ort.py`` so that ``import onnxruntime`` inside it finds the real package.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from contract.backends.base import EDGE_EXTRA, BackendError, MissingRuntimeError, check_batch, chunks
from contract.metadata import INPUT_NAME, OUTPUT_NAME, MetadataError, ModelMetadata

log = logging.getLogger("contract.backends.ort")

# Best first; only those this onnxruntime build offers are used.
PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as exc:
        raise MissingRuntimeError(
            f"the onnxruntime backend needs the onnxruntime package: {EDGE_EXTRA} "
            "(or onnxruntime-gpu for CUDA; on Jetson the wheel from the Jetson Zoo)"
        ) from exc
    return onnxruntime


class OnnxRuntimeBackend:
    """An ``onnxruntime.InferenceSession`` on an exported model (input ``image``, output ``probability``)."""

    name = "onnxruntime"

    def __init__(
        self,
        path: str | os.PathLike | bytes,
        *,
        providers: list[str] | None = None,
        batch_size: int = 4,
        intra_op_threads: int = 0,
        allow_spinning: bool = False,
        log_severity: int = 2,
        whole_images: bool = False,
    ) -> None:
        """Load ``path`` (a file, or the serialized model as ``bytes``: the export checks a graph before
        writing it); ``providers`` best first (default: TensorRT, CUDA, CPU as available);
        ``batch_size`` tiles per call when the model's batch dimension is dynamic;
        ``intra_op_threads`` CPU threads per operator (0 = onnxruntime's default, all cores);
        ``allow_spinning``: let idle intra-op threads busy-wait for the next operator. Off by default:
        in the daemon, decoding and post-processing threads share the cores with inference, and
        spinning threads took CPU from them (python -m benchmarks.bench_pipeline, 2 cores, 600-tile passes:
        daemon/bare 0.900 with spinning, 0.915 without; the bare backend's own speed unchanged);
        ``log_severity``: onnxruntime's own log level, 0 verbose .. 2 warnings (its default) .. 4 fatal;
        3 hides the warnings expected of INT8 QDQ graphs (docs/EXPORT.md); ``whole_images``: also accept
        whole images (any H x W dividing by 16) when the graph's height and width are dynamic
        (``any_size``); off, a batch must be tiles of the model's input size, as the daemon sends."""
        ort = import_onnxruntime()
        source: str | bytes = path if isinstance(path, bytes) else str(path)
        self.path = Path("<in-memory ONNX model>" if isinstance(path, bytes) else path)
        if not isinstance(path, bytes) and not self.path.is_file():
            raise BackendError(f"ONNX model {self.path} does not exist (export one with `python -m export.onnx`)")
        available = ort.get_available_providers()
        if providers:
            unknown = [p for p in providers if p not in available]
            if unknown:
                raise BackendError(
                    f"model.providers {unknown} are not in this onnxruntime build (available: {available}); "
                    "install onnxruntime-gpu for CUDA/TensorRT"
                )
            chosen = list(providers)
        else:
            chosen = [p for p in PREFERRED_PROVIDERS if p in available] or available
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if intra_op_threads:
            options.intra_op_num_threads = intra_op_threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
        options.log_severity_level = log_severity
        try:
            self.session = ort.InferenceSession(source, sess_options=options, providers=chosen)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... classes
            raise BackendError(f"onnxruntime cannot load {self.path}: {exc}") from exc
        self.providers = self.session.get_providers()
        props = self.session.get_modelmeta().custom_metadata_map
        try:
            self.metadata = ModelMetadata.from_props(props, source=str(self.path))
        except MetadataError as exc:
            raise BackendError(str(exc)) from exc
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        names_in, names_out = [i.name for i in inputs], [o.name for o in outputs]
        if INPUT_NAME not in names_in or OUTPUT_NAME not in names_out:
            raise BackendError(
                f"{self.path}: expected input {INPUT_NAME!r} and output {OUTPUT_NAME!r} "
                f"(the export contract), found inputs {names_in} and outputs {names_out}"
            )
        shape = next(i.shape for i in inputs if i.name == INPUT_NAME)
        size = self.metadata.input_size

        def dim(value: object, default: int) -> int:
            return value if isinstance(value, int) and value > 0 else default

        self._fixed_batch = isinstance(shape[0], int) and shape[0] > 0
        # a graph exported with dynamic height and width (export.onnx --dynamic-hw) can take whole images
        self.any_size = whole_images and not any(isinstance(d, int) and d > 0 for d in shape[2:])
        self._input_shape = (dim(shape[0], batch_size), dim(shape[1], 3), dim(shape[2], size), dim(shape[3], size))
        log.info("onnxruntime %s on %s: input %s, providers %s", ort.__version__, self.path.name,
                 self._input_shape, self.providers)

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return self._input_shape

    @property
    def precision(self) -> str:
        return self.metadata.precision

    def infer(self, batch: np.ndarray) -> np.ndarray:
        batch = check_batch(batch, self._input_shape, str(self.path), self.any_size)
        max_batch = self._input_shape[0]
        outputs = []
        for part in chunks(batch.shape[0], max_batch):
            x = batch[part]
            if self._fixed_batch and x.shape[0] < max_batch:  # a fixed-batch graph: pad, then cut
                pad = np.zeros((max_batch - x.shape[0], *x.shape[1:]), dtype=np.float32)
                out = self.session.run([OUTPUT_NAME], {INPUT_NAME: np.concatenate([x, pad])})[0][: x.shape[0]]
            else:
                out = self.session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
            outputs.append(out)
        return np.asarray(outputs[0] if len(outputs) == 1 else np.concatenate(outputs), dtype=np.float32)

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]
