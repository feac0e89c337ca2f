"""Moved to :mod:`visprior.nets.ggcam`; kept so that earlier imports keep working."""

from visprior.nets.ggcam import (
    CAMClassifier,
    CAMHead,
    CAMOutput,
    GazeLossWeights,
    ggcam_efficientnet_v2_s,
    ggcam_resnet18,
    ggcam_resnet50,
    load_backbone_weights,
)

__all__ = [
    "CAMClassifier",
    "CAMHead",
    "CAMOutput",
    "GazeLossWeights",
    "ggcam_efficientnet_v2_s",
    "ggcam_resnet18",
    "ggcam_resnet50",
    "load_backbone_weights",
]
