"""Whole-image prediction and scoring: shared by validation, the final test and ``train.evaluate``.

A *predictor* is any callable ``image RGB uint8 H x W x 3 -> crack probability float32 H x W``.
:func:`torch_predictor` pads the image to a multiple of 16 (zeros, bottom/right), runs the network and
crops the prediction back, so the padded area never reaches the metrics.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from train.data import CrackImages, crop_to, pad_to_multiple, to_chw_float
from train.metrics import ThresholdSweep
from train.model import probabilities

Predictor = Callable[[np.ndarray], np.ndarray]


def torch_predictor(model: torch.nn.Module, device: torch.device, amp_dtype: torch.dtype | None = None) -> Predictor:
    """A predictor running ``model`` (logits) on ``device``, under autocast when ``amp_dtype`` is set."""

    @torch.no_grad()
    def predict(image: np.ndarray) -> np.ndarray:
        padded, size_hw = pad_to_multiple(image, 16)
        x = torch.from_numpy(to_chw_float(padded))[None].to(device)
        was_training = model.training
        model.eval()
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            logits = model(x)
        if was_training:
            model.train()
        prob = probabilities(logits.float())[0, 0].cpu().numpy()
        return np.ascontiguousarray(crop_to(prob, size_hw), dtype=np.float32)

    return predict


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
