"""Crack data sets on disk: listing, checking, splitting, loading, and the torch datasets.

A data set folder holds ``images/`` and ``masks/`` with the same file stem (``images/001.jpg`` ->
``masks/001.png``). Images are any format OpenCV reads; masks are single-channel 0/255 (1 = crack
where 255). Optional ``splits/train.txt``, ``splits/test.txt`` and ``splits/val.txt`` list stems,
one a line (``#`` comments and blank lines ignored).

Splits (:func:`resolve_splits`):

* ``train.txt`` + ``test.txt`` present (DeepCrack): used as they are; only one present: the other
  is every remaining stem;
* neither present (CrackForest): a deterministic shuffle by ``seed`` puts ``test_fraction`` (20 %)
  of the stems into test;
* validation (best-epoch selection, the decision threshold): ``splits/val.txt`` when present,
  else a seeded ``val_fraction`` (10 %) of the training stems, which then leave the training set.

The resolved split is written into the run folder (:func:`write_splits`) so that a run can be
repeated and resumed on exactly the same images.

Everything is loaded once into memory as uint8 (DeepCrack: ~340 MB, CrackForest: ~55 MB) after
being checked; the model sees RGB float32 in [0, 1] (``train.checkpoint.DEFAULT_INPUT``) and masks as
float {0, 1}.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from contract.metadata import SIDE_MULTIPLE
from train.augment import AugmentConfig, random_affine, random_crop
from train.sampling import epoch_plan

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
MASK_EXTENSIONS = (".png", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg")  # PNG first: lossless
SPLIT_NAMES = ("train", "val", "test")


class DatasetError(ValueError):
    """A data set folder, file or split is not what training expects; the message names it."""


# ----------------------------------------------------------------------------- listing


@dataclass(frozen=True)
class Sample:
    """One image/mask pair on disk."""

    stem: str
    image_path: Path
    mask_path: Path


def files_by_stem(folder: Path, extensions: Sequence[str]) -> dict[str, Path]:
    """The files of ``folder`` with one of ``extensions`` (any case) by stem; DatasetError when two share a stem."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.suffix.lower() not in extensions:
            continue
        if path.stem in found:
            raise DatasetError(
                f"{folder} has two files with the stem {path.stem!r} ({found[path.stem].name}, {path.name}); "
                "stems must be unique so that images and masks pair up"
            )
        found[path.stem] = path
    return found


