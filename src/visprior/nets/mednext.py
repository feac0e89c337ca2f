"""MedNeXt (Roy et al., "MedNeXt: Transformer-driven Scaling of ConvNets for Medical Image
Segmentation", MICCAI 2023, arXiv 2303.09975), MONAI's network under visprior's argument names.

The four sizes S/B/M/L differ in expansion ratios and blocks per stage, as in the paper's
Table 1. MONAI's ``MedNeXtS/B/M/L`` helpers fix 32 initial filters; these builders construct
``MedNeXt`` directly so that ``feature_size`` sets ``init_filters``. Residual connections are
on in every variant: the paper's blocks are residual (MONAI's helpers set the same), although
the bare ``MedNeXt`` class defaults to none.

Every stride-1 depth-wise conv (two per stage block, the network's kernel-sized compute) runs
through :class:`~visprior.layers.depthwise.DepthwiseConv`, so that ``conv_algorithm`` picks
direct or FFT convolution by size. The state dict keeps MONAI's names and shapes: weights load
into and out of MONAI's own ``MedNeXt``. The strided depth-wise convs of the down- and
up-sampling blocks stay MONAI's.
"""

from __future__ import annotations

from typing import Any

from monai.networks.blocks.mednext_block import MedNeXtBlock
from monai.networks.nets import MedNeXt
from torch import nn

from visprior.layers.depthwise import (
    DepthwiseConv,
    check_kernel_size,
    check_positive_int,
    check_spatial_dims,
)
from visprior.nets.registry import register_model

__all__ = ["MEDNEXT_VARIANTS", "build_mednext", "route_depthwise_convs"]

# The paper's Table 1: expansion ratios per stage and blocks per stage (encoder, bottleneck,
# decoder).
MEDNEXT_VARIANTS: dict[str, dict[str, Any]] = {
    "S": {
        "encoder_expansion_ratio": 2,
        "decoder_expansion_ratio": 2,
        "bottleneck_expansion_ratio": 2,
        "blocks_down": (2, 2, 2, 2),
        "blocks_bottleneck": 2,
        "blocks_up": (2, 2, 2, 2),
    },
    "B": {
        "encoder_expansion_ratio": (2, 3, 4, 4),
        "decoder_expansion_ratio": (4, 4, 3, 2),
        "bottleneck_expansion_ratio": 4,
        "blocks_down": (2, 2, 2, 2),
        "blocks_bottleneck": 2,
        "blocks_up": (2, 2, 2, 2),
    },
    "M": {
        "encoder_expansion_ratio": (2, 3, 4, 4),
        "decoder_expansion_ratio": (4, 4, 3, 2),
        "bottleneck_expansion_ratio": 4,
        "blocks_down": (3, 4, 4, 4),
        "blocks_bottleneck": 4,
        "blocks_up": (4, 4, 4, 3),
    },
    "L": {
        "encoder_expansion_ratio": (3, 4, 8, 8),
        "decoder_expansion_ratio": (8, 8, 4, 3),
        "bottleneck_expansion_ratio": 8,
        "blocks_down": (3, 4, 8, 8),
        "blocks_bottleneck": 8,
        "blocks_up": (8, 8, 4, 3),
    },
}


def route_depthwise_convs(model: nn.Module, spatial_dims: int) -> int:
    """Swap the stride-1 depth-wise conv of every ``MedNeXtBlock`` for a ``DepthwiseConv``
    holding the same weights; return how many were swapped."""
    swapped = 0
    for block in model.modules():
        if type(block) is not MedNeXtBlock:  # down/up blocks: strided or transposed conv1
            continue
        conv = block.conv1
        routed = DepthwiseConv(conv.in_channels, conv.kernel_size[0], spatial_dims)
        routed.weight.data.copy_(conv.weight.data)
        routed.bias.data.copy_(conv.bias.data)
        block.conv1 = routed
        swapped += 1
    return swapped


def build_mednext(
    variant: str,
    *,
    in_channels: int = 1,
    out_channels: int = 2,
    feature_size: int = 32,
    kernel_size: int = 3,
    spatial_dims: int = 3,
    **kwargs,
) -> MedNeXt:
    """MedNeXt-``variant`` with ``feature_size`` initial filters; spatial sizes must be
    multiples of 16 (four stride-2 levels)."""
    check_spatial_dims(spatial_dims)
    check_kernel_size(kernel_size)
    check_positive_int(feature_size, "feature_size")
    if kwargs.get("deep_supervision"):
        raise ValueError(
            "deep_supervision=True is not supported: visprior's trainer takes one output, "
            "at full resolution."
        )
    settings = {**MEDNEXT_VARIANTS[variant], "use_residual_connection": True, **kwargs}
    model = MedNeXt(
        spatial_dims=spatial_dims,
        init_filters=feature_size,
        in_channels=in_channels,
        out_channels=out_channels,
        kernel_size=kernel_size,
        **settings,
    )
    route_depthwise_convs(model, spatial_dims)
    model.size_divisibility = 16
    model.kernel_size = kernel_size
    return model


@register_model("mednext_s")
def mednext_s(**kwargs) -> MedNeXt:
    """MedNeXt-S (5.55M parameters at 32 filters, k3)."""
    return build_mednext("S", **kwargs)


@register_model("mednext_b")
def mednext_b(**kwargs) -> MedNeXt:
    """MedNeXt-B (10.5M parameters at 32 filters, k3)."""
    return build_mednext("B", **kwargs)


@register_model("mednext_m")
def mednext_m(**kwargs) -> MedNeXt:
    """MedNeXt-M (17.5M parameters at 32 filters, k3)."""
    return build_mednext("M", **kwargs)


@register_model("mednext_l")
def mednext_l(**kwargs) -> MedNeXt:
    """MedNeXt-L (61.7M parameters at 32 filters, k3)."""
    return build_mednext("L", **kwargs)
