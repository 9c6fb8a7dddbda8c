"""Photos with no crack in them, as background: the joints, tiles and formwork of the structures a model
will inspect (``train.run --negatives FOLDER``).

A negatives folder holds image files only, in ``images/`` or in the folder itself; every pixel of every
photo is background (no masks to draw). This is how a field team teaches the model the straight
structures of *its* surfaces that no public crack set holds: photos of crack-free formwork walls, tiled
floors, saw-cut slabs, the survey photos whose alerts an inspector found to be joints (an alert's
``file`` names its photo; not the daemon's snapshots, which have the cracks painted on).

Split: a seeded share (``--val-fraction``) of the photos is held out for validation, the rest is
trained on (``splits/train.txt`` / ``splits/val.txt`` in the folder fix it by hand, as for a data
set); the split is recorded in the run folder under ``splits/negatives/<folder name>/``. Each epoch
draws ``--negatives-fraction`` of its crops from the training photos, cut and augmented as the crack
images are (:func:`train.data.recipe_crop`). Validation scores the held-out photos at the epoch's
threshold: the share of photos in which the model marks a piece of at least ``--negatives-min-area-px``
pixels (the daemon's smallest crack, ``measure.min_area_px``). It is reported beside the crack figures
and never chooses the epoch: the choice stays with the crack data sets' ODS.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from train.data import (
    IMAGE_EXTENSIONS,
    CropRecipe,
    DatasetError,
    Splits,
    files_by_stem,
    read_image,
    read_split_files,
    recipe_crop,
    resolve_splits,
    write_split_files,
)
from train.sources import source_names

NEGATIVES_CSV = "negatives.csv"  # in the run folder: one row per validated epoch
NEGATIVES_FIELDS = ("epoch", "images", "flagged", "rate", "threshold")


@dataclass(frozen=True)
class NegativeFolder:
    """One folder of crack-free photos with its split."""

    name: str
    root: Path
    images: dict[str, Path]  # by stem
    splits: Splits


def image_folder(root: Path) -> Path:
    """Where a negatives folder keeps its photos: ``images/`` when it has one, else the folder itself."""
    return root / "images" if (root / "images").is_dir() else root


def list_negative_images(root: str | os.PathLike) -> dict[str, Path]:
    """The photos of a negatives folder by stem; DatasetError naming the folder when there are none, or when
    the folder holds masks (a labelled data set belongs in ``--data``)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"--negatives folder {root} does not exist (expected a folder of crack-free photos)")
    if (root / "masks").is_dir():
        raise DatasetError(f"--negatives folder {root} has a masks/ folder: a labelled data set belongs in --data; "
                           "--negatives takes photos with no crack in them")
    folder = image_folder(root)
    images = files_by_stem(folder, IMAGE_EXTENSIONS)
    if not images:
        raise DatasetError(f"--negatives folder {folder} holds no image files (looked for {', '.join(IMAGE_EXTENSIONS)})")
    for path in images.values():  # the photos are read when used: a bad one is named now, not mid-epoch
        if not cv2.haveImageReader(str(path)):
            raise DatasetError(f"--negatives photo {path} is not an image OpenCV can read (empty, truncated header or "
                               "another format under an image name)")
    return images


def recorded_folder(run_folder: str | os.PathLike, name: str) -> Path:
    """Where a run folder records the split of negatives folder ``name``."""
    return Path(run_folder) / "splits" / "negatives" / name


def open_negatives(roots: Sequence[str | os.PathLike], *, seed: int, val_fraction: float,
                   run_folder: str | os.PathLike | None = None) -> list[NegativeFolder]:
    """List and split every negatives folder; ``run_folder``: a run whose recorded split to reuse (resume)."""
    folders = []
    for name, root in zip(source_names(roots, "--negatives folders"), roots, strict=True):
        images = list_negative_images(root)
        record = recorded_folder(run_folder, name) if run_folder is not None else None
        if record is not None and (record / "train.txt").is_file():
            splits = read_split_files(record, images, source=f"run folder {run_folder}")
        else:
            splits = resolve_splits(root, images, seed=seed, val_fraction=val_fraction, test_fraction=0.0)
        folders.append(NegativeFolder(name, Path(root), images, splits))
    return folders


