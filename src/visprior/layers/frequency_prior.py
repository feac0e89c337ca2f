"""Bayesian frequency re-parameterization (BFR) of a large depth-wise kernel.

Lee et al., "Scaling Up 3D Kernels with Bayesian Frequency Re-parameterization for
Medical Image Segmentation", MICCAI 2023 (arXiv 2303.05785).

The trainable parameter is W; the forward pass convolves with W * M, where the frequency
map M = a / (d + a) (d: Euclidean distance of a tap to the kernel centre) is a fixed buffer.
Since dL/dW = M * dL/d(W*M), plain SGD moves each tap of the effective kernel with a
learning rate scaled by M^2: the centre converges fast and the periphery slowly. At deploy
time W * M is folded once into a plain :class:`~visprior.layers.depthwise.DepthwiseConv`.

The authors' public code instead re-wraps ``weight * M`` into a new ``nn.Parameter`` on
every forward, which detaches it from the optimizer and compounds M; here W stays the one
trained parameter and forward passes never modify it.
"""

from __future__ import annotations

import torch

from visprior.layers.depthwise import DepthwiseConv, check_kernel_size, check_spatial_dims

__all__ = ["frequency_prior", "BFRDepthwiseConv"]


def frequency_prior(
    kernel_size: int,
    spatial_dims: int = 3,
    a: float = 1.0,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The BFR frequency map ``M = a / (d + a)`` of shape ``(kernel_size,) * spatial_dims``.

    Args:
        kernel_size: odd kernel edge length.
        spatial_dims: 2 or 3.
        a: prior strength, > 0. Larger ``a`` flattens the map towards 1 everywhere.
        dtype: dtype of the returned map (computed in float64 first).

    Example:
        >>> m = frequency_prior(21, 3)
        >>> float(m[10, 10, 10]), float(m[10, 10, 11])
        (1.0, 0.5)
    """
    check_kernel_size(kernel_size)
    check_spatial_dims(spatial_dims)
    if not a > 0:  # also rejects NaN
        raise ValueError(f"a must be > 0, got {a!r}.")
    offsets = torch.arange(kernel_size, dtype=torch.float64) - kernel_size // 2
    grids = torch.meshgrid(*([offsets] * spatial_dims), indexing="ij")
    distance = torch.sqrt(sum(g**2 for g in grids))
    return (a / (distance + a)).to(dtype)


class BFRDepthwiseConv(DepthwiseConv):
    """Depth-wise conv whose kernel is the trainable W scaled by the frequency prior M.

    ``weight`` is W (an ``nn.Parameter``); ``frequency_map`` is M, a buffer of shape
    ``(k,) * spatial_dims`` shared by all channels, saved in the state dict so that a
    training checkpoint cannot be mistaken for a deployed one.

    Args:
        channels: number of input and output channels.
        kernel_size: odd kernel edge length (the paper uses 21).
        spatial_dims: 2 or 3.
        a: prior strength of ``M = a / (d + a)``, > 0 (the paper uses 1).
        bias: whether to learn a per-channel bias.

    Example:
        >>> conv = BFRDepthwiseConv(4, kernel_size=7, spatial_dims=2)
        >>> deployed = conv.reparameterize()  # a plain DepthwiseConv holding W * M
        >>> x = torch.randn(1, 4, 12, 12)
        >>> torch.allclose(conv(x), deployed(x), atol=1e-6)
        True
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int,
        spatial_dims: int = 3,
        a: float = 1.0,
        bias: bool = True,
    ):
        super().__init__(channels, kernel_size, spatial_dims, bias)
        self.a = float(a)
        self.register_buffer("frequency_map", frequency_prior(kernel_size, spatial_dims, a))

    def effective_weight(self) -> torch.Tensor:
        """W * M: the kernel the forward pass convolves with (differentiable in W)."""
        return self.weight * self.frequency_map

    @torch.no_grad()
    def reparameterize(self) -> DepthwiseConv:
        """Fold W * M into a new plain :class:`DepthwiseConv` (this layer is left unchanged)."""
        fused = DepthwiseConv(
            self.channels, self.kernel_size, self.spatial_dims, bias=self.bias is not None
        ).to(device=self.weight.device, dtype=self.weight.dtype)
        fused.weight.copy_(self.effective_weight())
        if self.bias is not None:
            fused.bias.copy_(self.bias)
        return fused

    @torch.no_grad()
    def load_deployed_kernel(self, kernel: torch.Tensor) -> None:
        """Set W so that the effective kernel W * M equals ``kernel`` (M > 0 everywhere).

        Used to continue BFR training from a deployed checkpoint, e.g. the authors' weights.
        """
        if kernel.shape != self.weight.shape:
            raise ValueError(
                f"kernel has shape {tuple(kernel.shape)}, expected {tuple(self.weight.shape)}."
            )
        self.weight.copy_(kernel / self.frequency_map)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, a={self.a}"
