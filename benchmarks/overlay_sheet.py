"""A model card's pictures: per data set, a typical and the worst test image of a model, as overlays.

``python -m benchmarks.overlay_sheet --model edge/assets/demo_model.onnx --data A,B,... --out sheet.jpg``

For each data set a seeded subset of ``--max-images`` test images (the rule of train.evaluate, each set's
own split) is predicted through ``train.evaluate.load_predictor`` (the daemon's tiler for a fixed-tile
ONNX model) and scored one by one: F-beta (beta^2 = 0.3, 0 px) at the model's threshold, counting an
image without crack pixels and without predictions as F = 1. The sheet shows, per row, the set's
image of median F ("typical") and of lowest F ("worst"), drawn by ``train.report.overlay`` (green found,
red false, blue missed) and captioned with the stem and F. The worst column is where the failure modes
show; it is chosen by the score, not by eye.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from contract.image_tiles import seeded_subset
from contract.metrics import confusion, prf
from train.config import split_data_list
from train.data import list_samples, load_images
from train.evaluate import choose_splits, load_predictor
from train.report import overlay

CELL_HEIGHT = 240
CAPTION_HEIGHT = 38
MIN_WIDTH = 240


def image_f_beta(prob: np.ndarray, mask: np.ndarray, threshold: float) -> float:
    """F-beta of one image at ``threshold`` (0 px tolerance, ``contract.metrics``); 1 for no crack predicted
    on a crack-free image."""
    return prf(*confusion(prob >= threshold, mask))[2]


def captioned(picture: np.ndarray, lines: tuple[str, str]) -> np.ndarray:
    """``picture`` scaled to CELL_HEIGHT (at least MIN_WIDTH wide) with a two-line caption bar above it."""
    scale = max(CELL_HEIGHT / picture.shape[0], MIN_WIDTH / picture.shape[1])
    picture = cv2.resize(picture, (round(picture.shape[1] * scale), round(picture.shape[0] * scale)),
                         interpolation=cv2.INTER_NEAREST)[:CELL_HEIGHT]
    picture = np.vstack([picture, np.full((CELL_HEIGHT - picture.shape[0], picture.shape[1], 3), 255, np.uint8)])
    bar = np.full((CAPTION_HEIGHT, picture.shape[1], 3), 255, np.uint8)
    fit = max(8, picture.shape[1] // 8)  # characters that fit at this font size
    for row, text in enumerate(lines):
        text = text if len(text) <= fit else "..." + text[-(fit - 3):]
        cv2.putText(bar, text, (4, 15 + 17 * row), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([bar, picture])


def sheet_rows(model: Path, datas: list[Path], max_images: int, split: str = "test") -> list[list[np.ndarray]]:
    predict, info = load_predictor(model, "cpu")
    threshold = float(info["threshold"])
    rows = []
    for data in datas:
        samples = list_samples(data)
        splits = choose_splits(model, data, samples, info["train_config"], None, 0, 0.1, 0.2)
        stems = seeded_subset(splits.get(split), max_images, 0)
        images = load_images(samples, stems)
        scored = []
        for index in range(len(images)):
            prob = predict(images.images[index])
            scored.append((image_f_beta(prob, images.masks[index], threshold), index, prob))
        scored.sort(key=lambda item: item[0])
        picks = {"typical": scored[len(scored) // 2], "worst": scored[0]}
        row = []
        for label, (f, index, prob) in picks.items():
            picture = overlay(images.images[index], prob, images.masks[index], threshold)
            row.append(captioned(picture, (f"{data.name} {label}: F {f:.2f}", images.stems[index])))
        rows.append(row)
        print(f"{data.name}: {len(images)} images, per-image F median {picks['typical'][0]:.3f}, "
              f"worst {picks['worst'][0]:.3f}", flush=True)
    return rows


def assemble(rows: list[list[np.ndarray]]) -> np.ndarray:
    width = max(sum(cell.shape[1] for cell in row) + 8 * (len(row) - 1) for row in rows)
    lines = []
    for row in rows:
        gap = np.full((row[0].shape[0], 8, 3), 255, np.uint8)
        line = np.hstack([part for cell in row for part in (cell, gap)][:-1])
        pad = np.full((line.shape[0], width - line.shape[1], 3), 255, np.uint8)
        lines.extend([np.hstack([line, pad]), np.full((8, width, 3), 255, np.uint8)])
    return np.vstack(lines[:-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.overlay_sheet", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, type=Path, help=".onnx model or .pt checkpoint")
    parser.add_argument("--data", required=True, action="append", help="data set folders (repeat or comma-separate)")
    parser.add_argument("--max-images", type=int, default=30, help="seeded test images per set (default: %(default)s)")
    parser.add_argument("--out", required=True, type=Path, help="the sheet (.jpg or .png)")
    args = parser.parse_args(argv)
    rows = sheet_rows(args.model, [Path(d) for d in split_data_list(args.data)], args.max_images)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(args.out), assemble(rows), [cv2.IMWRITE_JPEG_QUALITY, 85]):
        print(f"error: could not write {args.out}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
