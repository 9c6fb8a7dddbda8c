"""Whole-image prediction and scoring: shared by validation, the final test and ``train.evaluate``.

A *predictor* is any callable ``image RGB uint8 H x W x 3 -> crack probability float32 H x W``.
Every predictor runs a backend through :func:`contract.predict.predict_frame`, the inference path
the edge daemon shares: :func:`backend_predictor` for any backend (tiled, or whole images where the
backend takes them), :func:`torch_predictor` for a network in memory (the training loop), which pads
the image to a multiple of 16 (zeros, bottom/right), runs it whole and crops the prediction back, so
the padded area never reaches the metrics.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from contract.backends.base import Backend, BackendWrapper
from contract.metrics import ThresholdSweep
from contract.predict import predict_frame
from train.data import CrackImages
from train.torch_backend import TorchBackend

Predictor = Callable[[np.ndarray], np.ndarray]


def backend_predictor(backend: Backend, *, whole_image: bool = False, overlap: int | None = None) -> Predictor:
    """A predictor of RGB images through ``backend``: tiled as the edge daemon tiles (``overlap`` px,
    default as :func:`contract.predict.predict_frame`), or whole images with ``whole_image``."""

    def predict(image_rgb: np.ndarray) -> np.ndarray:
        # the contract's pre-processing takes BGR frames (OpenCV, cameras); the data sets load RGB
        return predict_frame(backend, image_rgb[..., ::-1], overlap=overlap, whole_image=whole_image)

    return predict


def torch_predictor(model: torch.nn.Module, device: torch.device, amp_dtype: torch.dtype | None = None,
                    tile: int = 0, flips: int = 1) -> Predictor:
    """A predictor running ``model`` (logits) on ``device``, under autocast when ``amp_dtype`` is set:
    whole images (``tile`` 0), or cut into ``tile``-px tiles and stitched as the edge daemon does; each
    input's prediction averaged over ``flips`` mirrorings (:mod:`contract.backends.flips`)."""
    from contract.backends.flips import with_flips

    return backend_predictor(with_flips(_torch_backend(model, device, amp_dtype, tile), flips), whole_image=not tile)


def _torch_backend(model: torch.nn.Module, device: torch.device, amp_dtype: torch.dtype | None, tile: int) -> Backend:
    """``model`` as a backend of ``tile``-px tiles (4 per call), or of whole images for ``tile`` 0."""
    if tile:
        from contract.metadata import ModelMetadata

        return TorchBackend.from_module(model, ModelMetadata(input_size=int(tile)), device=device, batch_size=4,
                                        amp_dtype=amp_dtype)
    return TorchBackend.from_module(model, device=device, batch_size=1, amp_dtype=amp_dtype, whole_images=True)


class _FirstPasses(BackendWrapper):
    """A backend that passes every call on to ``inner`` and keeps the output of each ``flips``-th one: the
    unmirrored pass of :class:`contract.backends.flips.FlipAveraged`, which calls its inner backend ``flips``
    times per batch, the input as it is first."""

    def __init__(self, inner: Backend, flips: int) -> None:
        from contract.backends.flips import FLIP_AXES

        if FLIP_AXES[flips][0] != ():
            raise AssertionError("FlipAveraged no longer runs the unmirrored pass first")
        super().__init__(inner)
        self.flips, self.calls, self.kept = flips, 0, []

    def infer(self, batch: np.ndarray) -> np.ndarray:
        prob = self.inner.infer(batch)
        if self.calls % self.flips == 0:
            self.kept.append(np.array(prob, dtype=np.float32))  # a copy: the backend may reuse its buffer
        self.calls += 1
        return prob

    def replay(self) -> _Replay:
        """A backend answering its calls with the kept outputs, in order (the recorder forgets them): run the
        same frame through it as through the flip-averaged backend and it stitches the single pass."""
        kept, self.kept, self.calls = self.kept, [], 0
        return _Replay(self, kept)


class _Replay(BackendWrapper):
    """A backend that answers each call with the next of ``kept`` (outputs :class:`_FirstPasses` kept); it
    describes the recorder's model and leaves the recorder open when it closes."""

    def __init__(self, recorder: _FirstPasses, kept: list[np.ndarray]) -> None:
        super().__init__(recorder)
        self.kept = kept

    def infer(self, batch: np.ndarray) -> np.ndarray:
        prob = self.kept.pop(0)
        if prob.shape[0] != batch.shape[0]:
            raise AssertionError(f"a kept pass of {prob.shape[0]} inputs was replayed for a batch of {batch.shape[0]}")
        return prob

    def close(self) -> None:
        self.kept.clear()


def torch_predictor_with_single_pass(model: torch.nn.Module, device: torch.device, amp_dtype: torch.dtype | None = None,
                                     tile: int = 0, flips: int = 2) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Like :func:`torch_predictor`, returning for each image ``(averaged over flips, single pass)`` from the
    same ``flips`` passes: the single pass is the unmirrored one the average already ran, stitched alone."""
    from contract.backends.flips import FlipAveraged

    whole_image = not tile
    recorder = _FirstPasses(_torch_backend(model, device, amp_dtype, tile), flips)
    averaged_backend = FlipAveraged(recorder, flips)

    def predict(image_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        frame = image_rgb[..., ::-1]
        averaged = predict_frame(averaged_backend, frame, whole_image=whole_image)
        return averaged, predict_frame(recorder.replay(), frame, whole_image=whole_image)

    return predict


def upsampled_predictor(predict: Predictor, factor: float) -> Predictor:
    """``predict`` on the image enlarged ``factor`` times as the daemon enlarges a frame whose GSD is coarser
    than ``tiling.target_gsd_mm_per_px`` (:func:`contract.tiling.resize_to_gsd`, bilinear), the probability
    map area-averaged back to the image's own pixels; ``factor`` 1 returns ``predict`` itself."""
    if not (factor >= 1.0 and np.isfinite(factor)):
        raise ValueError(f"upsampling factor must be >= 1, got {factor!r}")
    if factor == 1.0:
        return predict

    def predict_upsampled(image_rgb: np.ndarray) -> np.ndarray:
        import cv2

        from contract.tiling import resize_to_gsd

        h, w = image_rgb.shape[:2]
        large, _ = resize_to_gsd(image_rgb, factor, 1.0)
        prob = predict(np.ascontiguousarray(large))
        return cv2.resize(prob, (w, h), interpolation=cv2.INTER_AREA)

    return predict_upsampled


def sweep_images(
    predict: Predictor,
    data: CrackImages,
    *,
    tolerance_px: int = 0,
    progress: bool = False,
    desc: str = "scoring",
    on_prediction: Callable[[int, np.ndarray], None] | None = None,
) -> ThresholdSweep:
    """Predict every image of ``data`` and accumulate the threshold sweep (P/R/F, ODS, OIS, AP).

    ``on_prediction(index, prob)`` sees each probability map (for overlays) without keeping them all.
    """
    sweep = ThresholdSweep(tolerance_px=tolerance_px)
    indices = range(len(data))
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc=desc, unit="img", leave=False)
    for i in indices:
        prob = predict(data.images[i])
        if prob.shape != data.masks[i].shape:
            raise ValueError(
                f"prediction for {data.stems[i]!r} is {prob.shape}, its mask {data.masks[i].shape}: "
                "the predictor must return one probability per image pixel"
            )
        sweep.update(prob, data.masks[i].astype(bool))
        if on_prediction is not None:
            on_prediction(i, prob)
    return sweep
