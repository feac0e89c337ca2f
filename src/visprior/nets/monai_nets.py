"""MONAI's baselines under visprior's argument names.

SwinUNETR (Hatamizadeh et al., 2022), UNETR (Hatamizadeh et al., 2022) and the classic
residual UNet (Kerfoot et al., 2018) come straight from MONAI; the builders only set the
papers' defaults and record the input-size rules so that every registered network answers
the same questions.
"""

from __future__ import annotations

from collections.abc import Sequence

from monai.networks.nets import UNETR, SwinUNETR, UNet

from visprior.layers.depthwise import check_spatial_dims
from visprior.nets.registry import register_model

__all__ = ["swinunetr", "unet", "unetr"]


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
