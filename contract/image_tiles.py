"""Model-ready tiles drawn from image folders exactly as the edge runtime cuts frames (no torch here).

For INT8 calibration (``calibration.int8``, the TensorRT calibrator of ``export.trt``), the export
parity check and the threshold search. Every image is read with OpenCV (BGR, as a camera frame) and
cut and normalised by :func:`contract.predict.frame_tiles` (same tile side and overlap as the daemon,
the model's own :class:`~contract.metadata.ModelMetadata`). So INT8 ranges are measured on the very
inputs the deployed model will see, padding included.

Selection is deterministic: images are sorted, shuffled with ``seed``, and at most
``ceil(max_tiles / n_images)`` tiles are taken from each (chosen with the same generator) until
``max_tiles`` is reached: a small budget spreads over many images rather than a few.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np

from contract.metadata import ModelMetadata
from contract.predict import frame_tiles
from contract.tiling import default_overlap

log = logging.getLogger("contract.image_tiles")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


class ImageFolderError(ValueError):
    """An image folder, split file or image is missing or unreadable; the message names it."""


@dataclass(frozen=True)
class TileSet:
    """Model-ready tiles (float32 N x 3 x S x S) and where each came from: (image path, y, x)."""

    tiles: np.ndarray
    sources: tuple[tuple[str, int, int], ...]

    def __len__(self) -> int:
        return int(self.tiles.shape[0])

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        """Consecutive batches (the last one may be smaller)."""
        for start in range(0, len(self), batch_size):
            yield self.tiles[start : start + batch_size]


def image_folder(folder: str | os.PathLike) -> Path:
    """The folder holding the images: ``folder/images`` for a data set root (DeepCrack layout), else ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageFolderError(f"image folder {folder} does not exist")
    return folder / "images" if (folder / "images").is_dir() else folder


def read_split(root: str | os.PathLike, split: str) -> list[str]:
    """Image stems of a split: ``root/splits/<split>.txt``, or ``split`` itself when it is a path to a
    ``.txt`` file (e.g. ``runs/x/splits/val.txt``, the validation images a training run held out).

    One stem per line; blank lines and ``#`` comments are ignored, as in ``train.data``."""
    given = Path(split)
    path = given if split.endswith(".txt") else Path(root) / "splits" / f"{split}.txt"
    if not path.is_file():
        available = sorted(p.stem for p in (Path(root) / "splits").glob("*.txt"))
        raise ImageFolderError(
            f"split file {path} does not exist; available splits: {available or 'none'} "
            "(pass a split file such as runs/<run>/splits/val.txt, or 'all' for every image)"
        )
    stems = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    return [stem for stem in stems if stem]


T = TypeVar("T")


def seeded_subset(items: Sequence[T], limit: int, seed: int = 0) -> list[T]:
    """``items``, or a seeded subset of ``limit`` of them (kept in their order) when 0 < ``limit`` < len.

    The one rule behind train.run's --val-max-images / --test-max-images and the --max-images of
    train.evaluate and calibration.threshold: the same stems, seed and limit give the same subset."""
    if not limit or len(items) <= limit:
        return list(items)
    keep = set(np.random.default_rng([seed, 0xA1]).choice(len(items), limit, replace=False).tolist())
    return [item for i, item in enumerate(items) if i in keep]


def list_images(folders: Sequence[str | os.PathLike] | str | os.PathLike, split: str | None = None) -> list[Path]:
    """Sorted image files of one or more folders (optionally only the stems of ``split``)."""
    if isinstance(folders, (str, os.PathLike)):
        folders = [folders]
    found: list[Path] = []
    for folder in folders:
        images = image_folder(folder)
        files = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if split is not None:
            wanted = set(read_split(folder, split))
            files = [p for p in files if p.stem in wanted]
        if not files:
            raise ImageFolderError(
                f"no images ({', '.join(IMAGE_SUFFIXES)}) in {images}" + (f" for split {split!r}" if split else "")
            )
        found.extend(files)
    return found


def read_bgr(path: str | os.PathLike) -> np.ndarray:
    """An image as an OpenCV BGR uint8 H x W x 3 array, as the edge runtime receives frames."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ImageFolderError(f"{path} could not be read as an image")
    return image


def draw_tiles(
    folders: Sequence[str | os.PathLike] | str | os.PathLike,
    meta: ModelMetadata,
    *,
    max_tiles: int = 64,
    seed: int = 0,
    overlap: int | None = None,
    split: str | None = None,
    cache: str | os.PathLike | None = None,
    progress: bool = True,
) -> TileSet:
    """Draw up to ``max_tiles`` model-ready tiles from the images of ``folders`` (deterministic in ``seed``).

    With ``cache`` (an ``.npy`` path) the tiles are stored there with a ``.json`` key beside them and
    reused as long as the images, metadata, seed, limit and overlap are the same.
    """
    if max_tiles < 1:
        raise ImageFolderError(f"max_tiles must be at least 1, got {max_tiles}")
    files = list_images(folders, split)
    if overlap is None:
        overlap = default_overlap(meta.input_size)
    key = _cache_key(files, meta, max_tiles, seed, overlap)
    if cache is not None:
        cached = _read_cache(Path(cache), key)
        if cached is not None:
            return cached
    from tqdm import tqdm  # lazy: only drawing tiles shows progress

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(files))
    per_image = math.ceil(max_tiles / len(files))
    tiles: list[np.ndarray] = []
    sources: list[tuple[str, int, int]] = []
    skipped = 0
    with tqdm(total=max_tiles, desc="calibration tiles", unit="tile", disable=not progress) as bar:
        for index in order:
            if len(sources) >= max_tiles:
                break
            try:
                image = read_bgr(files[index])
            except ImageFolderError:  # skipped, as the edge daemon skips it in an image folder
                log.warning("skipping %s: not a readable image (corrupt or unsupported format)", files[index])
                skipped += 1
                continue
            grid, batch = frame_tiles(image, meta, overlap)
            take = min(per_image, max_tiles - len(sources), len(batch))
            for t in sorted(rng.choice(len(batch), size=take, replace=False)):
                tiles.append(batch[t])
                y, x = grid.origins[t]
                sources.append((str(files[index]), int(y), int(x)))
            bar.update(take)
    if not tiles:
        raise ImageFolderError(f"none of the {skipped} images drawn from {len(files)} files could be read")
    result = TileSet(np.ascontiguousarray(np.stack(tiles), dtype=np.float32), tuple(sources))
    if cache is not None:
        _write_cache(Path(cache), key, result)
    return result


def _cache_key(files: list[Path], meta: ModelMetadata, max_tiles: int, seed: int, overlap: int | None) -> str:
    digest = hashlib.sha256()
    for f in files:
        stat = f.stat()
        digest.update(f"{f.resolve()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    params = {"meta": meta.to_props(), "max_tiles": max_tiles, "seed": seed, "overlap": overlap}
    digest.update(json.dumps(params, sort_keys=True).encode())
    return digest.hexdigest()


def _read_cache(path: Path, key: str) -> TileSet | None:
    side = path.with_suffix(".json")
    if not (path.is_file() and side.is_file()):
        return None
    info = json.loads(side.read_text())
    if info.get("key") != key:
        return None
    return TileSet(np.load(path), tuple(tuple(s) for s in info["sources"]))


def _write_cache(path: Path, key: str, data: TileSet) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npy")
    np.save(tmp, data.tiles)
    os.replace(tmp, path)
    path.with_suffix(".json").write_text(json.dumps({"key": key, "sources": [list(s) for s in data.sources]}))
