"""Building blocks shared by visprior's networks."""

from visprior.layers.conv_algorithm import conv_algorithm, set_conv_algorithm
from visprior.layers.depthwise import DepthwiseConv, depthwise_conv
from visprior.layers.fft_conv import fft_depthwise_conv
from visprior.layers.frequency_prior import BFRDepthwiseConv, frequency_prior
from visprior.layers.norm import ChannelsFirstLayerNorm
from visprior.layers.structural_reparam import StructuralReparamConv, fuse_conv_bn

__all__ = [
    "BFRDepthwiseConv",
    "ChannelsFirstLayerNorm",
    "DepthwiseConv",
    "StructuralReparamConv",
    "conv_algorithm",
    "depthwise_conv",
    "fft_depthwise_conv",
    "frequency_prior",
    "fuse_conv_bn",
    "set_conv_algorithm",
]
