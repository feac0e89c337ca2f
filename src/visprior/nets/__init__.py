"""Networks, one file per family; importing this package registers them all."""

from visprior.nets.monai_nets import swinunetr, unetr
from visprior.nets.repuxnet import RepUXBlock, RepUXNet
from visprior.nets.uxnet import UXBlock, UXNet

__all__ = ["RepUXBlock", "RepUXNet", "UXBlock", "UXNet", "swinunetr", "unetr"]
