"""Flip averaging: a backend whose probabilities are the mean over mirrored copies of each input.

``FlipAveraged(backend, flips)`` runs ``backend`` on the batch as it is and mirrored (``flips`` 2: also
left-right; 4: also upside-down and both), mirrors each prediction back and averages them. A crack
looks like a crack in a mirror; a straight joint's false response is less stable under mirroring, so
averaging lowers it more than it lowers a crack's (benchmarks/RESULTS.md, "Flip averaging"). It costs
``flips`` backend passes per tile. Every consumer gets it through
:func:`contract.backends.load_backend` (``flips=``) or :func:`with_flips`: the daemon
(``model.flips``), evaluation, calibration and the benchmarks run the same wrapper.

Mirroring is per input (a tile, or a whole image where the backend takes whole images); it commutes
with the contract's per-pixel pre-processing, so the wrapper works on the model-ready batch.
"""

from __future__ import annotations

import numpy as np

from contract.backends.base import Backend, BackendError, BackendWrapper

# flips -> the axes of an N x C x H x W batch each pass mirrors (() = as it is)
FLIP_AXES: dict[int, tuple[tuple[int, ...], ...]] = {
    1: ((),),
    2: ((), (3,)),
    4: ((), (3,), (2,), (2, 3)),
}


def check_flips(flips: int) -> int:
    """``flips`` as an int, or BackendError naming the accepted counts."""
    if isinstance(flips, bool) or not isinstance(flips, (int, np.integer)) or int(flips) not in FLIP_AXES:
        raise BackendError(
            f"flips must be one of {', '.join(map(str, FLIP_AXES))} (passes per tile: as is, + left-right, "
            f"+ upside-down and both), got {flips!r}"
        )
    return int(flips)


class FlipAveraged(BackendWrapper):
    """``inner``'s probabilities averaged over ``flips`` mirrorings of each input (see the module)."""

    def __init__(self, inner: Backend, flips: int) -> None:
        super().__init__(inner)
        self.flips = check_flips(flips)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        total: np.ndarray | None = None
        for axes in FLIP_AXES[self.flips]:
            mirrored = np.ascontiguousarray(np.flip(batch, axes)) if axes else batch
            prob = self.inner.infer(mirrored)
            prob = np.flip(prob, axes) if axes else prob
            if total is None:
                total = np.array(prob, dtype=np.float32)  # a copy: the backend may reuse its output buffer
            else:
                total += prob
        assert total is not None  # FLIP_AXES[n] is never empty
        if self.flips > 1:
            total /= np.float32(self.flips)
        return total


def with_flips(backend: Backend, flips: int) -> Backend:
    """``backend`` itself for ``flips`` 1, else it wrapped in :class:`FlipAveraged`."""
    return backend if check_flips(flips) == 1 else FlipAveraged(backend, flips)


def passes(backend: Backend) -> int:
    """How many mirrored passes ``backend`` averages (1 for a backend that is not :class:`FlipAveraged`)."""
    return backend.flips if isinstance(backend, FlipAveraged) else 1
