"""``torch.distributed`` for every training command: started by ``torchrun``, one process per
device, one process writes logs and checkpoints, every process reads its own share of the
data. Works unchanged in a single process.

``torchrun`` describes the job in the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``); :func:`init_distributed` joins it, with NCCL on GPUs and
gloo on the CPU.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import os
import sys
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "all_gather_objects",
    "all_reduce_mean",
    "barrier",
    "exit_distributed",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_main_process",
    "resolve_device",
    "unwrap",
    "wrap_distributed",
]

# how long a process waits for the others in one collective (rank 0 validates alone meanwhile)
TIMEOUT_MINUTES = float(os.environ.get("VISPRIOR_DIST_TIMEOUT_MINUTES", "60"))


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


def init_distributed(device: str | torch.device = "auto") -> torch.device:
    """Join the process group ``torchrun`` describes (once) and return this process's device:
    ``cuda:LOCAL_RANK`` on GPUs, else the CPU. Without ``torchrun`` (``WORLD_SIZE`` unset or
    1) nothing is joined and the device is ``resolve_device(device)``."""
    device = resolve_device(device)
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if device.type == "cuda" else "gloo",
            timeout=datetime.timedelta(minutes=TIMEOUT_MINUTES),
        )
        atexit.register(_leave_process_group)
    return device


def exit_distributed(code: int) -> None:
    """End a ``torchrun`` process: leave the group together with the others, then exit with
    ``code`` at once. Tearing the interpreter down normally can abort in the backend's
    threads (seen with gloo: "terminate called without an active exception") after all the
    work is done and written. Does nothing in a single process."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    _leave_process_group()
    os._exit(code)


def _leave_process_group() -> None:
    """Leave together: a process that exits while a peer still talks to it, or with its group
    alive, can abort in the backend's threads."""
    if dist.is_initialized():
        with contextlib.suppress(RuntimeError):  # a peer already gone: just leave
            dist.barrier()
        dist.destroy_process_group()


def wrap_distributed(
    model: nn.Module,
    device: torch.device,
    sync_batchnorm: bool = False,
    find_unused_parameters: bool = False,
):
    """``model`` in ``DistributedDataParallel`` when there are several processes (with its
    BatchNorm layers made ``SyncBatchNorm`` if asked: statistics over the global batch, CUDA
    only); ``model`` itself otherwise. Parameters stay the same objects, so an optimizer
    made before still drives them. ``find_unused_parameters``: the loss leaves some
    parameters out (a head or loss weight a configuration does not train)."""
    if get_world_size() == 1:
        return model
    if sync_batchnorm:
        if device.type != "cuda":
            raise ValueError("sync_batchnorm needs CUDA devices; on the CPU leave it off")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(
        model, device_ids=device_ids, find_unused_parameters=find_unused_parameters
    )


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    """The mean of ``values`` over the processes (``values`` itself in one process)."""
    if get_world_size() == 1:
        return values
    values = values.clone()
    dist.all_reduce(values)
    return values / get_world_size()


def all_gather_objects(value: Any) -> list[Any]:
    """Every process's ``value``, in rank order (``[value]`` in one process)."""
    if get_world_size() == 1:
        return [value]
    gathered: list[Any] = [None] * get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def barrier() -> None:
    if get_world_size() > 1:
        dist.barrier()


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The network inside a ``DistributedDataParallel`` (or compiled) wrapper."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model
