"""3D UX-Net: ConvNeXt-style 7^3 depth-wise blocks in a UNETR-style segmentation network.

Lee et al., "3D UX-Net: A Large Kernel Volumetric ConvNet Modernizing Hierarchical
Transformer for Medical Image Segmentation", ICLR 2023 (arXiv 2209.15076).

Block: depth-wise conv -> LayerNorm -> grouped 1x1 expansion (x4) -> GELU -> grouped 1x1
projection -> layer scale -> drop path -> residual add. The 1x1 convs are grouped per input
channel (``groups=dim``), as in the authors' network, which is what keeps it at 53.0M
parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.layers import DropPath
from torch import nn

from visprior.layers.depthwise import DepthwiseConv, check_kernel_size
from visprior.layers.norm import ChannelsFirstLayerNorm
from visprior.nets.hierarchical import EncoderUNETRDecoder
from visprior.nets.registry import register_model

__all__ = ["UXBlock", "UXNet"]

_CONVS = {2: nn.Conv2d, 3: nn.Conv3d}


class UXBlock(nn.Module):
    """One 3D UX-Net block (residual).

    Args:
        dim: channels.
        kernel_size: odd depth-wise kernel edge length (paper: 7).
        spatial_dims: 2 or 3.
        drop_path: stochastic depth probability of the residual branch.
        layer_scale_init_value: initial per-channel scale of the branch; 0 disables it.
    """

    def __init__(
        self,
        dim: int,
        kernel_size: int = 7,
        spatial_dims: int = 3,
        drop_path: float = 0.0,
        layer_scale_init_value: float = 1e-6,
    ):
        super().__init__()
        conv = _CONVS[spatial_dims]
        self.dwconv = DepthwiseConv(dim, kernel_size, spatial_dims)
        self.norm = ChannelsFirstLayerNorm(dim, eps=1e-6)
        self.pwconv1 = conv(dim, 4 * dim, kernel_size=1, groups=dim)
        self.act = nn.GELU()
        self.pwconv2 = conv(4 * dim, dim, kernel_size=1, groups=dim)
        self.gamma = (
            nn.Parameter(torch.full((dim,), float(layer_scale_init_value)))
            if layer_scale_init_value > 0
            else None
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pwconv2(self.act(self.pwconv1(self.norm(self.dwconv(x)))))
        if self.gamma is not None:
            y = y * self.gamma.reshape(1, -1, *([1] * (y.ndim - 2)))
        return x + self.drop_path(y)


class UXNet(EncoderUNETRDecoder):
    """3D UX-Net for 2D/3D segmentation (the baseline RepUX-Net builds on).

    Args:
        in_channels: input channels (modalities).
        out_channels: output channels (classes, background included).
        feature_size: first stage width (doubled per stage) or the four widths.
        depths: blocks per stage.
        kernel_size: odd depth-wise kernel edge length (paper: 7).
        spatial_dims: 2 or 3.
        hidden_size: channels of the bottleneck decoder block.
        norm_name: decoder normalisation (MONAI name).
        drop_path_rate: stochastic depth, rising linearly to this value over all blocks.
        layer_scale_init_value: initial layer scale; 0 disables it.
        res_block: residual decoder blocks.

    Example:
        >>> net = UXNet(in_channels=1, out_channels=5)  # the paper's 53.0M network
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 2,
        feature_size: int | Sequence[int] = 48,
        depths: Sequence[int] = (2, 2, 2, 2),
        kernel_size: int = 7,
        spatial_dims: int = 3,
        hidden_size: int = 768,
        norm_name: str | tuple = "instance",
        drop_path_rate: float = 0.0,
        layer_scale_init_value: float = 1e-6,
        res_block: bool = True,
    ):
        check_kernel_size(kernel_size)
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate!r}.")
        total_blocks = sum(depths)

        def make_block(width: int, _stage: int, _index: int, global_index: int) -> UXBlock:
            rate = drop_path_rate * global_index / max(total_blocks - 1, 1)
            return UXBlock(width, kernel_size, spatial_dims, rate, layer_scale_init_value)

        super().__init__(
            in_channels,
            out_channels,
            feature_size,
            depths,
            make_block,
            spatial_dims,
            hidden_size,
            norm_name,
            res_block,
        )
        self.kernel_size = kernel_size


@register_model("uxnet")
def uxnet(**kwargs) -> UXNet:
    """3D UX-Net (7^3 depth-wise kernels)."""
    return UXNet(**kwargs)
