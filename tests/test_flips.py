"""Flip averaging (``contract.backends.flips``): real onnxruntime on a real (tiny, untrained) exported U-Net.

An untrained U-Net is not mirror-symmetric: its prediction of a mirrored tile is not the mirrored
prediction. Averaged over the four mirrorings it must be (up to float rounding), and equal the mean of
the inner backend's four mirrored predictions computed by hand; every consumer (load_backend, the
daemon's config, train.evaluate, calibration.threshold) must reach the same wrapper.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from edge_helpers import crack_image

from contract.backends import BackendError, load_backend
from contract.backends.flips import FLIP_AXES, FlipAveraged, check_flips, with_flips
from contract.preprocess import to_model_input
from edge.config import ConfigError, load_config

torch = pytest.importorskip("torch", reason="the test model is exported from a torch checkpoint")

from export.onnx import export_checkpoint  # noqa: E402
from train.checkpoint import save_checkpoint  # noqa: E402
from train.model import build_model  # noqa: E402

TILE = 64


@pytest.fixture(scope="module")
def unet(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("flips")
    torch.manual_seed(3)
    model = build_model(4, "deep")
    with torch.no_grad():  # the head's last 3x3 conv starts at zero (a constant prior): give it weights
        model.head[6].weight.normal_(0.0, 0.2)
    save_checkpoint(folder / "best.pt", model, size=TILE)
    return export_checkpoint(folder / "best.pt", folder / "model.onnx", parity_tiles_n=2).path


def tiles(n: int = 3) -> np.ndarray:
    return np.stack([crack_image(TILE, TILE, crack=i != 1, seed=10 + i) for i in range(n)])


def test_four_flips_are_the_mean_of_the_mirrored_predictions(unet: Path) -> None:
    plain = load_backend(unet, intra_op_threads=1)
    flipped = load_backend(unet, intra_op_threads=1, flips=4)
    assert isinstance(flipped, FlipAveraged) and flipped.flips == 4
    assert (flipped.name, flipped.metadata, flipped.input_shape, flipped.precision, flipped.any_size) == (
        plain.name, plain.metadata, plain.input_shape, plain.precision, plain.any_size)
    batch = to_model_input(tiles(), plain.metadata)
    by_hand = np.mean([np.flip(plain.infer(np.ascontiguousarray(np.flip(batch, axes))), axes)
                       for axes in ((), (3,), (2,), (2, 3))], axis=0)
    got = flipped.infer(batch)
    assert got.shape == (3, 1, TILE, TILE) and got.dtype == np.float32
    np.testing.assert_allclose(got, by_hand, atol=1e-6)
    # and it is not the single pass: the untrained network is far from mirror-symmetric
    assert float(np.abs(got - plain.infer(batch)).max()) > 1e-3


@pytest.mark.parametrize("flips", [2, 4])
def test_averaged_prediction_commutes_with_its_mirrorings(unet: Path, flips: int) -> None:
    plain = load_backend(unet, intra_op_threads=1)
    backend = load_backend(unet, intra_op_threads=1, flips=flips)
    batch = to_model_input(tiles(2), backend.metadata)
    prob = backend.infer(batch)
    for axes in FLIP_AXES[flips][1:]:
        mirrored = backend.infer(np.ascontiguousarray(np.flip(batch, axes)))
        np.testing.assert_allclose(mirrored, np.flip(prob, axes), atol=1e-6)
        # what the single pass lacks
        single = plain.infer(np.ascontiguousarray(np.flip(batch, axes)))
        assert float(np.abs(single - np.flip(plain.infer(batch), axes)).max()) > 1e-3


def test_one_flip_is_the_backend_itself_and_bad_counts_are_named(unet: Path) -> None:
    plain = load_backend(unet, intra_op_threads=1)
    assert with_flips(plain, 1) is plain
    for bad in (0, 3, 8, True, "4", 2.0):
        with pytest.raises(BackendError, match=r"flips must be one of 1, 2, 4"):
            check_flips(bad)
    # refused before the model is opened: the file need not exist
    with pytest.raises(BackendError, match=r"flips must be one of 1, 2, 4 .*got 3"):
        load_backend(unet.parent / "missing.onnx", flips=3)
    # the inner backend still checks the shape, with its own message
    with pytest.raises(BackendError, match=r"takes float32 N×3×64×64"):
        load_backend(unet, flips=4).infer(np.zeros((1, 3, 32, 32), np.float32))


def test_close_reaches_the_inner_backend(unet: Path) -> None:
    closed = []

    class Inner:
        name, any_size = "probe", False
        metadata = load_backend(unet).metadata
        input_shape, precision = (1, 3, TILE, TILE), "fp32"

        def infer(self, batch):
            return np.zeros((batch.shape[0], 1, TILE, TILE), np.float32)

        def close(self):
            closed.append(True)

    FlipAveraged(Inner(), 2).close()
    assert closed == [True]


def test_daemon_config_names_the_field(tmp_path: Path) -> None:
    assert load_config(None, ["model.flips=4"]).model.flips == 4
    with pytest.raises(ConfigError, match=r"model\.flips"):
        load_config(None, ["model.flips=3"])


def test_daemon_runs_the_flip_averaged_model_as_evaluate_does(unet: Path, tmp_path: Path) -> None:
    import cv2

    from edge.daemon import build_pipeline
    from edge.publish import LogPublisher
    from train.evaluate import load_predictor

    frames = tmp_path / "frames"
    frames.mkdir()
    for i, (h, w) in enumerate([(150, 200), (64, 130)]):
        cv2.imwrite(str(frames / f"{i}.png"), crack_image(h, w, crack=True, seed=i))
    config = load_config(None, [
        f"source.uri={frames}", f"model.path={unet}", "model.batch_size=4", "model.intra_op_threads=1",
        "model.flips=4", f"alerts.state_path={tmp_path / 'state.json'}", "stats_interval_s=3600",
    ])
    daemon: dict[int, np.ndarray] = {}
    pipeline = build_pipeline(config, publisher=LogPublisher(stream=open(tmp_path / "a.jsonl", "w")),  # noqa: SIM115
                              on_frame=lambda outcome: daemon.__setitem__(outcome.frame.index, outcome.probability))
    try:
        assert isinstance(pipeline.backend, FlipAveraged)
        pipeline.run()
    finally:
        pipeline.source.close()
        pipeline.publisher.close()
        pipeline.backend.close()
    predict4, info = load_predictor(unet, device="cpu", flips=4)
    predict1, _ = load_predictor(unet, device="cpu")
    assert info["flips"] == 4
    for i in range(2):
        image_rgb = cv2.cvtColor(cv2.imread(str(frames / f"{i}.png")), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(predict4(image_rgb), daemon[i])
        assert float(np.abs(predict1(image_rgb) - daemon[i]).max()) > 1e-3


def test_evaluate_records_flips_and_refuses_bad_ones(unet: Path, tmp_path: Path, shared_data: Path) -> None:
    from conftest import write_small_crackforest

    from train.evaluate import EvaluateError, evaluate_model, load_predictor, main

    data = write_small_crackforest(shared_data, tmp_path / "cfd")
    metrics = evaluate_model(unet, data, out=tmp_path / "eval", flips=2,
                             progress=False, overlays=0, device="cpu")
    assert metrics["flips"] == 2
    assert metrics["threshold_source"] == ("the onnx's metadata threshold (calibrated at one pass); "
                                           "none calibrated at 2 passes")
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["flips"] == 2
    with pytest.raises(EvaluateError, match=r"flips must be one of 1, 2, 4"):
        load_predictor(unet, device="cpu", flips=3)
    with pytest.raises(SystemExit):
        main(["--model", str(unet), "--data", str(data), "--flips", "3"])


def test_calibration_records_the_flips_its_threshold_was_chosen_at(unet: Path, tmp_path: Path) -> None:
    import shutil

    from calibration.threshold import open_model, write_threshold
    from contract.onnx_file import load_onnx, read_metadata

    model = Path(shutil.copy(unet, tmp_path / "m.onnx"))
    assert isinstance(open_model(model, 1, flips=2), FlipAveraged)
    before = read_metadata(load_onnx(model), source=str(model)).threshold
    write_threshold(model, 0.37, flips=4)
    meta = read_metadata(load_onnx(model), source=str(model))
    # the single-pass threshold stays; the four-pass one is recorded beside it
    assert meta.threshold == before and meta.extra["threshold_at_flips_4"] == "0.37"
    assert (meta.threshold_for(1), meta.threshold_for(4), meta.threshold_for(2)) == (before, 0.37, before)
    assert (meta.has_threshold_for(1), meta.has_threshold_for(4), meta.has_threshold_for(2)) == (True, True, False)
    write_threshold(model, 0.61)
    meta = read_metadata(load_onnx(model), source=str(model))
    assert (meta.threshold, meta.threshold_for(4)) == (0.61, 0.37)
    # what the evaluation and the daemon threshold at
    from train.evaluate import load_predictor

    four, two = load_predictor(model, device="cpu", flips=4)[1], load_predictor(model, device="cpu", flips=2)[1]
    assert (four["threshold"], two["threshold"]) == (0.37, 0.61)
    # and the evaluation says which of the stored thresholds it used
    assert four["threshold_stored"] == "metadata threshold_at_flips_4 (calibrated at 4 passes)"
    assert two["threshold_stored"] == "metadata threshold (calibrated at one pass); none calibrated at 2 passes"
    assert load_predictor(model, device="cpu")[1]["threshold_stored"] == "metadata threshold (calibrated at one pass)"


def test_a_bad_recorded_threshold_is_named() -> None:
    from contract.metadata import MetadataError, ModelMetadata

    for bad in ("x", "1.5"):
        with pytest.raises(MetadataError, match="threshold_at_flips_4"):
            ModelMetadata(extra={"threshold_at_flips_4": bad}).threshold_for(4)


def test_daemon_thresholds_at_the_flips_it_runs_and_warns_when_uncalibrated(unet: Path, tmp_path: Path,
                                                                            caplog) -> None:
    import shutil

    from calibration.threshold import write_threshold
    from edge.daemon import build_pipeline
    from edge.publish import LogPublisher

    model = Path(shutil.copy(unet, tmp_path / "m.onnx"))
    write_threshold(model, 0.45)
    write_threshold(model, 0.41, flips=4)
    (tmp_path / "frames").mkdir()
    import cv2

    cv2.imwrite(str(tmp_path / "frames" / "0.png"), crack_image(64, 64, crack=True, seed=0))

    def pipeline_at(*overrides: str):
        config = load_config(None, [f"source.uri={tmp_path / 'frames'}", f"model.path={model}",
                                    f"alerts.state_path={tmp_path / 'state.json'}", *overrides])
        pipeline = build_pipeline(config, publisher=LogPublisher(stream=open(tmp_path / "a.jsonl", "w")))  # noqa: SIM115
        pipeline.source.close()
        pipeline.publisher.close()
        return pipeline

    caplog.set_level("INFO", logger="edge.pipeline")
    assert pipeline_at("model.flips=4").threshold == 0.41
    assert pipeline_at("model.flips=1").threshold == 0.45
    assert "calibrated on single-pass predictions" not in caplog.text
    assert "threshold 0.41, 4 pass(es) per tile" in caplog.text
    assert pipeline_at("model.flips=2").threshold == 0.45
    assert "calibrated on single-pass predictions, not on 2 mirrored passes" in caplog.text
    assert pipeline_at("model.flips=4", "model.threshold=0.3").threshold == 0.3
