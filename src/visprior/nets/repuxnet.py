"""RepUX-Net: a pure CNN with 21^3 depth-wise kernels trained through a frequency prior.

Lee et al., "Scaling Up 3D Kernels with Bayesian Frequency Re-parameterization for Medical
Image Segmentation", MICCAI 2023 (arXiv 2303.05785).

Each encoder block is depth-wise large-kernel conv -> BatchNorm -> GELU (no residual, no
MLP). The large-kernel conv comes in three kinds:

* ``"bfr"``: the paper's method, W * M with the frequency prior M (``BFRDepthwiseConv``);
* ``"sr"``: RepLKNet-style parallel small kernels (``StructuralReparamConv``);
* ``"plain"``: a plain depth-wise conv, the ablation without any prior.

All three fold into the same plain conv for deployment (:func:`visprior.reparameterize_model`),
so a deployed model, a model built with ``inference_mode=True`` and the authors' ``deploy=True``
model share one structure.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from visprior.layers.depthwise import DepthwiseConv, check_kernel_size
from visprior.layers.frequency_prior import BFRDepthwiseConv
from visprior.layers.structural_reparam import StructuralReparamConv
from visprior.nets.hierarchical import EncoderUNETRDecoder
from visprior.nets.registry import register_model

__all__ = ["RepUXBlock", "RepUXNet", "BLOCK_KINDS"]

BLOCK_KINDS = ("bfr", "sr", "plain")
_BATCH_NORMS = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


class RepUXBlock(nn.Module):
    """Depth-wise large-kernel conv -> BatchNorm -> GELU.

    Args:
        dim: channels.
        kernel_size: odd edge length of the depth-wise kernel.
        block: ``"bfr"``, ``"sr"`` or ``"plain"`` (ignored when ``inference_mode``).
        spatial_dims: 2 or 3.
        bfr_a: prior strength ``a`` of the BFR frequency map.
        small_kernel_sizes: parallel branches of the ``"sr"`` kind (default: 3, 5, 7 where
            smaller than ``kernel_size``).
        inference_mode: build the fused deploy structure (a plain conv) directly.
    """

    def __init__(
        self,
        dim: int,
        kernel_size: int = 21,
        block: str = "bfr",
        spatial_dims: int = 3,
        bfr_a: float = 1.0,
        small_kernel_sizes: Sequence[int] | None = None,
        inference_mode: bool = False,
    ):
        super().__init__()
        if block not in BLOCK_KINDS:
            raise ValueError(f"block must be one of {BLOCK_KINDS}, got {block!r}.")
        if inference_mode or block == "plain":
            self.dwconv = DepthwiseConv(dim, kernel_size, spatial_dims)
        elif block == "bfr":
            self.dwconv = BFRDepthwiseConv(dim, kernel_size, spatial_dims, a=bfr_a)
        else:
            self.dwconv = StructuralReparamConv(dim, kernel_size, small_kernel_sizes, spatial_dims)
        self.norm = _BATCH_NORMS[spatial_dims](dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.dwconv(x)))


class RepUXNet(EncoderUNETRDecoder):
    """RepUX-Net for 2D/3D segmentation.

    Args:
        in_channels: input channels (modalities).
        out_channels: output channels (classes, background included).
        feature_size: first stage width (doubled per stage) or the four widths.
        depths: blocks per stage.
        kernel_size: odd edge length of the depth-wise kernels (paper: 21).
        spatial_dims: 2 or 3.
        hidden_size: channels of the bottleneck decoder block.
        norm_name: decoder normalisation (MONAI name).
        block: large-kernel kind, ``"bfr"`` (paper), ``"sr"`` or ``"plain"``.
        bfr_a: prior strength ``a`` > 0 of ``M = a / (d + a)``.
        small_kernel_sizes: branch kernels of the ``"sr"`` kind (default: 3, 5, 7 where
            smaller than ``kernel_size``).
        res_block: residual decoder blocks.
        inference_mode: build the deploy structure (plain convs) directly, e.g. to load a
            fused state dict.

    Example:
        >>> net = RepUXNet(in_channels=1, out_channels=5)  # the paper's 65.8M network
        >>> net(torch.randn(1, 1, 96, 96, 96)).shape
        torch.Size([1, 5, 96, 96, 96])
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 2,
        feature_size: int | Sequence[int] = 48,
        depths: Sequence[int] = (2, 2, 2, 2),
        kernel_size: int = 21,
        spatial_dims: int = 3,
        hidden_size: int = 768,
        norm_name: str | tuple = "instance",
        block: str = "bfr",
        bfr_a: float = 1.0,
        small_kernel_sizes: Sequence[int] | None = None,
        res_block: bool = True,
        inference_mode: bool = False,
    ):
        if block not in BLOCK_KINDS:
            raise ValueError(f"block must be one of {BLOCK_KINDS}, got {block!r}.")
        check_kernel_size(kernel_size)
        if not bfr_a > 0:
            raise ValueError(f"bfr_a must be > 0, got {bfr_a!r}.")

        def make_block(width: int, *_: int) -> RepUXBlock:
            return RepUXBlock(
                width, kernel_size, block, spatial_dims, bfr_a, small_kernel_sizes, inference_mode
            )

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
        self.block = block
        self.kernel_size = kernel_size


@register_model("repuxnet")
def repuxnet(**kwargs) -> RepUXNet:
    """RepUX-Net with Bayesian frequency re-parameterization (the paper's model)."""
    return RepUXNet(block="bfr", **kwargs)


@register_model("repuxnet_plain")
def repuxnet_plain(**kwargs) -> RepUXNet:
    """RepUX-Net with plain large kernels (no prior): the ablation baseline."""
    return RepUXNet(block="plain", **kwargs)


@register_model("repuxnet_sr")
def repuxnet_sr(**kwargs) -> RepUXNet:
    """RepUX-Net with RepLKNet-style structural re-parameterization branches."""
    return RepUXNet(block="sr", **kwargs)
