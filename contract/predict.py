"""One frame in, one crack-probability map out: tiler -> pre-processing -> backend -> stitcher.

The one inference path. The edge daemon runs these same steps on its threads (``edge.pipeline``
calls :func:`frame_tiles` on capture, ``backend.infer`` on batches, ``contract.tiling.stitch`` after); evaluation (``train.evaluate``, the training loop's validation),
threshold calibration, INT8 checks and the export parity check call :func:`predict_frame`. So a model
gives the same probabilities for the same frame wherever it runs (``tests/test_one_inference_path.py``).
"""

from __future__ import annotations

import numpy as np

from contract.backends.base import Backend, BackendError
from contract.metadata import SIDE_MULTIPLE, ModelMetadata
from contract.preprocess import to_model_input
from contract.tiling import TileGrid, extract_tiles, stitch, tile_grid


def frame_tiles(
    frame_bgr: np.ndarray, meta: ModelMetadata, overlap: int | None = None, tile: int | None = None
) -> tuple[TileGrid, np.ndarray]:
    """(grid, model-ready tiles N x 3 x S x S float32) of one BGR frame, cut as the daemon cuts it.

    ``tile`` defaults to the model's input size, ``overlap`` (pixels) to
    :func:`contract.tiling.default_overlap` of the tile.
    """
    tile = tile or meta.input_size
    grid = tile_grid(frame_bgr.shape[0], frame_bgr.shape[1], tile=tile, overlap=overlap)
    return grid, to_model_input(extract_tiles(frame_bgr, grid), meta)


def predict_frame(
    backend: Backend, frame_bgr: np.ndarray, *, overlap: int | None = None, whole_image: bool = False
) -> np.ndarray:
    """Crack probability H x W float32 of a BGR uint8 frame H x W x 3 (an OpenCV image).

    Tiled at the backend's input size with ``overlap`` pixels (default: an eighth of the tile, at most
    64) and stitched with the blend of :func:`contract.tiling.stitch`. With ``whole_image`` (only for
    a backend whose network takes any size, ``backend.any_size``) the frame is instead zero-padded at
    the bottom/right to a multiple of 16, run in one piece and cropped back: how the training loop
    validates a network on whole images.
    """
    if whole_image:
        if not backend.any_size:
            raise BackendError(
                f"{backend.name} backend takes only {backend.input_shape[2]}x{backend.input_shape[3]} tiles, "
                "not whole images: predict it tiled (whole_image=False)"
            )
        height, width = frame_bgr.shape[:2]
        pad = [(0, -height % SIDE_MULTIPLE), (0, -width % SIDE_MULTIPLE), (0, 0)]
        padded = np.pad(frame_bgr, pad) if any(p[1] for p in pad) else frame_bgr
        prob = backend.infer(to_model_input(padded, backend.metadata))[0, 0]
        return np.ascontiguousarray(prob[:height, :width], dtype=np.float32)
    _, _, tile_h, tile_w = backend.input_shape
    if tile_h != tile_w:
        raise BackendError(f"{backend.name} backend takes {tile_h}x{tile_w} inputs; tiles must be square")
    grid, tiles = frame_tiles(frame_bgr, backend.metadata, overlap, tile=tile_h)
    return stitch(backend.infer(tiles), grid)
