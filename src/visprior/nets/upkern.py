"""UpKern: start a large-kernel network from a trained smaller-kernel one.

MedNeXt (Roy et al., MICCAI 2023) initialises a k5 network from a trained k3 network by
resampling every depth-wise kernel trilinearly to the larger size, without rescaling its
values; every other weight is copied. Here this works for every network whose large kernels are
depth-wise (RepUX-Net, 3D UX-Net, MedNeXt), and across BFR: the kernel that is resampled is
the one the source convolves with (W * M for a BFR layer), and a BFR target gets
W = kernel / M, as the loader of the authors' deployed checkpoints does.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

__all__ = ["is_depthwise_kernel_pair", "resample_kernel", "upkern_state_dict"]

_FREQUENCY_MAP = "frequency_map"
_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}


def resample_kernel(kernel: torch.Tensor, size: int) -> torch.Tensor:
    """A depth-wise kernel ``(C, 1, k, ..., k)`` resampled (bi/trilinearly, half-pixel centres,
    values not rescaled) to edge ``size``.

    A constant kernel stays constant, and ``size == k`` returns the kernel unchanged.
    """
    spatial_dims = kernel.ndim - 2
    if spatial_dims not in _MODES or kernel.shape[1] != 1:
        raise ValueError(
            f"expected a depth-wise kernel of shape (C, 1, k, ..., k), got {tuple(kernel.shape)}."
        )
    if kernel.shape[-1] == size and all(s == size for s in kernel.shape[2:]):
        return kernel.clone()
    resampled = F.interpolate(
        kernel.double(), size=(size,) * spatial_dims, mode=_MODES[spatial_dims], align_corners=False
    )
    return resampled.to(kernel.dtype)


def is_depthwise_kernel_pair(source: torch.Tensor, target: torch.Tensor) -> bool:
    """Whether two tensors are depth-wise kernels ``(C, 1, k, ..., k)`` of the same channels
    and dimensions, with cubic odd kernels of different edges."""
    if source.ndim != target.ndim or source.ndim not in (3, 4, 5):
        return False
    if source.shape[:2] != target.shape[:2] or source.shape[1] != 1:
        return False
    edges = {*source.shape[2:]}, {*target.shape[2:]}
    if any(len(e) != 1 or next(iter(e)) % 2 == 0 for e in edges):
        return False
    return edges[0] != edges[1]


def _convolved_kernels(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with every BFR weight W replaced by the kernel it convolves with, W * M."""
    out = dict(state)
    for key, value in state.items():
        if key.endswith("." + _FREQUENCY_MAP):
            weight = key[: -len(_FREQUENCY_MAP)] + "weight"
            if weight in state:
                out[weight] = state[weight] * value
    return out


def upkern_state_dict(
    source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The part of ``target`` (a state dict) that ``source`` initialises, and the names of the
    depth-wise kernels it resampled.

    Every tensor whose name is in both and whose shape matches is copied; every depth-wise
    kernel of a different size is resampled (:func:`resample_kernel`). Kernels pass between
    BFR and plain layers as the kernels they convolve with. BFR frequency maps are never
    copied: they follow from the target's own kernel size.
    """
    kernels = _convolved_kernels(source)
    loaded: dict[str, torch.Tensor] = {}
    resampled = []
    for key, value in target.items():
        if key.endswith("." + _FREQUENCY_MAP) or key not in kernels:
            continue
        tensor = kernels[key]
        if tensor.shape != value.shape:
            if not is_depthwise_kernel_pair(tensor, value):
                continue
            tensor = resample_kernel(tensor, value.shape[-1])
            resampled.append(key)
        if key.endswith(".weight"):
            frequency_map = target.get(key[: -len("weight")] + _FREQUENCY_MAP)
            if frequency_map is not None:  # a BFR target: W such that W * M is the kernel
                tensor = tensor / frequency_map
        loaded[key] = tensor.to(value.dtype)
    return loaded, resampled
