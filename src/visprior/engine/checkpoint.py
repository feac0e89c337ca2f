"""Checkpoints: written atomically, read with ``torch.load(weights_only=True)``, and the random
states that make a resumed run continue where it stopped.

A visprior checkpoint is a plain dict; ``CHECKPOINT_FORMAT`` marks it. Training checkpoints
hold ``state_dict``, ``model`` (registered name and keyword arguments), ``optimizer``,
``iteration``, ``best_metric``, ``rng`` and the task's own entries (labels, preprocessing).
"""

from __future__ import annotations

import os
import pickle
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from visprior.fileio import atomic_path
from visprior.registry import get_model

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

CHECKPOINT_FORMAT = "visprior-checkpoint-1"
CHECKPOINT_NAMES = ("best.pt", "last.pt")  # what a run folder offers, in order of preference


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or used; the message names the file."""


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` (with the format mark) to ``path`` atomically; return the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({"format": CHECKPOINT_FORMAT, **state}, tmp)
    return path


def read_weights_only(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(weights_only=True)`` with errors that name the file: no code in it runs."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        if found:
            raise CheckpointError(
                f"{path}: refused: it holds a Python object ({found.group(1)}), not only "
                "tensors and plain containers; only weights are loaded"
            ) from None
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint") from None
    except (RuntimeError, EOFError, OSError) as error:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({error})") from None


def is_visprior_checkpoint(state: Any) -> bool:
    return isinstance(state, dict) and state.get("format") == CHECKPOINT_FORMAT


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a visprior checkpoint (see ``read_weights_only``)."""
    state = read_weights_only(path, map_location)
    if not is_visprior_checkpoint(state):
        raise CheckpointError(
            f"{path}: not a visprior checkpoint (no format mark {CHECKPOINT_FORMAT!r}); "
            "for the authors' RepUX-Net / 3D UX-Net weights use load_official_checkpoint"
        )
    return state


def build_model_from_checkpoint(state: dict, source: str = "checkpoint") -> nn.Module:
    """The registered network a checkpoint describes, with its weights loaded."""
    try:
        spec = state["model"]
        model = get_model(spec["name"], **spec["kwargs"])
        if spec.get("pruned"):  # shrunk by `visprior simplify`: widths from the tensors
            from visprior.simplify.prune import fit_to_state_dict

            fit_to_state_dict(model, state["state_dict"])
        else:
            load_weights(model, state["state_dict"], source)
    except KeyError as error:
        raise CheckpointError(f"{source}: missing entry {error}") from None
    except RuntimeError as error:
        raise CheckpointError(f"{source}: weights do not fit the network: {error}") from None
    return model


def load_weights(model: nn.Module, state_dict: dict[str, Any], source: str) -> None:
    """``model.load_state_dict(state_dict)``, all or nothing, with an error that names every
    difference: tensors of other shapes (as for another label count), and names missing from
    either side (as for another network).

    Raises:
        CheckpointError: the weights do not fit; the model is left unchanged.
    """
    expected = model.state_dict()
    if not isinstance(state_dict, dict):
        kind = type(state_dict).__name__
        raise CheckpointError(f"{source}: the weights are a {kind}, not a dict of tensors")
    shapes = [
        f"{name} {_shape(value)} in the checkpoint, {_shape(expected[name])} in the network"
        for name, value in state_dict.items()
        if name in expected and _shape(value) != _shape(expected[name])
    ]
    differences = []
    if shapes:
        differences.append(f"shapes differ: {_first(shapes)}")
    missing = [name for name in expected if name not in state_dict]
    if missing:
        differences.append(f"missing from the checkpoint: {_first(missing)}")
    unexpected = [name for name in state_dict if name not in expected]
    if unexpected:
        differences.append(f"not in the network: {_first(unexpected)}")
    if differences:
        raise CheckpointError(
            f"{source}: weights do not fit the network ({'; '.join(differences)})"
        )
    model.load_state_dict(state_dict)


def _shape(value: Any) -> tuple[int, ...] | None:
    shape = getattr(value, "shape", None)
    return tuple(shape) if shape is not None else None


def _first(items: list[str], limit: int = 4) -> str:
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


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
