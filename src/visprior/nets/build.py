"""A network from a checkpoint alone: the registered name and keyword arguments it was built with
(a :class:`ModelSpec`, saved as a plain dict), and its weights.

As nnU-Net's checkpoints carry their ``init_args``, every visprior checkpoint carries its
``model`` entry, so ``predict`` and ``evaluate`` need no configuration beside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from visprior.checkpoint_io import CheckpointError, load_weights
from visprior.nets.registry import get_model
from visprior.nets.widths import fit_to_state_dict

__all__ = ["ModelSpec", "build_model_from_checkpoint"]


@dataclass
class ModelSpec:
    """What rebuilds a network: its registered ``name``, the keyword arguments it was built with,
    and whether ``visprior simplify`` cut it down (then its widths come from the tensors)."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    pruned: bool = False

    def build(self) -> nn.Module:
        """The network at the widths its keyword arguments give (before any cut)."""
        return get_model(self.name, **self.kwargs)

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint's ``model`` entry: plain values that ``weights_only`` loading reads."""
        entry: dict[str, Any] = {"name": self.name, "kwargs": dict(self.kwargs)}
        if self.pruned:
            entry["pruned"] = True
        return entry

    @classmethod
    def from_dict(cls, entry: dict[str, Any]) -> ModelSpec:
        """Undo :meth:`to_dict`. Raises ``KeyError`` naming a missing ``name`` or ``kwargs``."""
        return cls(entry["name"], dict(entry["kwargs"]), bool(entry.get("pruned", False)))


def build_model_from_checkpoint(state: dict, source: str = "checkpoint") -> nn.Module:
    """The registered network a checkpoint describes, with its weights loaded.

    Raises:
        CheckpointError: an entry is missing, or the weights do not fit (each difference named).
    """
    try:
        spec = ModelSpec.from_dict(state["model"])
        model = spec.build()
        if spec.pruned:  # shrunk by `visprior simplify`: widths from the tensors
            fit_to_state_dict(model, state["state_dict"])
        else:
            load_weights(model, state["state_dict"], source)
    except KeyError as error:
        raise CheckpointError(f"{source}: missing entry {error}") from None
    except RuntimeError as error:
        raise CheckpointError(f"{source}: weights do not fit the network: {error}") from None
    return model
