"""Moved: the network to :mod:`visprior.nets.mtunet`, its loss to :mod:`visprior.cxr.loss`;
kept so that earlier imports keep working."""

from visprior.cxr.loss import multitask_loss
from visprior.nets.mtunet import MTUNet, MTUNetOutput, MultiTaskWeights, mtunet

__all__ = ["MTUNet", "MTUNetOutput", "MultiTaskWeights", "mtunet", "multitask_loss"]
