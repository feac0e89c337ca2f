"""Plain large-kernel depth-wise convolution: the deploy form of every large-kernel layer.

Every re-parameterizable layer in :mod:`visprior.layers` folds into a :class:`DepthwiseConv`,
so this module also holds the argument checks they share.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from visprior.layers.conv_algorithm import ALGORITHMS, get_conv_algorithm
from visprior.layers.conv_autotune import measured_algorithm
from visprior.layers.fft_conv import fft_depthwise_conv

__all__ = [
    "DepthwiseConv",
    "depthwise_conv",
    "check_kernel_size",
    "check_positive_int",
    "check_spatial_dims",
]

_CONV_FUNCTIONS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def check_spatial_dims(spatial_dims: int) -> int:
    """Return ``spatial_dims`` if it is 2 or 3, else raise ``ValueError``."""
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}.")
    return spatial_dims


def check_positive_int(value: int, name: str) -> int:
    """Return ``value`` if it is an int >= 1 (not a bool), else raise ``ValueError`` naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}.")
    return value


def check_kernel_size(kernel_size: int, name: str = "kernel_size") -> int:
    """Return ``kernel_size`` if it is a positive odd integer, else raise ``ValueError``.

    'Same' padding of ``k // 2`` keeps the spatial size only for odd kernels.
    """
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1:
        raise ValueError(f"{name} must be a positive odd integer, got {kernel_size!r}.")
    if kernel_size % 2 == 0:
        raise ValueError(
            f"{name} must be odd so that 'same' padding keeps the spatial size, got {kernel_size}."
        )
    return kernel_size


def depthwise_conv(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    algorithm: str | None = None,
) -> torch.Tensor:
    """Depth-wise convolution with 'same' padding, run directly or through FFTs.

    Args:
        x: input of shape ``(N, C, *spatial)``.
        weight: kernel of shape ``(C, 1, k, ..., k)`` with odd ``k``.
        bias: ``(C,)`` or ``None``.
        algorithm: ``"direct"``, ``"fft"``, ``"auto"`` (the faster on this machine, measured
            near the size rule's crossover: :mod:`visprior.layers.conv_autotune`) or ``None``
            for the global default.
    """
    spatial_dims = weight.ndim - 2
    if x.ndim != spatial_dims + 2:
        raise ValueError(
            f"input must have {spatial_dims + 2} dimensions (N, C, {spatial_dims} spatial) for a "
            f"{spatial_dims}D depth-wise conv, got shape {tuple(x.shape)}."
        )
    if x.shape[1] != weight.shape[0]:
        raise ValueError(
            f"input has {x.shape[1]} channels but the depth-wise conv has {weight.shape[0]}."
        )
    algorithm = get_conv_algorithm() if algorithm is None else algorithm
    if algorithm == "auto":
        needs_grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
        algorithm = measured_algorithm(x, weight, bias, needs_grad, _run_path)
    if algorithm not in ("direct", "fft"):
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}.")
    return _run_path(algorithm, x, weight, bias)


def _run_path(
    algorithm: str, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    if algorithm == "fft":
        return fft_depthwise_conv(x, weight, bias)
    spatial_dims = weight.ndim - 2
    weight, padding = _taps_reaching_input(weight, x.shape[2:])
    return _CONV_FUNCTIONS[spatial_dims](x, weight, bias, padding=padding, groups=weight.shape[0])


def _taps_reaching_input(
    weight: torch.Tensor, spatial: torch.Size
) -> tuple[torch.Tensor, tuple[int, ...]]:
    """The kernel cut to the taps that can reach an input voxel, with the padding that keeps
    the output's size: on an axis of ``s`` voxels only the central ``2s - 1`` taps ever meet
    the input, the rest multiply padding. The result and every gradient are unchanged (the
    cut taps' gradient is 0 either way), and a 21^3 kernel on the 3^3 deepest stage of a 48^3
    crop costs 5^3 taps instead of 21^3 (its direct backward ran 96 ms a call, for nothing)."""
    kernel_size = weight.shape[-1]
    kept = [min(kernel_size, 2 * int(s) - 1) for s in spatial]
    if all(k == kernel_size for k in kept):
        return weight, (kernel_size // 2,) * len(kept)
    cut = tuple(slice((kernel_size - k) // 2, (kernel_size + k) // 2) for k in kept)
    return weight[(slice(None), slice(None), *cut)], tuple(k // 2 for k in kept)


class DepthwiseConv(nn.Module):
    """Depth-wise convolution with a (large) odd kernel and 'same' padding.

    Args:
        channels: number of input and output channels.
        kernel_size: odd kernel edge length, e.g. 21.
        spatial_dims: 2 or 3.
        bias: whether to learn a per-channel bias.

    Example:
        >>> conv = DepthwiseConv(8, kernel_size=21, spatial_dims=3)
        >>> conv(torch.randn(1, 8, 16, 16, 16)).shape
        torch.Size([1, 8, 16, 16, 16])
    """

    def __init__(self, channels: int, kernel_size: int, spatial_dims: int = 3, bias: bool = True):
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}.")
        self.channels = channels
        self.kernel_size = check_kernel_size(kernel_size)
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.weight = nn.Parameter(torch.empty(channels, 1, *(kernel_size,) * spatial_dims))
        self.bias = nn.Parameter(torch.empty(channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Same initialisation as torch.nn.ConvNd, so a plain model trains like the reference code.
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.kernel_size**self.spatial_dims)
            nn.init.uniform_(self.bias, -bound, bound)

    def effective_weight(self) -> torch.Tensor:
        """The kernel the forward pass convolves with."""
        return self.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return depthwise_conv(x, self.effective_weight(), self.bias)

    def reparameterize(self) -> DepthwiseConv:
        """Return the deploy form of this layer: a plain conv is already fused, so itself."""
        return self

    def extra_repr(self) -> str:
        return (
            f"{self.channels}, kernel_size={self.kernel_size}, spatial_dims={self.spatial_dims}, "
            f"bias={self.bias is not None}"
        )
