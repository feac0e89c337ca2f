"""Rank awareness for ``torch.distributed``: one process writes logs and checkpoints, every
process reads its own share of the data. Works unchanged in a single process.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler, Sampler

__all__ = [
    "barrier",
    "get_rank",
    "get_world_size",
    "is_main_process",
    "resolve_device",
    "training_sampler",
    "unwrap",
]


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """True in the process that logs and writes checkpoints (rank 0)."""
    return get_rank() == 0


def resolve_device(name: str | torch.device) -> torch.device:
    """``"auto"``: CUDA where there is a GPU, else the CPU; any other name as given."""
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def barrier() -> None:
    if get_world_size() > 1:
        dist.barrier()


def training_sampler(dataset: Dataset, seed: int) -> Sampler:
    """Shuffling sampler whose order is a function of (seed, epoch): ``set_epoch`` reshuffles
    reproducibly, also after a resume. Under ``torch.distributed`` each rank draws a disjoint
    share; in one process it is the same sampler with one replica."""
    return DistributedSampler(
        dataset, num_replicas=get_world_size(), rank=get_rank(), shuffle=True, seed=seed
    )


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The network inside a ``DistributedDataParallel`` (or compiled) wrapper."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model
