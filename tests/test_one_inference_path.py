"""One inference path: the edge daemon and ``train.evaluate`` give the same probabilities for a frame.

A real (tiny, untrained) U-Net is exported with ``export.onnx`` at a static 64-px tile; the daemon
runs it on a folder of images through its threaded pipeline (batches mixing tiles of several frames),
``train.evaluate`` through its predictor, at the daemon's default ``model.flips``. Both run with their
defaults otherwise (no overlap set anywhere), at a
tile far under 512 px where an overlap default of 64 px could not even apply. Their per-frame
probability maps must be identical: any difference in tiling, overlap, padding, pre-processing or
stitching between the two would show here.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from edge_helpers import crack_image

torch = pytest.importorskip("torch", reason="the model is exported from a torch checkpoint")

from edge.config import load_config  # noqa: E402
from edge.daemon import build_pipeline  # noqa: E402
from edge.publish import LogPublisher  # noqa: E402
from export.onnx import export_checkpoint  # noqa: E402
from train.checkpoint import save_checkpoint  # noqa: E402
from train.evaluate import load_predictor  # noqa: E402
from train.model import build_model  # noqa: E402

TILE = 64


def test_daemon_and_evaluate_give_identical_probabilities(tmp_path) -> None:
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "best.pt", build_model(4, "deep"), size=TILE)
    model = export_checkpoint(tmp_path / "best.pt", tmp_path / "model.onnx", parity_tiles_n=2).path
    frames = tmp_path / "frames"
    frames.mkdir()
    # sizes that need several tiles, a flush last tile, and (40 px) a mirrored fill below one tile
    for i, (h, w) in enumerate([(150, 200), (64, 130), (40, 90)]):  # all tiled with 64-px tiles
        cv2.imwrite(str(frames / f"{i}.png"), crack_image(h, w, crack=i != 1, seed=i))

    config = load_config(None, [
        f"source.uri={frames}", f"model.path={model}", "model.batch_size=4", "model.intra_op_threads=1",
        f"alerts.state_path={tmp_path / 'state.json'}", "stats_interval_s=3600",
    ])
    daemon: dict[int, np.ndarray] = {}
    pipeline = build_pipeline(config, publisher=LogPublisher(stream=open(tmp_path / "a.jsonl", "w")),  # noqa: SIM115
                              on_frame=lambda outcome: daemon.__setitem__(outcome.frame.index, outcome.probability))
    try:
        pipeline.run()
    finally:
        pipeline.source.close()
        pipeline.publisher.close()
        pipeline.backend.close()

    predict, info = load_predictor(model, device="cpu", flips=config.model.flips)  # the daemon's default passes
    assert info["tile"] == TILE  # a static-tile graph is scored tiled, as the daemon runs it
    assert sorted(daemon) == [0, 1, 2]
    for i in range(3):
        image_rgb = cv2.cvtColor(cv2.imread(str(frames / f"{i}.png")), cv2.COLOR_BGR2RGB)
        evaluated = predict(image_rgb)
        assert evaluated.shape == daemon[i].shape == image_rgb.shape[:2]
        np.testing.assert_array_equal(evaluated, daemon[i])
