"""Networks, one file per family; importing this package registers them all.

``visprior.nets.registry`` imports none of them; this package imports every family, so that
``import visprior`` is enough for ``list_models`` to see each network.
"""

from visprior.nets.ggcam import CAMClassifier, CAMHead, CAMOutput, GazeLossWeights
from visprior.nets.mednext import build_mednext
from visprior.nets.monai_nets import segresnet, swinunetr, unetr
from visprior.nets.mtunet import MTUNet, MTUNetOutput, MultiTaskWeights
from visprior.nets.registry import canonical_name, get_model, list_models, register_model
from visprior.nets.repuxnet import RepUXBlock, RepUXNet
from visprior.nets.uxnet import UXBlock, UXNet

__all__ = [
    "CAMClassifier",
    "CAMHead",
    "CAMOutput",
    "GazeLossWeights",
    "MTUNet",
    "MTUNetOutput",
    "MultiTaskWeights",
    "RepUXBlock",
    "RepUXNet",
    "UXBlock",
    "UXNet",
    "build_mednext",
    "canonical_name",
    "get_model",
    "list_models",
    "register_model",
    "segresnet",
    "swinunetr",
    "unetr",
]
