"""Shared test fixtures: where the real crack data sets are, and small helpers."""

from __future__ import annotations

from pathlib import Path

import pytest

from contract.data_root import DATA_ROOT_ENV, data_root


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The data-set root ($CRACK_DATA_ROOT, else ../shared/data: DeepCrack, CrackForest); tests that
    need it skip when it is absent."""
    root = data_root()
    if not (root / "deepcrack" / "images").is_dir():
        pytest.skip(f"real crack data not found at {root} (set {DATA_ROOT_ENV}; see README: data sets)")
    return root


def write_small_crackforest(shared_data: Path, root: Path, *, count: int = 12, image_ext: str = ".png") -> Path:
    """The first ``count`` real CrackForest pairs at 1/4 size (120 x 80) in ``root``/images + masks, no splits/."""
    import cv2  # the training data helpers need torch; only the tests that call this import them

    from train.data import list_samples, load_pair, resize_image, resize_mask

    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    samples = list_samples(shared_data / "crackforest_cfd")
    for stem in sorted(samples)[:count]:
        image, mask = load_pair(samples[stem])
        cv2.imwrite(str(root / "images" / f"{stem}{image_ext}"), cv2.cvtColor(resize_image(image, 0.25), cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(root / "masks" / f"{stem}.png"), resize_mask(mask, 0.25) * 255)
    return root


def pytest_configure(config: pytest.Config) -> None:
    """One torch thread for the whole suite: on a 2-core CI machine, torch's default thread pool
    fights the test's own subprocesses (brokers, daemons, torchrun workers) and made single tests
    up to 30x slower."""
    try:
        import torch
    except ImportError:  # the edge tests run without torch
        return
    torch.set_num_threads(1)
