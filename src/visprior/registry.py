"""Moved to :mod:`visprior.nets.registry`; kept so that earlier imports keep working."""

from visprior.nets.registry import canonical_name, get_model, list_models, register_model

__all__ = ["canonical_name", "get_model", "list_models", "register_model"]
