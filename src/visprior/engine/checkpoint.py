"""Checkpoints: written atomically, read with ``torch.load(weights_only=True)``, and the random
states that make a resumed run continue where it stopped.

Reading lives in :mod:`visprior.checkpoint_io` and rebuilding the network in
:mod:`visprior.nets.build`, which import nothing from the engine; both are re-exported here.

A visprior checkpoint is a plain dict; ``CHECKPOINT_FORMAT`` marks it. Training checkpoints
hold ``state_dict``, ``model`` (registered name and keyword arguments), ``optimizer``,
``iteration``, ``best_metric``, ``rng`` and the task's own entries (labels, preprocessing).
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from visprior.checkpoint_io import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    is_visprior_checkpoint,
    load_checkpoint,
    load_weights,
    read_weights_only,
)
from visprior.fileio import atomic_path
from visprior.nets.build import build_model_from_checkpoint

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "build_model_from_checkpoint",
    "capture_rng_state",
    "find_checkpoint",
    "is_visprior_checkpoint",
    "load_checkpoint",
    "load_weights",
    "read_weights_only",
    "restore_rng_state",
    "save_checkpoint",
]

CHECKPOINT_NAMES = ("best.pt", "last.pt")  # what a run folder offers, in order of preference


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` (with the format mark) to ``path`` atomically; return the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({"format": CHECKPOINT_FORMAT, **state}, tmp)
    return path


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch (and CUDA) random states as tensors and plain values."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Undo ``capture_rng_state``: the next random draws are the ones that would have come."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    saved = state["numpy"]
    keys = saved["keys"].numpy().astype(np.uint32)
    np.random.set_state(
        ("MT19937", keys, saved["pos"], saved["has_gauss"], saved["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def find_checkpoint(run_or_checkpoint: str | os.PathLike) -> Path:
    """The checkpoint file itself, or a run folder's ``checkpoints/best.pt`` (else ``last.pt``).

    Raises:
        FileNotFoundError: nothing usable there; the message names the path.
    """
    path = Path(run_or_checkpoint)
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"no run folder or checkpoint file at {path}")
    for folder in (path / "checkpoints", path):
        for name in CHECKPOINT_NAMES:
            if (folder / name).is_file():
                return folder / name
    raise FileNotFoundError(
        f"{path}: no checkpoints/best.pt or checkpoints/last.pt in this run folder"
    )
