"""train.evaluate: a checkpoint scores what its training run reported; an ONNX export (real onnxruntime)
scores the same; bad model files give a message."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import write_small_crackforest

from contract.metadata import INPUT_NAME, OUTPUT_NAME, ModelMetadata
from train.checkpoint import load_model
from train.evaluate import EvaluateError, evaluate_model
from train.evaluate import main as evaluate_main
from train.run import main as run_main

KEYS = ("precision", "recall", "f_beta", "f1", "iou", "ods_f", "ods_threshold", "ois_f", "ap", "n_images")


@pytest.fixture(scope="module")
def trained_run(shared_data, tmp_path_factory) -> tuple[Path, Path]:
    """(data set of 12 real CrackForest pairs at 1/4 size, a run folder trained on it for 2 short epochs)."""
    base = tmp_path_factory.mktemp("evaluate")
    root = write_small_crackforest(shared_data, base / "cfd_small", image_ext=".jpg")
    run = base / "run"
    args = ["--data", str(root), "--width", "4", "--size", "64", "--epochs", "2", "--lr", "1e-3", "--workers", "0",
            "--no-progress", "--test-fraction", "0.34", "--out", str(run)]
    assert run_main(args) == 0
    return root, run


def export_onnx(checkpoint: Path, path: Path, tile: int | None) -> Path:
    """torch.onnx.export (TorchScript) of sigmoid(U-Net) with the metadata the edge runtime reads."""
    model, payload = load_model(checkpoint)

    class WithSigmoid(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.unet = model

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.unet(image))

    side = tile or 64
    axes = {0: "batch"} if tile else {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(WithSigmoid().eval(), (torch.zeros(1, 3, side, side),), str(path), input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes},
                          opset_version=17, dynamo=False)
    graph = onnx.load(str(path))
    meta = ModelMetadata(width=payload["model"]["width"], head=payload["model"]["head"], input_size=side,
                         threshold=payload["threshold"])
    for key, value in meta.to_props().items():
        graph.metadata_props.add(key=key, value=value)
    onnx.save(graph, str(path))
    return path


def test_checkpoint_evaluation_reproduces_the_run_metrics(trained_run, tmp_path, capsys):
    data, run = trained_run
    reported = json.loads((run / "metrics.json").read_text())
    assert evaluate_main(["--model", str(run / "best.pt"), "--data", str(data), "--out", str(tmp_path / "e"),
                          "--no-progress", "--overlays", "1"]) == 0
    scored = json.loads((tmp_path / "e" / "metrics.json").read_text())
    for key in KEYS:
        assert scored[key] == pytest.approx(reported[key], abs=1e-9), key
    assert scored["threshold"] == reported["threshold"] and scored["split_source"].startswith("run folder")
    assert (tmp_path / "e" / "pr_curve.png").is_file() and len(list((tmp_path / "e" / "overlays").glob("*.png"))) == 1
    assert "test (4 images)" in capsys.readouterr().out


def test_onnx_whole_image_matches_checkpoint(trained_run, tmp_path):
    data, run = trained_run
    model = export_onnx(run / "best.pt", tmp_path / "model.onnx", tile=None)
    from_pt = evaluate_model(run / "best.pt", data, splits_dir=run, out=tmp_path / "pt", progress=False)
    from_onnx = evaluate_model(model, data, splits_dir=run, out=tmp_path / "onnx", progress=False)
    assert from_onnx["model_kind"] == "onnx" and from_onnx["n_images"] == from_pt["n_images"] == 4
    for key in ("ods_f", "ap", "ois_f"):
        assert from_onnx[key] == pytest.approx(from_pt[key], abs=2e-3), key
    assert from_onnx["threshold"] == pytest.approx(from_pt["threshold"])


def test_onnx_static_tile_is_tiled(trained_run, tmp_path):
    data, run = trained_run
    model = export_onnx(run / "best.pt", tmp_path / "tile64.onnx", tile=64)
    metrics = evaluate_model(model, data, split="val", splits_dir=run, out=tmp_path / "t", progress=False)
    assert metrics["onnx_tile"] == 64 and metrics["split"] == "val" and metrics["n_images"] >= 1
    assert 0.0 <= metrics["ods_f"] <= 1.0 and (tmp_path / "t" / "pr_curve.csv").is_file()


def test_bad_model_files_are_explained(trained_run, tmp_path, capsys):
    data, _ = trained_run
    with pytest.raises(EvaluateError, match="does not exist"):
        evaluate_model(tmp_path / "none.pt", data)
    (tmp_path / "weights.h5").write_bytes(b"x")
    with pytest.raises(EvaluateError, match="expected a .pt checkpoint"):
        evaluate_model(tmp_path / "weights.h5", data)
    bare = tmp_path / "bare.onnx"
    export_onnx(trained_run[1] / "best.pt", bare, tile=None)
    graph = onnx.load(str(bare))
    del graph.metadata_props[:]
    onnx.save(graph, str(bare))
    assert evaluate_main(["--model", str(bare), "--data", str(data), "--no-progress"]) == 2
    assert "python -m export.onnx" in capsys.readouterr().err
    torch.save({"not": "a checkpoint"}, tmp_path / "other.pt")
    assert evaluate_main(["--model", str(tmp_path / "other.pt"), "--data", str(data), "--no-progress"]) == 2
    assert "is not an aelf-unet-checkpoint file" in capsys.readouterr().err


def test_upsampled_prediction_is_scored_at_the_images_own_size():
    """train.inference.upsampled_predictor: the image reaches the model enlarged as the daemon enlarges a
    coarse-GSD frame (contract.tiling.resize_to_gsd), the probability comes back at the image's pixels."""
    from train.inference import upsampled_predictor

    seen = []

    def darkness(image):  # a "model" that calls dark pixels cracks, and records what it was given
        seen.append(image.shape)
        return 1.0 - image.mean(axis=2, dtype=np.float32) / 255.0

    image = np.full((60, 90, 3), 200, np.uint8)
    image[30, 10:80] = 20  # a 1-px dark line
    assert upsampled_predictor(darkness, 1.0) is darkness
    prob = upsampled_predictor(darkness, 2.0)(image)
    assert seen[-1] == (120, 180, 3) and prob.shape == (60, 90) and prob.dtype == np.float32
    assert prob[30, 20:70].min() > 0.6 and prob[10, :].max() < 0.25  # the line is back where it was
    assert abs(float(prob.mean()) - float(darkness(image).mean())) < 0.01
    for bad in (0.5, float("nan")):
        with pytest.raises(ValueError, match="upsampling factor must be >= 1"):
            upsampled_predictor(darkness, bad)


