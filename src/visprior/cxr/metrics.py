"""Moved to :mod:`visprior.metrics.classification`; kept so that earlier imports keep working."""

from visprior.metrics.classification import classification_metrics, localisation_hit

__all__ = ["classification_metrics", "localisation_hit"]
