"""Parity check: the exported ONNX graph (onnxruntime, CPU) must give torch's probabilities.

Both sides run through the one inference path: the torch backend (``train.torch_backend``) on the
checkpoint's network and the onnxruntime backend (``contract.backends.ort``) on the graph, on real
tiles cut as the edge runtime cuts frames (:mod:`contract.image_tiles`): a few DeepCrack test images
by default, so the check covers real crack statistics and mirrored tile borders.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from contract.backends.base import Backend
from contract.backends.ort import OnnxRuntimeBackend
from contract.data_root import data_root
from contract.image_tiles import draw_tiles
from contract.metadata import ModelMetadata
from train.torch_backend import TorchBackend

DEFAULT_TOLERANCE = 1e-4  # max |delta p| between onnxruntime FP32 and torch, on probabilities in (0, 1)
PARITY_THREADS = 2  # onnxruntime CPU threads of the check (the development machine's cores)


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
    if folder is not None:
        drawn = draw_tiles(folder, meta, max_tiles=n_tiles, seed=seed, progress=False)
        return drawn.tiles, f"{len(drawn)} tiles of {folder}"
    deepcrack = data_root() / "deepcrack"
    if (deepcrack / "splits" / "test.txt").is_file():
        drawn = draw_tiles(deepcrack, meta, max_tiles=n_tiles, seed=seed, split="test", progress=False)
        return drawn.tiles, f"{len(drawn)} tiles of DeepCrack test images"
    rng = np.random.default_rng(seed)
    tiles = rng.random((n_tiles, 3, meta.input_size, meta.input_size), dtype=np.float32)
    return tiles, f"{n_tiles} random tiles (no --parity-images and no DeepCrack at {deepcrack})"


def compare_backends(
    reference: Backend, candidate: Backend, tiles: np.ndarray, tolerance: float = DEFAULT_TOLERANCE,
    source: str = "tiles",
) -> ParityResult:
    """Max |delta p| of ``candidate`` against ``reference`` on ``tiles``; :class:`ParityError` above ``tolerance``."""
    expected = reference.infer(tiles)
    got = candidate.infer(tiles)
    if got.shape != expected.shape:
        raise ParityError(f"{candidate.name} output shape {got.shape} differs from {reference.name}'s {expected.shape}")
    diff = float(np.max(np.abs(got.astype(np.float64) - expected)))
    if not diff <= tolerance:  # also catches NaN
        raise ParityError(
            f"parity check failed: max |delta p| = {diff:.3g} between {candidate.name} and {reference.name} on "
            f"{source}, above the tolerance {tolerance:g}; the exported graph does not compute the checkpoint's model"
        )
    return ParityResult(diff, len(tiles), source)


def check_parity(
    network: torch.nn.Module,
    onnx_model: bytes | str | os.PathLike,
    tiles: np.ndarray,
    tolerance: float = DEFAULT_TOLERANCE,
    source: str = "tiles",
) -> ParityResult:
    """Compare the torch ``network`` (logits, as in a checkpoint) with the ONNX graph (file or bytes) on ``tiles``."""
    graph = OnnxRuntimeBackend(onnx_model, providers=["CPUExecutionProvider"], intra_op_threads=PARITY_THREADS,
                               log_severity=3)
    reference = TorchBackend.from_module(network, graph.metadata, device="cpu")
    return compare_backends(reference, graph, tiles, tolerance, source)