def list_samples(root: str | os.PathLike) -> dict[str, Sample]:
    """All image/mask pairs of a data set folder by stem; raises DatasetError for a missing mask."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"data set folder {root} does not exist (expected a folder with images/ and masks/)")
    for sub in ("images", "masks"):
        if not (root / sub).is_dir():
            raise DatasetError(f"data set folder {root} has no {sub}/ folder (expected images/ and masks/ side by side)")
    images = files_by_stem(root / "images", IMAGE_EXTENSIONS)
    if not images:
        raise DatasetError(
            f"{root / 'images'} holds no image files (looked for {', '.join(IMAGE_EXTENSIONS)})"
        )
    masks = files_by_stem(root / "masks", MASK_EXTENSIONS)
    samples = {}
    for stem, image_path in images.items():
        if stem not in masks:
            raise DatasetError(
                f"image {image_path} has no mask: expected {root / 'masks' / (stem + '.png')} "
                "(same stem, 0/255 PNG)"
            )
        samples[stem] = Sample(stem, image_path, masks[stem])
    return samples


# ----------------------------------------------------------------------------- reading files


def read_image(path: str | os.PathLike, scale: float = 1.0) -> np.ndarray:
    """An image file as RGB uint8 H x W x 3 (grey images are repeated to 3 channels).

    ``scale`` != 1 resizes it (area interpolation when shrinking, bilinear when growing).
    """
    path = Path(path)
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetError(f"image {path} could not be read by OpenCV (missing, empty or not an image file)")
    image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if scale != 1.0:
        image = resize_image(image, scale)
    return image


def read_mask(path: str | os.PathLike, *, binarize: bool = False) -> np.ndarray:
    """A mask file as uint8 H x W in {0, 1}.

    The file must hold only 0 and 255; with ``binarize`` (masks saved as JPEG or anti-aliased),
    values >= 128 count as crack instead.
    """
    path = Path(path)
    mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise DatasetError(f"mask {path} could not be read by OpenCV (missing, empty or not an image file)")
    if binarize:
        return (mask >= 128).astype(np.uint8)
    values = np.unique(mask)
    extra = values[(values != 0) & (values != 255)]
    if extra.size:
        shown = ", ".join(str(int(v)) for v in extra[:8]) + (", ..." if extra.size > 8 else "")
        raise DatasetError(
            f"mask {path} is not binary: besides 0 and 255 it holds the values {shown} "
            f"({extra.size} other values); save masks as 0/255 PNG, or pass --binarize-masks to "
            "threshold at 128 (for JPEG masks)"
        )
    return (mask == 255).astype(np.uint8)


def resize_image(image: np.ndarray, scale: float) -> np.ndarray:
    """Resize an image by ``scale`` (area interpolation when shrinking)."""
    h, w = image.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def resize_mask(mask: np.ndarray, scale: float) -> np.ndarray:
    """Resize a {0, 1} mask by ``scale``: a pixel is crack when >= 1/4 of its area was crack.

    The 1/4 rule keeps 1-pixel cracks connected at scale 0.5 (their relative width doubles);
    nearest-neighbour would break them into dashes.
    """
    if scale == 1.0:
        return mask
    coverage = resize_image(mask.astype(np.float32), scale)
    return (coverage >= 0.25).astype(np.uint8)


def load_pair(sample: Sample, *, scale: float = 1.0, binarize_masks: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Read and check one pair: (RGB uint8 H x W x 3, mask uint8 H x W in {0, 1})."""
    image = read_image(sample.image_path)
    mask = read_mask(sample.mask_path, binarize=binarize_masks)
    if image.shape[:2] != mask.shape:
        raise DatasetError(
            f"mask {sample.mask_path} is {mask.shape[1]}x{mask.shape[0]} (WxH) but image {sample.image_path} "
            f"is {image.shape[1]}x{image.shape[0]}; a mask must have its image's size"
        )
    if scale != 1.0:
        image, mask = resize_image(image, scale), resize_mask(mask, scale)
    return image, mask


# ----------------------------------------------------------------------------- splits


@dataclass(frozen=True)
class Splits:
    """Stems of each split and where they came from ("files" or "seed N")."""

    train: list[str]
    val: list[str]
    test: list[str]
    source: str = "files"

    def get(self, name: str) -> list[str]:
        if name not in SPLIT_NAMES:
            raise DatasetError(f"unknown split {name!r}; valid: {', '.join(SPLIT_NAMES)}")
        return getattr(self, name)


def read_split_file(path: str | os.PathLike, available: Iterable[str]) -> list[str]:
    """Stems listed in a split file; raises DatasetError for a stem that has no image."""
    path = Path(path)
    known = set(available)
    stems: list[str] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        stem = line.split("#", 1)[0].strip()
        if not stem:
            continue
        stem = Path(stem).stem if Path(stem).suffix.lower() in IMAGE_EXTENSIONS else stem
        if stem not in known:
            raise DatasetError(
                f"{path} line {number}: stem {stem!r} has no image in {path.parent.parent / 'images'}"
            )
        stems.append(stem)
    if not stems:
        raise DatasetError(f"split file {path} lists no stems")
    return stems


def _seeded_take(stems: Sequence[str], fraction: float, seed: int, salt: int) -> tuple[list[str], list[str]]:
    """Split sorted ``stems`` into (kept, taken) with ``round(fraction * n)`` taken (>= 1 when fraction > 0)."""
    if not 0.0 <= fraction < 1.0:
        raise DatasetError(f"a split fraction must be in [0, 1), got {fraction}")
    ordered = sorted(stems)
    n_take = round(fraction * len(ordered))
    if fraction > 0 and n_take == 0 and len(ordered) > 1:
        n_take = 1
    order = np.random.default_rng([seed, salt]).permutation(len(ordered))
    taken = {ordered[i] for i in order[:n_take]}
    return [s for s in ordered if s not in taken], [s for s in ordered if s in taken]


