"""MONAI's baselines under visprior's argument names.

SwinUNETR (Hatamizadeh et al., 2022), UNETR (Hatamizadeh et al., 2022), the classic residual
UNet (Kerfoot et al., 2018) and SegResNet (Myronenko, 2018) come straight from MONAI; the
builders only set the papers' defaults and record the input-size rules so that every
registered network answers the same questions.
"""

from __future__ import annotations

from collections.abc import Sequence

from monai.networks.nets import UNETR, SegResNet, SwinUNETR, UNet

from visprior.layers.depthwise import check_positive_int, check_spatial_dims
from visprior.nets.registry import register_model

__all__ = ["segresnet", "swinunetr", "unet", "unetr"]


@register_model("swinunetr")
def swinunetr(
    *,
    in_channels: int = 1,
    out_channels: int = 2,
    feature_size: int = 48,
    depths: Sequence[int] = (2, 2, 2, 2),
    spatial_dims: int = 3,
    norm_name: str | tuple = "instance",
    **kwargs,
) -> SwinUNETR:
    """MONAI SwinUNETR; spatial sizes must be multiples of 32."""
    check_spatial_dims(spatial_dims)
    model = SwinUNETR(
        in_channels=in_channels,
        out_channels=out_channels,
        feature_size=feature_size,
        depths=tuple(depths),
        spatial_dims=spatial_dims,
        norm_name=norm_name,
        **kwargs,
    )
    model.size_divisibility = 32
    return model


@register_model("unetr")
def unetr(
    *,
    in_channels: int = 1,
    out_channels: int = 2,
    img_size: int | Sequence[int] = 96,
    feature_size: int = 16,
    hidden_size: int = 768,
    spatial_dims: int = 3,
    norm_name: str | tuple = "instance",
    **kwargs,
) -> UNETR:
    """MONAI UNETR; it only accepts inputs of exactly ``img_size`` (multiples of 16)."""
    check_spatial_dims(spatial_dims)
    model = UNETR(
        in_channels=in_channels,
        out_channels=out_channels,
        img_size=img_size,
        feature_size=feature_size,
        hidden_size=hidden_size,
        spatial_dims=spatial_dims,
        norm_name=norm_name,
        **kwargs,
    )
    model.size_divisibility = 16
    return model


@register_model("unet")
def unet(
    *,
    in_channels: int = 1,
    out_channels: int = 2,
    feature_size: int = 16,
    num_res_units: int = 2,
    spatial_dims: int = 3,
    norm_name: str | tuple = "instance",
    **kwargs,
) -> UNet:
    """MONAI UNet with widths ``feature_size * (1, 2, 4, 8, 16)`` and four stride-2 levels.

    ``feature_size=16`` is MONAI's tutorial network (4.8M parameters with 2 residual units);
    ``feature_size=8`` has 1.2M. Spatial sizes must be multiples of 16.
    """
    check_spatial_dims(spatial_dims)
    model = UNet(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=tuple(feature_size * 2**i for i in range(5)),
        strides=(2, 2, 2, 2),
        num_res_units=num_res_units,
        norm=norm_name,
        **kwargs,
    )
    model.size_divisibility = 16
    return model


@register_model("segresnet")
def segresnet(
    *,
    in_channels: int = 1,
    out_channels: int = 2,
    feature_size: int = 8,
    spatial_dims: int = 3,
    num_groups: int = 8,
    **kwargs,
) -> SegResNet:
    """MONAI SegResNet (its default width of 8 filters, 1.2M parameters); spatial sizes must be
    multiples of 8. Its convolutions are all 3^3, so it takes no ``kernel_size``."""
    check_spatial_dims(spatial_dims)
    if "kernel_size" in kwargs:
        raise ValueError(
            "model 'segresnet' takes no kernel_size: its convolutions are all 3^3 "
            f"(got kernel_size={kwargs['kernel_size']!r})."
        )
    check_positive_int(feature_size, "feature_size")
    if feature_size % num_groups:
        raise ValueError(
            f"segresnet: feature_size ({feature_size}) must be a multiple of num_groups "
            f"({num_groups}), the group norm's group count."
        )
    model = SegResNet(
        spatial_dims=spatial_dims,
        init_filters=feature_size,
        in_channels=in_channels,
        out_channels=out_channels,
        norm=("GROUP", {"num_groups": num_groups}),
        num_groups=num_groups,
        **kwargs,
    )
    model.size_divisibility = 8
    return model
