"""The training-memory estimate that ``seg plan`` fits its patch and batch to.

It needs torch alone, so that the GPU check (``benchmarks/device_check``) can set it against
``torch.cuda.max_memory_allocated`` on a machine where nothing else is installed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["TRAINING_OVERHEAD", "activation_elements_per_voxel", "training_memory_gb"]

# Backpropagation keeps each layer's output. On a 2-core CPU, a batch-1 training step at 64^3
# (benchmark (b)) peaked 2092 MiB above the built RepUX-Net, about 750 of them gradients and
# Adam's moments, against 1456 MiB of layer outputs counted; SwinUNETR 2520 MiB, about 710 of
# them gradients and moments, against 2520 counted: the count is 1.1x and 1.4x what training
# kept. The factor leaves room for the backward pass's temporaries and the CUDA caching
# allocator's slack. Weights, gradients and Adam's two moments are counted apart.
TRAINING_OVERHEAD = 1.3
FLOAT_BYTES = 4


def activation_elements_per_voxel(model: nn.Module, in_channels: int, stride: int) -> float:
    """Elements of every leaf layer's output per input voxel, from one forward pass on a
    ``2 * stride`` cube (the smallest input every network here takes)."""
    side = 2 * stride
    total = 0

    def count(_module, _inputs, output) -> None:
        nonlocal total
        tensors = output if isinstance(output, (tuple, list)) else (output,)
        total += sum(t.numel() for t in tensors if isinstance(t, torch.Tensor))

    leaves = [m for m in model.modules() if not any(True for _ in m.children())]
    handles = [m.register_forward_hook(count) for m in leaves]
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            model.train()(torch.zeros(1, in_channels, side, side, side, device=device))
    finally:
        for handle in handles:
            handle.remove()
    return total / side**3


def training_memory_gb(
    parameters: int, elements_per_voxel: float, patch: Sequence[int], batch: int
) -> float:
    """GiB a float32 AdamW training step of ``batch`` crops of ``patch`` is expected to hold:
    the layer outputs backpropagation keeps, plus weights, gradients and Adam's two moments."""
    activations = batch * math.prod(patch) * elements_per_voxel * FLOAT_BYTES * TRAINING_OVERHEAD
    return (activations + 4 * parameters * FLOAT_BYTES) / 2**30
