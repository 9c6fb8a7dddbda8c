"""TensorRT backend: a serialized engine (.engine / .plan) + its JSON sidecar, run with pycuda buffers.

Unverified here (no GPU in CI): written against the TensorRT 10 Python API (``num_io_tensors``,
``get_tensor_name``, ``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``) with a
fallback to the 8.x binding API (``execute_async_v2``), and pycuda (page-locked host buffers,
device buffers, one stream: H2D copy, execute, D2H copy, synchronise).

Before deserialising, :func:`check_engine_compat` compares the TensorRT version and GPU model the
engine was built for (from the sidecar) with this device's, because an engine does not move between
either; a mismatch is a sentence saying what to rebuild rather than a crash in the runtime. The check
lives in :mod:`contract.sidecar` (stdlib only), shared with ``export.trt``, which writes the sidecar.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from contract.backends.base import BackendError, MissingRuntimeError, check_batch, chunks
from contract.metadata import INPUT_NAME, OUTPUT_NAME, MetadataError, ModelMetadata
from contract.sidecar import check_engine_compat, read_sidecar, sidecar_path

log = logging.getLogger("contract.backends.tensorrt")

TRT_HINT = (
    "the TensorRT backend needs the tensorrt and pycuda Python packages: on Jetson they come with "
    "JetPack (apt install python3-libnvinfer; pip install pycuda), on x86 `pip install 'aelf-crack[trt]'`; "
    "or use model.backend = \"onnxruntime\" with the .onnx model"
)


def _import_runtime() -> tuple[Any, Any]:
    try:
        import pycuda.driver as cuda
        import tensorrt as trt
    except ImportError as exc:
        raise MissingRuntimeError(TRT_HINT) from exc
    return trt, cuda


class TensorRTBackend:
    """A deserialized engine with one execution context, pinned host and device buffers, one stream."""

    name = "tensorrt"
    any_size = False  # the engine's optimisation profile fixes H x W to the tile (export.trt)

    def __init__(self, path: str | os.PathLike, *, batch_size: int | None = None, device_index: int = 0) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise BackendError(f"TensorRT engine {self.path} does not exist (build it with `python -m export.trt`)")
        sidecar = read_sidecar(self.path)
        try:
            self.metadata = ModelMetadata.from_json_dict(sidecar["metadata"], source=str(sidecar_path(self.path)))
        except MetadataError as exc:
            raise BackendError(str(exc)) from exc
        trt, cuda = _import_runtime()
        self._trt, self._cuda = trt, cuda
        cuda.init()
        device = cuda.Device(device_index)
        check_engine_compat(sidecar, trt.__version__, device.name())
        # Our own context, pushed around every call: infer() runs in the pipeline's inference thread.
        self._ctx = device.make_context()
        try:
            self._load(trt, cuda, batch_size)
        finally:
            self._ctx.pop()

    def _load(self, trt: Any, cuda: Any, batch_size: int | None) -> None:
        self._logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(self._logger)
        self.engine = runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise BackendError(f"TensorRT could not deserialize {self.path} (see the TensorRT log above)")
        self.context = self.engine.create_execution_context()
        self._v3 = hasattr(self.engine, "num_io_tensors") and hasattr(self.context, "execute_async_v3")
        if self._v3:
            names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
            if INPUT_NAME not in names or OUTPUT_NAME not in names:
                raise BackendError(f"{self.path}: expected tensors {INPUT_NAME!r} and {OUTPUT_NAME!r}, found {names}")
            shape = tuple(self.engine.get_tensor_shape(INPUT_NAME))
            dynamic = shape[0] == -1
            profile_max = tuple(self.engine.get_tensor_profile_shape(INPUT_NAME, 0)[2]) if dynamic else shape
        else:  # TensorRT 8.x binding API
            self._in_index = self.engine.get_binding_index(INPUT_NAME)
            self._out_index = self.engine.get_binding_index(OUTPUT_NAME)
            if self._in_index < 0 or self._out_index < 0:
                raise BackendError(f"{self.path}: expected bindings {INPUT_NAME!r} and {OUTPUT_NAME!r}")
            shape = tuple(self.engine.get_binding_shape(self._in_index))
            dynamic = shape[0] == -1
            profile_max = tuple(self.engine.get_profile_shape(0, self._in_index)[2]) if dynamic else shape
        max_batch = int(profile_max[0])
        if batch_size is not None and dynamic:
            max_batch = min(max_batch, batch_size)
        self._dynamic = dynamic
        self._input_shape = (max_batch, int(profile_max[1]), int(profile_max[2]), int(profile_max[3]))
        _, c, h, w = self._input_shape
        self._host_in = cuda.pagelocked_empty((max_batch, c, h, w), dtype=np.float32)
        self._host_out = cuda.pagelocked_empty((max_batch, 1, h, w), dtype=np.float32)
        self._dev_in = cuda.mem_alloc(self._host_in.nbytes)
        self._dev_out = cuda.mem_alloc(self._host_out.nbytes)
        self._stream = cuda.Stream()
        if self._v3:
            self.context.set_tensor_address(INPUT_NAME, int(self._dev_in))
            self.context.set_tensor_address(OUTPUT_NAME, int(self._dev_out))
        log.info("TensorRT %s engine %s: input %s (%s)", trt.__version__, self.path.name, self._input_shape,
                 "dynamic batch" if dynamic else "fixed batch")

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return self._input_shape

    @property
    def precision(self) -> str:
        return self.metadata.precision

    def _run(self, x: np.ndarray) -> np.ndarray:
        cuda = self._cuda
        n = x.shape[0]
        run_n = n if self._dynamic else self._input_shape[0]  # a fixed-batch engine always runs full batches
        self._host_in[:n] = x
        if run_n > n:
            self._host_in[n:run_n] = 0.0
        cuda.memcpy_htod_async(self._dev_in, self._host_in[:run_n], self._stream)
        if self._v3:
            if self._dynamic:
                self.context.set_input_shape(INPUT_NAME, (run_n, *self._input_shape[1:]))
            ok = self.context.execute_async_v3(stream_handle=self._stream.handle)
        else:
            if self._dynamic:
                self.context.set_binding_shape(self._in_index, (run_n, *self._input_shape[1:]))
            bindings = [0] * self.engine.num_bindings
            bindings[self._in_index], bindings[self._out_index] = int(self._dev_in), int(self._dev_out)
            ok = self.context.execute_async_v2(bindings=bindings, stream_handle=self._stream.handle)
        if not ok:
            raise BackendError(f"TensorRT execution failed on {self.path} (batch {run_n})")
        cuda.memcpy_dtoh_async(self._host_out[:run_n], self._dev_out, self._stream)
        self._stream.synchronize()
        return self._host_out[:n].copy()

    def infer(self, batch: np.ndarray) -> np.ndarray:
        batch = check_batch(batch, self._input_shape, str(self.path))
        self._ctx.push()
        try:
            return np.concatenate([self._run(batch[s]) for s in chunks(batch.shape[0], self._input_shape[0])])
        finally:
            self._ctx.pop()

    def close(self) -> None:
        ctx = getattr(self, "_ctx", None)
        if ctx is None:
            return
        ctx.push()
        try:
            self._dev_in.free()
            self._dev_out.free()
            self.context = None
            self.engine = None
        finally:
            ctx.pop()
            ctx.detach()
            self._ctx = None
