"""Multi-process training under ``torchrun`` (PyTorch DDP): detection, set-up and the few collectives used.

``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; when they are present the training entry
point initialises the process group (NCCL on CUDA, Gloo on the CPU), each process trains on its
shard of the data (``DistributedSampler``) and only rank 0 writes files and shows progress.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: ``enabled`` only under torchrun with WORLD_SIZE > 1 or set up by it."""

    enabled: bool = False
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (any picklable object)."""
        if not self.enabled:
            return value
        box = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def mean(self, value: float) -> float:
        """Mean of a float over the ranks."""
        if not self.enabled:
            return value
        tensor = torch.tensor([value], dtype=torch.float64)
        if dist.get_backend() == "nccl":
            tensor = tensor.cuda()
        dist.all_reduce(tensor)
        return float(tensor.item()) / self.world_size


def launched_by_torchrun() -> bool:
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def setup(device_request: str = "auto") -> DistContext:
    """Initialise the process group when launched by torchrun; a no-op context otherwise."""
    if not launched_by_torchrun():
        return DistContext()
    rank, world, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    use_cuda = device_request != "cpu" and torch.cuda.is_available()
    if not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(local)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistContext(True, rank, world, local)


def cleanup() -> None:
    """Tear the process group down (once, at the end of the entry point).

    The DistributedDataParallel wrapper sits in a reference cycle, so it outlives ``train_run`` until the
    garbage collector runs. Left to interpreter shutdown, its Reducer drops the last reference to the Gloo
    process group there, and a still-joinable Gloo thread aborts the process ("terminate called without an
    active exception", SIGABRT; seen on 1 run in ~10 under CPU load). Collecting first frees it while the
    group is alive, so ``destroy_process_group`` is the last owner.
    """
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def rank() -> int:
    """This process's rank under torchrun (0 otherwise)."""
    return int(os.environ.get("RANK", "0")) if launched_by_torchrun() else 0


def resolve_device(request: str, ctx: DistContext) -> torch.device:
    """``auto`` -> CUDA when present, else CPU; under DDP on CUDA each process takes ``cuda:LOCAL_RANK``."""
    if request == "auto":
        request = "cuda" if torch.cuda.is_available() else "cpu"
    if request.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"--device {request} asked for CUDA, but this torch build sees no CUDA GPU")
        if ctx.enabled:
            return torch.device("cuda", ctx.local_rank)
    return torch.device(request)
