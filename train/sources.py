"""Several crack data sets at once: each a *source* with its own images, split and sampling weight.

A source is one data set folder (``images/`` + ``masks/`` + optional ``splits/``, see
:mod:`train.data`); its name is the folder name. Each source keeps its own split: the data set's
``splits/*.txt`` when it has them, else the seeded split of :func:`train.data.resolve_splits`.
A run folder records the split it used: ``splits/*.txt`` for a one-source run (the layout
``calibration`` and older runs read), ``splits/<name>/*.txt`` for each source of a multi-source run.

Which split wins when a model is scored on a data set (:func:`source_splits`): the data set's own
split files when it has any (they define its test images for everyone); else the split the run
folder recorded for that data set; else the seeded split with the run's seed and fractions.

Sampling (:func:`source_shares`): ``balanced`` gives every source the same share of an epoch,
whatever its size, so 5,270 Crack500 crops do not drown 300 DeepCrack images; ``images`` samples
in proportion to image counts (plain pooling); ``name=w,...`` sets the shares by hand (missing
names get 0).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from train.data import (
    DatasetError,
    Sample,
    Splits,
    list_samples,
    read_split_files,
    resolve_splits,
    write_split_files,
)


@dataclass(frozen=True)
class Source:
    """One data set folder with its resolved split."""

    name: str
    root: Path
    samples: dict[str, Sample]
    splits: Splits


def source_names(roots: Sequence[str | os.PathLike], kind: str = "data sets") -> list[str]:
    """Folder names of the data sets (or other folders, ``kind`` in the message); raises DatasetError when two
    share a name (their records would collide)."""
    names = [Path(r).name for r in roots]
    for name in names:
        if names.count(name) > 1:
            dupes = [str(r) for r in roots if Path(r).name == name]
            raise DatasetError(f"two {kind} are named {name!r} ({', '.join(dupes)}); give each a folder of its own name")
    return names


def run_split_folder(run_folder: str | os.PathLike, name: str, n_sources: int) -> Path:
    """Where a run folder keeps the split of source ``name`` (see the module docstring)."""
    splits = Path(run_folder) / "splits"
    return splits if n_sources == 1 else splits / name


def _recorded_splits(run_folder: Path, name: str, samples: Mapping[str, Sample]) -> Splits | None:
    """The split a run folder recorded for source ``name``, or None."""
    for folder in (run_folder / "splits" / name, run_folder / "splits"):
        if (folder / "train.txt").is_file():
            try:
                return read_split_files(folder, samples, source=f"run folder {run_folder}")
            except DatasetError:
                return None  # recorded for another data set of the same layout: not ours
    return None


def recorded_splits(run_folder: str | os.PathLike, name: str, samples: Mapping[str, Sample]) -> Splits:
    """The split a run folder recorded for data set ``name``; DatasetError when it has none for it."""
    found = _recorded_splits(Path(run_folder), name, samples)
    if found is None:
        raise DatasetError(f"run folder {run_folder} records no split for data set {name!r} "
                           f"(looked for splits/{name}/train.txt and splits/train.txt listing its images)")
    return found


def has_own_splits(root: str | os.PathLike) -> bool:
    """Whether a data set folder defines its split (``splits/train.txt`` or ``splits/test.txt``)."""
    return any((Path(root) / "splits" / f"{n}.txt").is_file() for n in ("train", "test"))


def source_splits(root: str | os.PathLike, samples: Mapping[str, Sample], *, seed: int,
                  val_fraction: float, test_fraction: float,
                  run_folder: str | os.PathLike | None = None) -> Splits:
    """The split of one data set by the precedence rules of the module docstring."""
    if run_folder is not None and not has_own_splits(root):
        recorded = _recorded_splits(Path(run_folder), Path(root).name, samples)
        if recorded is not None:
            return recorded
    return resolve_splits(root, samples, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction)


def open_sources(roots: Sequence[str | os.PathLike], *, seed: int, val_fraction: float,
                 test_fraction: float, run_folder: str | os.PathLike | None = None) -> list[Source]:
    """List, check and split every data set folder (``run_folder``: a run whose recorded splits to reuse)."""
    if not roots:
        raise DatasetError("no data set given: pass --data FOLDER (repeat it, or comma-separate, for several)")
    sources = []
    for name, root in zip(source_names(roots), roots, strict=True):
        samples = list_samples(root)
        splits = source_splits(root, samples, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction,
                               run_folder=run_folder)
        sources.append(Source(name, Path(root), samples, splits))
    return sources


def write_source_splits(sources: Sequence[Source], run_folder: str | os.PathLike) -> None:
    """Record each source's split in the run folder (layout in the module docstring)."""
    for source in sources:
        write_split_files(source.splits, run_split_folder(run_folder, source.name, len(sources)))


def source_shares(weighting: str | Mapping[str, float], counts: Mapping[str, int]) -> dict[str, float]:
    """Each source's share of an epoch (sums to 1) from the ``--source-weights`` rule and image counts."""
    names = list(counts)
    if weighting == "balanced":
        raw = {n: 1.0 if counts[n] else 0.0 for n in names}
    elif weighting == "images":
        raw = {n: float(counts[n]) for n in names}
    else:
        unknown = sorted(set(weighting) - set(names))
        if unknown:
            raise DatasetError(f"--source-weights names {', '.join(unknown)}, not among the data sets ({', '.join(names)})")
        raw = {n: float(weighting.get(n, 0.0)) if counts[n] else 0.0 for n in names}
    total = sum(raw.values())
    if total <= 0:
        raise DatasetError("every data set with a weight > 0 has an empty training split")
    return {n: raw[n] / total for n in names}