def test_per_image_counts_pair_two_evaluations_for_the_bootstrap(trained_run, tmp_path, capsys):
    """train.evaluate writes every image's counts; benchmarks.paired_bootstrap pairs two evaluations by stem."""
    from benchmarks import paired_bootstrap

    data, run = trained_run
    model = export_onnx(run / "best.pt", tmp_path / "model.onnx", tile=None)
    a = evaluate_model(run / "best.pt", data, splits_dir=run, out=tmp_path / "a", progress=False)
    evaluate_model(model, data, splits_dir=run, out=tmp_path / "b", progress=False)
    with np.load(tmp_path / "a" / "counts.npz") as saved:
        counts, stems = saved["counts"], saved["stems"]
        assert counts.shape == (4, 3, 99) and len(stems) == 4 and int(saved["tolerance_px"]) == 0
    assert "stems" not in json.loads((tmp_path / "a" / "metrics.json").read_text())
    from contract.metrics import ods_of_counts

    assert float(ods_of_counts(counts)) == pytest.approx(a["ods_f"], abs=1e-12)
    assert paired_bootstrap.main(["--a", str(tmp_path / "a"), "--b", str(tmp_path / "a"), "--resamples", "200",
                                  "--no-append"]) == 0
    assert "| +0.0000 | [+0.0000, +0.0000] | 0.000 |" in capsys.readouterr().out, "a model against itself"
    assert paired_bootstrap.main(["--a", str(tmp_path / "a"), "--b", str(tmp_path / "b"), "--resamples", "200",
                                  "--no-append"]) == 0
    # --at used: each model at the threshold its evaluation decided at, the F train.evaluate reported there
    b_metrics = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert paired_bootstrap.main(["--a", str(tmp_path / "a"), "--b", str(tmp_path / "b"), "--at", "used",
                                  "--resamples", "200", "--no-append"]) == 0
    out = capsys.readouterr().out
    assert "at the thresholds used" in out and f" {b_metrics['at_threshold']['f_beta']:.4f} |" in out
    assert f"| {a['threshold']:.2f} / {b_metrics['threshold']:.2f} |" in out
    (tmp_path / "b" / "metrics.json").write_text("{}")
    assert paired_bootstrap.main(["--a", str(tmp_path / "a"), "--b", str(tmp_path / "b"), "--at", "used",
                                  "--no-append"]) == 2
    assert "no readable 'threshold'" in capsys.readouterr().err
    other = tmp_path / "val"
    evaluate_model(run / "best.pt", data, split="val", splits_dir=run, out=other, progress=False)
    assert paired_bootstrap.main(["--a", str(tmp_path / "a"), "--b", str(other), "--no-append"]) == 2
    assert "different images" in capsys.readouterr().err
    assert paired_bootstrap.main(["--a", str(tmp_path / "a"), "--b", str(tmp_path / "none"), "--no-append"]) == 2
    assert "no counts.npz" in capsys.readouterr().err
