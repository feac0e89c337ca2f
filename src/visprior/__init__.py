"""visprior: medical image networks that borrow priors from human vision."""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Names load on first use (PEP 562), so that ``import visprior.nets.repuxnet`` pulls in torch,
# MONAI and einops alone: a bare machine with only those can build and time the networks.
_EXPORTS = {
    "export_onnx": "visprior.deploy.export",
    "export_torchscript": "visprior.deploy.export",
    "get_model": "visprior.nets",  # importing visprior.nets registers every network family
    "list_models": "visprior.nets",
    "register_model": "visprior.nets",
    "load_official_checkpoint": "visprior.nets.official",
    "reparameterize_model": "visprior.reparam",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'visprior' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