def resolve_splits(
    root: str | os.PathLike,
    stems: Iterable[str],
    *,
    seed: int,
    val_fraction: float,
    test_fraction: float,
) -> Splits:
    """Train/val/test stems for a data set folder (rules in the module docstring)."""
    root = Path(root)
    stems = sorted(stems)
    split_dir = root / "splits"
    files = {name: split_dir / f"{name}.txt" for name in SPLIT_NAMES}
    listed = {name: read_split_file(p, stems) for name, p in files.items() if p.is_file()}
    if "train" in listed or "test" in listed:
        source = "files"
        test = listed.get("test")
        train = listed.get("train")
        if test is None:
            test = [s for s in stems if s not in set(train)]
        if train is None:
            train = [s for s in stems if s not in set(test)]
    else:
        source = f"seed {seed}"
        train, test = _seeded_take(stems, test_fraction, seed, salt=1)
    if "val" in listed:
        val = listed["val"]
        train = [s for s in train if s not in set(val)]
    else:
        train, val = _seeded_take(train, val_fraction, seed, salt=2)
    overlap = set(train) & set(test)
    if overlap:
        raise DatasetError(
            f"{split_dir}: {len(overlap)} stems are in both train and test (e.g. {sorted(overlap)[0]!r})"
        )
    if not train:
        raise DatasetError(f"data set {root} leaves no training images (train split is empty)")
    return Splits(train=train, val=val, test=test, source=source)


def write_split_files(splits: Splits, folder: str | os.PathLike) -> Path:
    """Write ``train.txt``, ``val.txt``, ``test.txt`` (one stem a line) into ``folder``; returns it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in SPLIT_NAMES:
        (folder / f"{name}.txt").write_text("".join(f"{s}\n" for s in splits.get(name)), encoding="utf-8")
    return folder


def read_split_files(folder: str | os.PathLike, available: Iterable[str], *, source: str) -> Splits:
    """The splits :func:`write_split_files` wrote into ``folder`` (an empty file is an empty split)."""
    folder = Path(folder)
    known = list(available)
    lists = {}
    for name in SPLIT_NAMES:
        path = folder / f"{name}.txt"
        if not path.is_file():
            raise DatasetError(f"{folder} has no {path.name} (written by train.run)")
        text = path.read_text(encoding="utf-8").strip()
        lists[name] = read_split_file(path, known) if text else []
    return Splits(**lists, source=source)


def write_splits(splits: Splits, folder: str | os.PathLike) -> Path:
    """Write ``splits/train.txt``, ``val.txt``, ``test.txt`` into a run folder; returns the splits folder."""
    return write_split_files(splits, Path(folder) / "splits")


def read_run_splits(run_folder: str | os.PathLike, available: Iterable[str]) -> Splits:
    """The splits a run wrote with :func:`write_splits` (used on resume)."""
    return read_split_files(Path(run_folder) / "splits", available, source=f"run folder {run_folder}")


# ----------------------------------------------------------------------------- in-memory images


@dataclass
class CrackImages:
    """Checked image/mask pairs held in memory: RGB uint8 H x W x 3 and {0, 1} uint8 H x W."""

    stems: list[str]
    images: list[np.ndarray] = field(repr=False)
    masks: list[np.ndarray] = field(repr=False)

    def __len__(self) -> int:
        return len(self.stems)


def load_images(
    samples: dict[str, Sample],
    stems: Sequence[str],
    *,
    scale: float = 1.0,
    binarize_masks: bool = False,
    progress: bool = False,
    desc: str = "loading",
) -> CrackImages:
    """Read and check the pairs of ``stems`` (in order)."""
    if scale <= 0 or not math.isfinite(scale):
        raise DatasetError(f"--scale must be a positive factor, got {scale}")
    iterator: Iterable[str] = stems
    if progress:
        from tqdm import tqdm

        iterator = tqdm(stems, desc=desc, unit="img", leave=False)
    images, masks = [], []
    for stem in iterator:
        if stem not in samples:
            raise DatasetError(f"stem {stem!r} has no image/mask pair in the data set")
        image, mask = load_pair(samples[stem], scale=scale, binarize_masks=binarize_masks)
        images.append(image)
        masks.append(mask)
    return CrackImages(list(stems), images, masks)


def to_chw_float(image: np.ndarray) -> np.ndarray:
    """RGB uint8 H x W x 3 -> float32 3 x H x W in [0, 1] (the model input contract)."""
    return np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32) * np.float32(1.0 / 255.0)


# ----------------------------------------------------------------------------- padding


def pad_to_multiple(array: np.ndarray, multiple: int = SIDE_MULTIPLE, value: float = 0) -> tuple[np.ndarray, tuple[int, int]]:
    """Pad an H x W (x C) array at the bottom/right so both sides divide by ``multiple``.

    Returns ``(padded, (h, w))``; crop predictions back with ``prediction[:h, :w]`` so the padded area
    never counts.
    """
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    h, w = array.shape[:2]
    pad_h, pad_w = -h % multiple, -w % multiple
    if pad_h == 0 and pad_w == 0:
        return array, (h, w)
    widths = [(0, pad_h), (0, pad_w)] + [(0, 0)] * (array.ndim - 2)
    return np.pad(array, widths, mode="constant", constant_values=value), (h, w)


def crop_to(array: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Undo :func:`pad_to_multiple` on the last two axes (H x W, or N x ... x H x W)."""
    h, w = size_hw
    return array[..., :h, :w]


