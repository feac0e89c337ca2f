"""The encoder-decoder skeleton shared by 3D UX-Net and RepUX-Net.

A four-stage hierarchical encoder (strided stem, then LayerNorm + 2x downsampling between
stages, a LayerNorm on every stage output) feeds a UNETR-style decoder built from MONAI's
``UnetrBasicBlock`` / ``UnetrUpBlock`` / ``UnetOutBlock``. The families differ only in the
block that fills each stage, passed in as a factory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from monai.networks.blocks import UnetOutBlock, UnetrBasicBlock, UnetrUpBlock
from torch import nn

from visprior.layers.depthwise import check_positive_int, check_spatial_dims
from visprior.layers.norm import ChannelsFirstLayerNorm

__all__ = ["HierarchicalEncoder", "EncoderUNETRDecoder", "resolve_widths"]

_CONVS = {2: nn.Conv2d, 3: nn.Conv3d}
NUM_STAGES = 4

# block_factory(width, stage_index, block_index_in_stage, global_block_index) -> nn.Module
BlockFactory = Callable[[int, int, int, int], nn.Module]


def resolve_widths(feature_size: int | Sequence[int]) -> tuple[int, ...]:
    """Stage widths from an int (doubling per stage) or an explicit sequence of four."""
    if isinstance(feature_size, int) and not isinstance(feature_size, bool):
        widths = tuple(feature_size * 2**i for i in range(NUM_STAGES))
    else:
        widths = tuple(feature_size)
    if len(widths) != NUM_STAGES or not all(isinstance(w, int) and w > 0 for w in widths):
        raise ValueError(
            f"feature_size must be a positive int or {NUM_STAGES} positive ints, "
            f"got {feature_size!r}."
        )
    return widths


def _check_depths(depths: Sequence[int]) -> tuple[int, ...]:
    depths = tuple(depths)
    if len(depths) != NUM_STAGES or not all(isinstance(d, int) and d >= 1 for d in depths):
        raise ValueError(f"depths must be {NUM_STAGES} ints >= 1, got {depths!r}.")
    return depths


class HierarchicalEncoder(nn.Module):
    """Stem + four stages; returns the LayerNorm-ed output of every stage.

    Args:
        in_channels: input channels.
        widths: channels of the four stages.
        depths: blocks per stage.
        block_factory: builds each block, see ``BlockFactory``.
        spatial_dims: 2 or 3.
    """

    def __init__(
        self,
        in_channels: int,
        widths: Sequence[int],
        depths: Sequence[int],
        block_factory: BlockFactory,
        spatial_dims: int = 3,
    ):
        super().__init__()
        conv = _CONVS[spatial_dims]
        self.stem = nn.Sequential(
            conv(in_channels, widths[0], kernel_size=7, stride=2, padding=3),
            ChannelsFirstLayerNorm(widths[0]),
        )
        self.downsamples = nn.ModuleList(
            nn.Sequential(
                ChannelsFirstLayerNorm(widths[i - 1]),
                conv(widths[i - 1], widths[i], kernel_size=2, stride=2),
            )
            for i in range(1, NUM_STAGES)
        )
        offsets = [sum(depths[:i]) for i in range(NUM_STAGES)]
        self.stages = nn.ModuleList(
            nn.Sequential(
                *(block_factory(widths[i], i, j, offsets[i] + j) for j in range(depths[i]))
            )
            for i in range(NUM_STAGES)
        )
        self.stage_norms = nn.ModuleList(ChannelsFirstLayerNorm(w) for w in widths)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        x = self.stem(x)
        for i, (stage, norm) in enumerate(zip(self.stages, self.stage_norms, strict=True)):
            if i > 0:
                x = self.downsamples[i - 1](x)
            x = stage(x)
            features.append(norm(x))
        return features


class EncoderUNETRDecoder(nn.Module):
    """A hierarchical encoder with a UNETR-style decoder; base class of the UX-Net family.

    Args:
        in_channels: input channels.
        out_channels: output channels (classes, background included).
        feature_size: first stage width (doubled per stage) or the four stage widths; the
            decoder uses the same widths.
        depths: blocks per stage.
        block_factory: builds each encoder block.
        spatial_dims: 2 or 3.
        hidden_size: channels of the bottleneck block on the last stage.
        norm_name: normalisation of the decoder blocks (MONAI name, e.g. ``"instance"``).
        res_block: residual decoder blocks, as in the papers.
    """

    #: Spatial sizes must be multiples of this (stem stride 2 times three 2x downsamplings).
    size_divisibility = 2**NUM_STAGES

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        feature_size: int | Sequence[int],
        depths: Sequence[int],
        block_factory: BlockFactory,
        spatial_dims: int = 3,
        hidden_size: int = 768,
        norm_name: str | tuple = "instance",
        res_block: bool = True,
    ):
        super().__init__()
        for name, value in (
            ("in_channels", in_channels),
            ("out_channels", out_channels),
            ("hidden_size", hidden_size),
        ):
            check_positive_int(value, name)
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.in_channels = in_channels
        self.out_channels = out_channels
        widths = resolve_widths(feature_size)
        depths = _check_depths(depths)
        self.backbone = HierarchicalEncoder(
            in_channels, widths, depths, block_factory, spatial_dims
        )

        def basic(cin: int, cout: int) -> UnetrBasicBlock:
            return UnetrBasicBlock(
                spatial_dims,
                cin,
                cout,
                kernel_size=3,
                stride=1,
                norm_name=norm_name,
                res_block=res_block,
            )

        def up(cin: int, cout: int) -> UnetrUpBlock:
            return UnetrUpBlock(
                spatial_dims,
                cin,
                cout,
                kernel_size=3,
                upsample_kernel_size=2,
                norm_name=norm_name,
                res_block=res_block,
            )

        w0, w1, w2, w3 = widths
        self.encoder1 = basic(in_channels, w0)
        self.encoder2 = basic(w0, w1)
        self.encoder3 = basic(w1, w2)
        self.encoder4 = basic(w2, w3)
        self.encoder5 = basic(w3, hidden_size)
        self.decoder5 = up(hidden_size, w3)
        self.decoder4 = up(w3, w2)
        self.decoder3 = up(w2, w1)
        self.decoder2 = up(w1, w0)
        self.decoder1 = basic(w0, w0)
        self.out = UnetOutBlock(spatial_dims, w0, out_channels)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``x`` is ``(N, in_channels, *spatial)`` with valid sizes."""
        if x.ndim != self.spatial_dims + 2:
            raise ValueError(
                f"input must have shape (N, C, {', '.join('HWD'[: self.spatial_dims])}) for "
                f"spatial_dims={self.spatial_dims}, got shape {tuple(x.shape)}."
            )
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"input has {x.shape[1]} channels, the network expects in_channels="
                f"{self.in_channels}."
            )
        spatial = tuple(x.shape[2:])
        if any(s % self.size_divisibility for s in spatial):
            raise ValueError(
                f"input spatial size {spatial} must be divisible by the network's total stride "
                f"{self.size_divisibility}; pad or crop it, e.g. with monai.transforms.DivisiblePad"
                f"(k={self.size_divisibility})."
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        features = self.backbone(x)
        skip1 = self.encoder1(x)
        skip2 = self.encoder2(features[0])
        skip3 = self.encoder3(features[1])
        skip4 = self.encoder4(features[2])
        hidden = self.encoder5(features[3])
        y = self.decoder5(hidden, skip4)
        y = self.decoder4(y, skip3)
        y = self.decoder3(y, skip2)
        y = self.decoder2(y, skip1)
        return self.out(self.decoder1(y))
