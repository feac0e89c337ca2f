"""Structural re-parameterization of a large depth-wise kernel (RepLKNet style).

Ding et al., "Scaling Up Your Kernels to 31x31: Revisiting Large Kernel Design in CNNs",
CVPR 2022. During training a large depth-wise conv runs beside parallel small depth-wise
convs, each followed by its own BatchNorm, and the branch outputs are summed. Because every
branch is linear in eval mode, they merge exactly into one large kernel with a bias: each
BatchNorm is folded into its conv, and each small kernel is zero-padded to the large size
around the centre. This is the baseline that BFR replaces at no extra training cost.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from visprior.layers.depthwise import DepthwiseConv, check_kernel_size, check_spatial_dims

__all__ = ["StructuralReparamConv", "fuse_conv_bn", "DEFAULT_SMALL_KERNEL_SIZES"]

DEFAULT_SMALL_KERNEL_SIZES = (3, 5, 7)

_BATCH_NORMS = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


def fuse_conv_bn(
    weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.modules.batchnorm._BatchNorm
) -> tuple[torch.Tensor, torch.Tensor]:
    """Kernel and bias of ``bn(conv(x))`` as one conv, using the BN running statistics."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    conv_bias = bias if bias is not None else torch.zeros_like(bn.running_mean)
    fused_weight = weight * scale.reshape(-1, *([1] * (weight.ndim - 1)))
    fused_bias = bn.bias + (conv_bias - bn.running_mean) * scale
    return fused_weight, fused_bias


class _ConvBN(nn.Module):
    """Depth-wise conv without bias followed by BatchNorm: one branch."""

    def __init__(self, channels: int, kernel_size: int, spatial_dims: int):
        super().__init__()
        self.conv = DepthwiseConv(channels, kernel_size, spatial_dims, bias=False)
        self.bn = _BATCH_NORMS[spatial_dims](channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))

    def fused_kernel(self, kernel_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """BN-folded kernel centre-padded to ``kernel_size``, and its bias."""
        weight, bias = fuse_conv_bn(self.conv.weight, None, self.bn)
        pad = (kernel_size - self.conv.kernel_size) // 2
        return F.pad(weight, [pad] * (2 * self.conv.spatial_dims)), bias


class StructuralReparamConv(nn.Module):
    """Large depth-wise kernel with parallel small-kernel branches, each with BatchNorm.

    Args:
        channels: number of input and output channels.
        kernel_size: odd edge length of the large kernel.
        small_kernel_sizes: odd edge lengths of the parallel branches, each < ``kernel_size``;
            by default those of 3, 5 and 7 that are smaller than ``kernel_size``.
        spatial_dims: 2 or 3.

    The merge uses the BatchNorm running statistics, so it equals the eval-mode output.

    Example:
        >>> conv = StructuralReparamConv(4, 21, small_kernel_sizes=(3, 5), spatial_dims=3).eval()
        >>> fused = conv.reparameterize()  # a DepthwiseConv with bias
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int,
        small_kernel_sizes: Sequence[int] | None = None,
        spatial_dims: int = 3,
    ):
        super().__init__()
        check_kernel_size(kernel_size)
        if small_kernel_sizes is None:
            small_kernel_sizes = tuple(s for s in DEFAULT_SMALL_KERNEL_SIZES if s < kernel_size)
        check_spatial_dims(spatial_dims)
        for size in small_kernel_sizes:
            check_kernel_size(size, "small_kernel_sizes")
            if size >= kernel_size:
                raise ValueError(
                    f"small_kernel_sizes must be smaller than kernel_size={kernel_size}, "
                    f"got {tuple(small_kernel_sizes)}."
                )
        self.channels = channels
        self.kernel_size = kernel_size
        self.spatial_dims = spatial_dims
        self.large = _ConvBN(channels, kernel_size, spatial_dims)
        self.small = nn.ModuleList(
            _ConvBN(channels, size, spatial_dims) for size in small_kernel_sizes
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.large(x)
        for branch in self.small:
            out = out + branch(x)
        return out

    @torch.no_grad()
    def merged_kernel(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The one kernel and bias equal to the eval-mode sum of all branches."""
        weight, bias = self.large.fused_kernel(self.kernel_size)
        for branch in self.small:
            branch_weight, branch_bias = branch.fused_kernel(self.kernel_size)
            weight = weight + branch_weight
            bias = bias + branch_bias
        return weight, bias

    @torch.no_grad()
    def reparameterize(self) -> DepthwiseConv:
        """Merge all branches into a new plain :class:`DepthwiseConv` with bias."""
        weight, bias = self.merged_kernel()
        fused = DepthwiseConv(self.channels, self.kernel_size, self.spatial_dims, bias=True)
        fused = fused.to(device=weight.device, dtype=weight.dtype)
        fused.weight.copy_(weight)
        fused.bias.copy_(bias)
        return fused