# ----------------------------------------------------------------------------- torch datasets


@dataclass(frozen=True)
class CropRecipe:
    """How a training crop is made from an image (each step switchable; see docs/TRAIN.md).

    ``scale_range``: a random rescale, log-uniform, before anything else; factors < 1 turn 3-6 px
    cracks into 1-3 px ones (thin cracks are what a camera farther away sees). ``small_images``: what
    happens to an image with a side shorter than the crop: ``mirror`` reflects it (image and mask,
    so every pixel stays labelled), ``pad`` fills with black and leaves the fill out of the loss,
    ``resize`` enlarges it until it covers the crop (cracks get wider).
    """

    size: int
    augment: AugmentConfig | None = None
    scale_range: tuple[float, float] = (1.0, 1.0)
    small_images: str = "mirror"
    photometric: Any = None  # train.photometric.PhotometricConfig or None

    def __post_init__(self) -> None:
        if self.size < SIDE_MULTIPLE or self.size % SIDE_MULTIPLE:
            raise DatasetError(f"--size must be a multiple of {SIDE_MULTIPLE} and >= {SIDE_MULTIPLE}, got {self.size}")
        if self.small_images not in ("mirror", "pad", "resize"):
            raise DatasetError(f"--small-images must be mirror, pad or resize, got {self.small_images!r}")


