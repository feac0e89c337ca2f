"""Reading checkpoints without running code: ``torch.load(weights_only=True)`` with errors that
name the file, and weights loaded all or nothing with every difference named.

These are what networks and commands need to read weights; writing checkpoints and the random
states of a resumable run are ``visprior.engine.checkpoint``'s.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "is_visprior_checkpoint",
    "load_checkpoint",
    "load_weights",
    "read_weights_only",
]

CHECKPOINT_FORMAT = "visprior-checkpoint-1"

# torch's refusals of a pickled global: "Unsupported global: GLOBAL x.y" (an allowed module,
# a name not allowed), "Trying to load unsupported GLOBAL x.y whose module x is blocked" (as
# an os.system payload gives).
_REFUSED_GLOBAL = re.compile(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) (\S+)")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or used; the message names the file."""


def read_weights_only(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(weights_only=True)`` with errors that name the file: no code in it runs."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        found = _REFUSED_GLOBAL.search(str(error))
        if found:
            raise CheckpointError(
                f"{path}: refused because loading it would run code: it names the Python "
                f"global {found.group(1)}, and only tensors and plain containers are loaded"
            ) from None
        # torch's own message here is a page of advice on weights_only: not shown
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
