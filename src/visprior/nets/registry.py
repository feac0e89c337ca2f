"""Model registry: every command selects a network by name.

``register_model`` refuses duplicate names, ``list_models`` filters with shell-style
wildcards, ``get_model`` builds a network from keyword arguments.

The registry imports no network: each family's module registers itself when imported, and
``visprior.nets`` imports every family (so ``import visprior`` lists them all), as in timm and
torchvision.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

__all__ = ["canonical_name", "get_model", "list_models", "register_model"]

_MODELS: dict[str, Callable[..., nn.Module]] = {}
BuilderT = TypeVar("BuilderT", bound=Callable[..., nn.Module])


def register_model(name: str | None = None) -> Callable[[BuilderT], BuilderT]:
    """Decorator registering a model builder under ``name`` (default: the function's name)."""

    def wrapper(builder: BuilderT) -> BuilderT:
        key = name or builder.__name__
        if key in _MODELS:
            raise ValueError(f"a model named {key!r} is already registered.")
        _MODELS[key] = builder
        return builder

    return wrapper


def list_models(pattern: str = "*") -> list[str]:
    """Sorted names of the registered models that match ``pattern`` (e.g. ``"repuxnet*"``)."""
    return sorted(n for n in _MODELS if fnmatch.fnmatchcase(n, pattern))


def get_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name`` with keyword arguments.

    Example:
        >>> net = get_model("repuxnet", in_channels=1, out_channels=3, feature_size=8)
    """
    name = canonical_name(name)
    if name not in _MODELS:
        raise ValueError(
            f"unknown model name {name!r}; registered models: {', '.join(list_models())}."
        )
    try:
        return _MODELS[name](**kwargs)
    except TypeError as error:
        if "keyword argument" not in str(error):
            raise
        # Name the model: the builder's own message names only its internal class.
        raise ValueError(f"model {name!r} got a bad argument: {error}") from error


def canonical_name(name: str) -> str:
    """Hyphens and underscores are the same in model names: ``ggcam-resnet50`` works too."""
    return name.replace("-", "_")