def random_rescale(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
                   scale_range: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Resize a pair by a log-uniform factor in ``scale_range`` (mask by the 1/4-coverage rule)."""
    lo, hi = scale_range
    if lo == hi == 1.0:
        return image, mask
    factor = float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    return resize_image(image, factor), resize_mask(mask, factor)


def fit_small_image(image: np.ndarray, mask: np.ndarray, size: int, policy: str
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Make a pair at least ``size`` on both sides by ``policy`` (:class:`CropRecipe`); returns (image, mask, valid)."""
    h, w = mask.shape
    if h >= size and w >= size:
        return image, mask, None
    if policy == "resize":
        factor = size / min(h, w)
        image = cv2.resize(image, (max(size, round(w * factor)), max(size, round(h * factor))),
                           interpolation=cv2.INTER_LINEAR)
        mask = cv2.resize(mask, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST)
        return image, mask, None
    if policy == "mirror":
        pad = [(0, max(0, size - h)), (0, max(0, size - w))]
        # numpy's symmetric mode repeats the reflection, so a 120-px crop can fill a 512-px crop
        return (np.pad(image, pad + [(0, 0)], mode="symmetric"), np.pad(mask, pad, mode="symmetric"), None)
    return image, mask, None  # "pad": random_crop pads with zeros and valid = 0


def recipe_crop(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, recipe: CropRecipe
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One training crop of a real image by ``recipe`` (rescale, small-image policy, affine augmentation,
    random crop; photometric augmentation is :class:`TrainCrops`' last step): (image, mask, valid)."""
    image, mask = random_rescale(image, mask, rng, recipe.scale_range)
    image, mask, valid = fit_small_image(image, mask, recipe.size, recipe.small_images)
    if recipe.augment is not None:
        image, mask, valid = random_affine(image, mask, rng, recipe.augment)
    return random_crop(image, mask, recipe.size, rng, valid)


class TrainCrops(Dataset):
    """Augmented random crops from one or more sources: ``(image 3xSxS, mask 1xSxS, valid 1xSxS)`` float32.

    An epoch is ``n_draws`` crops (default: every training image once); :meth:`set_epoch` draws
    which source and image each crop comes from (:func:`train.sampling.epoch_plan`, by the sources'
    ``shares``). Crop ``d`` of an epoch uses ``numpy.random.default_rng([seed, epoch, d])``, so it
    depends only on the seed, the epoch and its position: the same with any number of workers or
    processes, and a run resumed mid-epoch sees exactly the crops the uninterrupted run saw.
    ``valid`` is 0 where the crop was padded with black (``small_images="pad"``, constant border); every
    loss averages with it as per-pixel weights.
    ``extras`` are more sources of ready-made crops, each ``(source, share of the epoch)``: a source
    has ``len()`` and ``sample(item, rng, size) -> (image, mask)``, or ``(image, mask, weight)`` with a
    per-pixel loss weight that becomes ``valid`` (:class:`train.synth.SynthSource`:
    generated hairlines and structures; :class:`train.hard_negatives.HardNegativeSource`: the model's
    own false positives on the training images); the real sources share what the extras leave.
    """

    def __init__(self, data: CrackImages | Sequence[CrackImages], recipe: CropRecipe | int,
                 augment: AugmentConfig | None = None, seed: int = 0, *, shares: Sequence[float] | None = None,
                 n_draws: int = 0, extras: Sequence[tuple[Any, float]] = ()) -> None:
        self.sources = [data] if isinstance(data, CrackImages) else list(data)
        self.recipe = recipe if isinstance(recipe, CropRecipe) else CropRecipe(int(recipe), augment)
        counts = [len(d) for d in self.sources]
        if sum(counts) == 0:
            raise DatasetError("the training split is empty")
        if shares is None:
            shares = [1.0 / len(counts)] * len(counts)
        if len(shares) != len(counts):
            raise DatasetError(f"{len(shares)} shares for {len(counts)} sources")
        self.extras = [source for source, _ in extras]
        extra_shares = [float(share) for _, share in extras]
        if any(not 0.0 < share < 1.0 for share in extra_shares) or sum(extra_shares) >= 1.0:
            raise DatasetError(f"the generated sources' shares must each be in (0, 1) and leave room for the real "
                               f"images, got {extra_shares}")
        real = 1.0 - sum(extra_shares)
        self.shares = [real * s for s in shares] + extra_shares
        self.counts = counts + [max(1, len(source)) for source in self.extras]
        self.n_draws = int(n_draws) or sum(counts)
        self.seed = seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        keys = [str(i) for i in range(len(self.counts))]
        self._plan = epoch_plan(dict(zip(keys, self.shares, strict=True)), dict(zip(keys, self.counts, strict=True)),
                                self.n_draws, self.seed, self.epoch)

    def __len__(self) -> int:
        return self.n_draws

    def source_of(self, draw: int) -> int:
        """Index of the source crop ``draw`` of this epoch comes from (>= len(sources): extra ``i - len(sources)``)."""
        return int(self._plan[0][draw])

    def crop(self, draw: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Crop ``draw`` of this epoch as arrays: RGB uint8 SxSx3, mask uint8 SxS, valid SxS (uint8 0/1, or a
        generated source's float32 loss weights)."""
        rng = np.random.default_rng([self.seed, self.epoch, draw])
        source, item = int(self._plan[0][draw]), int(self._plan[1][draw])
        r = self.recipe
        if source >= len(self.sources):
            image, mask, *weight = self.extras[source - len(self.sources)].sample(item, rng, r.size)
            valid = weight[0] if weight else np.ones(mask.shape, np.uint8)
        else:
            image, mask, valid = recipe_crop(self.sources[source].images[item], self.sources[source].masks[item],
                                             rng, r)
        if r.photometric is not None:
            from train.photometric import random_photometric

            image = random_photometric(image, rng, r.photometric)
        return image, mask, valid

    def __getitem__(self, draw: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        image, mask, valid = self.crop(draw)
        return (
            torch.from_numpy(to_chw_float(image)),
            torch.from_numpy(mask[None].astype(np.float32)),
            torch.from_numpy(valid[None].astype(np.float32)),
        )


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: numpy/random seeded from torch's per-worker seed (reproducible)."""
    import random

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