def write_negative_splits(folders: Sequence[NegativeFolder], run_folder: str | os.PathLike) -> None:
    for folder in folders:
        write_split_files(folder.splits, recorded_folder(run_folder, folder.name))


@dataclass(frozen=True)
class NegativePhotos:
    """Photos of a negatives folder, read from disk each time one is used: a site's photos may be thousands of
    12-MP frames, far more than the crack sets' small images that training holds in memory."""

    paths: tuple[Path, ...]
    scale: float = 1.0

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, index: int) -> np.ndarray:
        """Photo ``index`` as RGB uint8, resized by ``scale`` (``--scale``, as the crack images)."""
        return read_image(self.paths[index], self.scale)


def negative_photos(folder: NegativeFolder, stems: Sequence[str], *, scale: float = 1.0) -> NegativePhotos:
    """The photos of ``stems`` of ``folder`` (read when used)."""
    return NegativePhotos(tuple(folder.images[stem] for stem in stems), scale)


class NegativeSource:
    """Crops of crack-free photos, as an extra source of :class:`train.data.TrainCrops`: item ``i`` is photo
    ``i % n`` of the folders' training photos together, read from disk and cut by the crack images' ``recipe``;
    mask all zero."""

    def __init__(self, photos: Sequence[NegativePhotos], recipe: CropRecipe) -> None:
        self.photos = [(set_, i) for set_ in photos for i in range(len(set_))]
        if not self.photos:
            raise DatasetError("the --negatives folders leave no training photos (every one is in the validation split)")
        self.recipe = recipe

    def __len__(self) -> int:
        return len(self.photos)

    def sample(self, item: int, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if size != self.recipe.size:
            raise DatasetError(f"negatives cut at {self.recipe.size} px, asked for {size} px")
        photos, index = self.photos[item % len(self.photos)]
        image = photos.read(index)
        return recipe_crop(image, np.zeros(image.shape[:2], np.uint8), rng, self.recipe)


def flags_a_piece(prob: np.ndarray, threshold: float, min_area_px: int) -> bool:
    """Whether a probability map holds a connected piece (8-connected) of ``prob >= threshold`` of at least
    ``min_area_px`` pixels: what the daemon would measure as a crack before its other checks."""
    mask = (prob >= threshold).astype(np.uint8)
    if int(mask.sum()) < min_area_px:
        return False
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    return bool(n > 1 and stats[1:, cv2.CC_STAT_AREA].max() >= min_area_px)


def score_negatives(predict: Callable[[np.ndarray], np.ndarray], sets: dict[str, NegativePhotos], threshold: float,
                    min_area_px: int) -> dict[str, object]:
    """Held-out crack-free photos at ``threshold``: how many the model marks a piece in, per folder and pooled."""
    per_folder = {}
    for name, photos in sets.items():
        flagged = sum(flags_a_piece(predict(photos.read(i)), threshold, min_area_px) for i in range(len(photos)))
        per_folder[name] = {"images": len(photos), "flagged": int(flagged)}
    images = sum(v["images"] for v in per_folder.values())
    flagged = sum(v["flagged"] for v in per_folder.values())
    return {"images": images, "flagged": flagged, "rate": flagged / images if images else float("nan"),
            "threshold": float(threshold), "min_area_px": int(min_area_px), "folders": per_folder}


def negatives_row(epoch: int, scored: dict[str, object]) -> dict[str, object]:
    """One ``negatives.csv`` row (:data:`NEGATIVES_FIELDS`) of :func:`score_negatives`' result."""
    return {"epoch": epoch, "images": scored["images"], "flagged": scored["flagged"],
            "rate": f"{float(scored['rate']):.6f}", "threshold": f"{float(scored['threshold']):.6f}"}
