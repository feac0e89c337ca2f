"""MONAI's transformer baselines under visprior's argument names.

SwinUNETR (Hatamizadeh et al., 2022) and UNETR (Hatamizadeh et al., 2022) come straight
from MONAI; the builders only set the papers' defaults and record the input-size rules so
that every registered network answers the same questions.
"""

from __future__ import annotations

from collections.abc import Sequence

from monai.networks.nets import UNETR, SwinUNETR

from visprior.layers.depthwise import check_spatial_dims
from visprior.registry import register_model

__all__ = ["swinunetr", "unetr"]


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
