"""Parity check: the exported ONNX graph (onnxruntime, CPU) must give torch's probabilities.

Run on real tiles drawn as the edge runtime draws them (:mod:`calibration.dataset`): a few DeepCrack
test images by default, so the check covers real crack statistics and zero-padded tile borders.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from calibration.runtime import ort_session, run_tiles
from edge.metadata import ModelMetadata

DEFAULT_TOLERANCE = 1e-4  # max |delta p| between onnxruntime FP32 and torch, on probabilities in (0, 1)
DEEPCRACK = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "deepcrack"


class ParityError(RuntimeError):
    """onnxruntime and torch disagree by more than the tolerance; the message gives the max |delta p|."""


@dataclass(frozen=True)
class ParityResult:
    max_abs_diff: float
    n_tiles: int
    source: str  # where the tiles came from


def parity_tiles(
    meta: ModelMetadata, folder: str | os.PathLike | None = None, n_tiles: int = 8, seed: int = 0
) -> tuple[np.ndarray, str]:
    """Model-ready tiles for the check: from ``folder``, else DeepCrack test images, else uniform noise."""
    from calibration.dataset import draw_tiles

    if folder is not None:
        drawn = draw_tiles(folder, meta, max_tiles=n_tiles, seed=seed, progress=False)
        return drawn.tiles, f"{len(drawn)} tiles of {folder}"
    if (DEEPCRACK / "splits" / "test.txt").is_file():
        drawn = draw_tiles(DEEPCRACK, meta, max_tiles=n_tiles, seed=seed, split="test", progress=False)
        return drawn.tiles, f"{len(drawn)} tiles of DeepCrack test images"
    rng = np.random.default_rng(seed)
    tiles = rng.random((n_tiles, 3, meta.input_size, meta.input_size), dtype=np.float32)
    return tiles, f"{n_tiles} random tiles (no --parity-images and no DeepCrack at {DEEPCRACK})"


def torch_probabilities(model: torch.nn.Module, tiles: np.ndarray, batch_size: int = 4) -> np.ndarray:
    """The reference: the torch module (already returning probabilities) on the same tiles."""
    with torch.inference_mode():
        return np.concatenate(
            [model(torch.from_numpy(tiles[i : i + batch_size])).numpy() for i in range(0, len(tiles), batch_size)]
        )


def check_parity(
    model: torch.nn.Module,
    onnx_model: bytes | str | os.PathLike,
    tiles: np.ndarray,
    tolerance: float = DEFAULT_TOLERANCE,
    source: str = "tiles",
) -> ParityResult:
    """Compare torch ``model`` (probability output) with the ONNX graph; raise :class:`ParityError` above tolerance."""
    expected = torch_probabilities(model.eval(), tiles)
    got = run_tiles(ort_session(onnx_model), tiles)
    if got.shape != expected.shape:
        raise ParityError(f"onnxruntime output shape {got.shape} differs from torch's {expected.shape}")
    diff = float(np.max(np.abs(got.astype(np.float64) - expected)))
    if not diff <= tolerance:  # also catches NaN
        raise ParityError(
            f"parity check failed: max |delta p| = {diff:.3g} between onnxruntime and torch on {source}, "
            f"above the tolerance {tolerance:g}; the exported graph does not compute the checkpoint's model"
        )
    return ParityResult(diff, len(tiles), source)
