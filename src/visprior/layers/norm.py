"""LayerNorm over the channel axis of a channels-first tensor ``(N, C, *spatial)``.

PyTorch's ``nn.LayerNorm`` normalises trailing axes only, and MONAI has no channels-first
variant for 3D, so the channel axis is moved last for ``F.layer_norm`` and back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ChannelsFirstLayerNorm"]


class ChannelsFirstLayerNorm(nn.Module):
    """LayerNorm of each voxel's channel vector, with a per-channel affine transform.

    Args:
        channels: size of the channel axis (dim 1).
        eps: added to the biased variance inside the square root.
    """

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.channels = channels
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.movedim(1, -1)
        x = F.layer_norm(x, (self.channels,), self.weight, self.bias, self.eps)
        return x.movedim(-1, 1)

    def extra_repr(self) -> str:
        return f"{self.channels}, eps={self.eps}"
