"""Which crop of a training epoch comes from which source and image (pure numpy).

Kept apart from :mod:`train.sources` (which lists and splits data sets) so that :mod:`train.data`,
whose training crops follow this plan, and :mod:`train.sources`, which reads data sets with
:mod:`train.data`, do not import each other.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def epoch_plan(shares: Mapping[str, float], counts: Mapping[str, int], n_draws: int, seed: int,
               epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """Which (source index, item index) each of an epoch's ``n_draws`` crops comes from.

    Deterministic in (seed, epoch). Each source gets ``round(share * n_draws)`` draws (largest
    remainders settle the total); its items are taken in a seeded permutation, repeated when it has
    fewer items than draws, so every image is used before any is used twice. The draws are shuffled.
    """
    names = list(shares)
    rng = np.random.default_rng([seed, epoch, 0xC0FFEE])
    exact = np.array([shares[n] * n_draws for n in names])
    quota = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - quota), kind="stable")[: n_draws - int(quota.sum())]:
        quota[i] += 1
    source_index, item_index = [], []
    for i, name in enumerate(names):
        if quota[i] == 0:
            continue
        n_items = counts[name]
        reps = -(-quota[i] // n_items)
        items = np.concatenate([rng.permutation(n_items) for _ in range(reps)])[: quota[i]]
        source_index.append(np.full(quota[i], i))
        item_index.append(items)
    order = rng.permutation(n_draws)
    return np.concatenate(source_index)[order], np.concatenate(item_index)[order]
