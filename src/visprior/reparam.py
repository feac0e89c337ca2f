"""Fold every training-time re-parameterization of a model into plain layers for deployment."""

from __future__ import annotations

import copy

from torch import nn

__all__ = ["reparameterize_model"]


def reparameterize_model(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Replace every re-parameterizable layer (BFR, SR branches) by its fused plain conv.

    A layer is re-parameterizable when it has a ``reparameterize()`` method. visprior's
    layers return their fused replacement (a plain conv returns itself, so fusing twice
    changes nothing); a method that fuses in place and returns ``None``, as timm's blocks
    do, is honoured too. Structural re-parameterization folds BatchNorm running statistics,
    so the fused model equals the original in eval mode.

    Args:
        model: the training-time model.
        inplace: modify ``model`` itself instead of a deep copy.

    Returns:
        The fused model (``model`` itself when ``inplace``).
    """
    if not inplace:
        model = copy.deepcopy(model)
    fused = _fuse(model)
    return model if fused is None else fused


def _fuse(module: nn.Module) -> nn.Module | None:
    """Fused replacement of ``module``, or ``None`` when it was fused in place."""
    reparameterize = getattr(module, "reparameterize", None)
    if callable(reparameterize):
        return reparameterize()
    for name, child in module.named_children():
        replacement = _fuse(child)
        if replacement is not None and replacement is not child:
            setattr(module, name, replacement)
    return None
