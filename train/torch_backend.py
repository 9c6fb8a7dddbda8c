"""The torch backend: the one torch inference path (a checkpoint file, or a network in memory).

Every torch caller runs the network through :class:`TorchBackend`: the edge daemon and
``calibration.threshold`` for a ``.pt`` model (through ``contract.backends.load_backend``), the
training loop's validation and ``train.evaluate`` (:mod:`train.inference`), and the export parity
check (:mod:`export.parity`). It returns ``sigmoid(network(x))`` as N x 1 x H x W float32, the
same numbers an exported graph computes (the sigmoid is inside the ONNX graph). It lives beside
the network it needs; the edge package on a device never imports it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from contract.backends.base import BackendError, check_batch, chunks
from contract.metadata import ModelMetadata
from train.checkpoint import load_model, metadata_from_checkpoint


class TorchBackend:
    """A :class:`train.model.UNet` returning sigmoid probabilities; takes tiles or whole images."""

    name = "torch"

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        device: str = "cpu",
        batch_size: int = 4,
        intra_op_threads: int = 0,
        whole_images: bool = False,
    ) -> None:
        """Load the checkpoint ``path`` (``train.checkpoint`` format) onto ``device``;
        ``batch_size`` tiles per forward pass; ``intra_op_threads`` torch CPU threads (0: torch's default);
        ``whole_images``: also accept whole images of any H x W dividing by 16 (the U-Net is fully
        convolutional), not only tiles of the model's input size."""
        path = Path(path)
        if not path.is_file():
            raise BackendError(f"checkpoint {path} does not exist")
        if intra_op_threads:
            torch.set_num_threads(intra_op_threads)
        try:
            model, info = load_model(path, torch.device(device))
            metadata = metadata_from_checkpoint(info, model_name=path.stem)
        except Exception as exc:  # CheckpointError, a corrupt file, a CUDA device that is not there
            raise BackendError(f"cannot load checkpoint {path} on {device}: {exc}") from exc
        self._setup(model, metadata, torch.device(device), batch_size, None, str(path), whole_images)

    @classmethod
    def from_module(
        cls,
        model: torch.nn.Module,
        metadata: ModelMetadata | None = None,
        *,
        device: torch.device | str | None = None,
        batch_size: int = 4,
        amp_dtype: torch.dtype | None = None,
        whole_images: bool = False,
    ) -> TorchBackend:
        """A backend on a network in memory (logits out), e.g. during training; ``metadata`` defaults
        to the training input contract (RGB, /255, no mean/std). Under autocast when ``amp_dtype`` is set.
        A network in training mode is switched to eval for each call and back. ``whole_images`` as for a file."""
        backend = cls.__new__(cls)
        if device is None:
            device = next(model.parameters()).device
        backend._setup(model, metadata or ModelMetadata(), torch.device(device), batch_size, amp_dtype,
                       type(model).__name__, whole_images)
        return backend

    def _setup(self, model: torch.nn.Module, metadata: ModelMetadata, device: torch.device, batch_size: int,
               amp_dtype: torch.dtype | None, source: str, whole_images: bool) -> None:
        self.model, self.metadata, self.device, self.amp_dtype, self.source = model, metadata, device, amp_dtype, source
        self.any_size = whole_images
        size = metadata.input_size
        self._input_shape = (batch_size, 3, size, size)

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return self._input_shape

    @property
    def precision(self) -> str:
        return "fp32"

    @torch.no_grad()
    def infer(self, batch: np.ndarray) -> np.ndarray:
        batch = check_batch(batch, self._input_shape, self.source, self.any_size)
        was_training = self.model.training
        self.model.eval()
        outputs = []
        try:
            for part in chunks(batch.shape[0], self._input_shape[0]):
                x = torch.from_numpy(batch[part]).to(self.device)
                with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                                    enabled=self.amp_dtype is not None):
                    logits = self.model(x)
                outputs.append(torch.sigmoid(logits.float()).cpu().numpy())  # the sigmoid in float32
        finally:
            if was_training:
                self.model.train()
        return np.concatenate(outputs).astype(np.float32, copy=False)

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]
