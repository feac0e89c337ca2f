"""Which algorithm runs a depth-wise 'same' convolution: direct (``F.conv3d``) or FFT.

The rule below was measured on a 2-core AVX-512 CPU with PyTorch 2.14 (see
``benchmarks/RESULTS.md``, section "crossover"):

* **Training** (a gradient is needed): PyTorch's CPU backward of a depth-wise 3D conv is
  slow for every kernel size (48 ch at 48^3: 0.25 s at 3^3, 4 s at 7^3, minutes at 21^3), so
  the FFT path wins from 3^3 up, except on volumes under 4 voxels a side. In 2D the direct
  backward is reasonable for small work: the FFT path takes over from about 25k effective
  multiply-adds per channel.
* **Inference**: the direct forward is fast for small kernels. It costs one multiply-add per
  output voxel and kernel tap that lands inside the volume (a 21-tap axis reaches only about
  11 voxels of a 12-voxel axis), the FFT path about ``prod(L_i)`` per channel with
  ``L_i >= S_i + k // 2``; the FFT path wins when their ratio exceeds about 240 in 3D (two
  runs: 21^3 at 12^3 is direct's at 207, 13^3 at 12^3 the FFT's at 254; 7^3 at 24^3-48^3
  sits at 186-216, where the two paths are within 30% of each other). In 2D PyTorch's
  direct kernels slow down sharply past about 15^2 (21^2 at 128^2: 86 ms direct vs 4.5 ms
  FFT), so kernels from 17 go to FFT.

The rule is a guess on any other machine, so ``auto`` measures the cases that the rule's cost
model (:func:`estimated_cost_ratio`) places near its crossover, and keeps the faster path
(:mod:`visprior.layers.conv_autotune`); the rule decides the rest, and everywhere measuring is
off. ``conv_algorithm`` forces either path.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

from visprior.layers.fft_conv import circular_sizes

__all__ = [
    "ALGORITHMS",
    "choose_algorithm",
    "conv_algorithm",
    "estimated_cost_ratio",
    "get_conv_algorithm",
    "set_conv_algorithm",
]

ALGORITHMS = ("auto", "direct", "fft")
_INFERENCE_RATIO_3D = 240
_INFERENCE_MIN_KERNEL_2D = 17
_TRAINING_MIN_SIDE_3D = 4
_TRAINING_MIN_WORK_2D = 25_000
# The 3D training cost model's scale: the direct forward + backward over the FFT path's is
# about ``work / (8 * circular)`` (``estimated_cost_ratio``). Measured on the AMD 2-core CPU,
# batch 2: 3^3 at 48^3 x 16 ch 2.5x (model 3.0x), 21^3 at 6^3 x 128 ch 2.5x (1.4x), 21^3 at
# 4^3 x 256 ch 0.36x (0.18x: direct is faster there, where the size rule says FFT), 5^3 at
# 16^3 x 32 ch 4.6x (8.7x); 7^3 at 12^3 and 21^3 at 8^3 direct was given up at over 2x.
_TRAINING_RATIO_3D = 8
_default = "auto"


def _check(algorithm: str) -> str:
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}.")
    return algorithm


def set_conv_algorithm(algorithm: str) -> None:
    """Set the algorithm of every depth-wise conv whose own ``algorithm`` is ``None``."""
    global _default
    _default = _check(algorithm)


def get_conv_algorithm() -> str:
    """The global default: ``"auto"`` unless changed."""
    return _default


@contextlib.contextmanager
def conv_algorithm(algorithm: str) -> Iterator[None]:
    """Use ``algorithm`` for depth-wise convs inside the ``with`` block.

    Example:
        >>> with conv_algorithm("direct"):  # e.g. to time the plain F.conv3d network
        ...     y = model(x)
    """
    previous = _default
    set_conv_algorithm(algorithm)
    try:
        yield
    finally:
        set_conv_algorithm(previous)


def _mean_taps_inside(size: int, kernel_size: int) -> float:
    """Mean number of a centred kernel's taps that land inside an axis of ``size`` voxels."""
    p = kernel_size // 2
    return sum(min(i + p, size - 1) - max(i - p, 0) + 1 for i in range(size)) / size


def choose_algorithm(spatial: Sequence[int], kernel_size: int, needs_grad: bool) -> str:
    """``"fft"`` or ``"direct"`` for a depth-wise conv of this size, by the rule above."""
    spatial = tuple(int(s) for s in spatial)
    taps = math.prod(min(kernel_size, 2 * s - 1) for s in spatial)
    voxels = math.prod(spatial)
    if len(spatial) == 3:
        if needs_grad:
            return "fft" if min(spatial) >= _TRAINING_MIN_SIDE_3D and taps > 1 else "direct"
        circular = math.prod(circular_sizes(spatial, kernel_size))
        work = math.prod(_mean_taps_inside(s, kernel_size) for s in spatial) * voxels
        return "fft" if work >= _INFERENCE_RATIO_3D * circular else "direct"
    if needs_grad:
        return "fft" if voxels * taps >= _TRAINING_MIN_WORK_2D else "direct"
    return "fft" if kernel_size >= _INFERENCE_MIN_KERNEL_2D else "direct"


def estimated_cost_ratio(spatial: Sequence[int], kernel_size: int, needs_grad: bool) -> float:
    """The direct path's cost over the FFT path's by the rule's cost model, scaled so that the
    rule's crossover sits at 1: above 1 the model expects FFT to be faster. It tells the
    measured ``auto`` which cases are close enough to time (the rule's own 3D training
    threshold is a side length, not a cost, so near it the two can disagree: those cases
    are close and get timed)."""
    spatial = tuple(int(s) for s in spatial)
    voxels = math.prod(spatial)
    if len(spatial) == 3:
        circular = math.prod(circular_sizes(spatial, kernel_size))
        work = math.prod(_mean_taps_inside(s, kernel_size) for s in spatial) * voxels
        scale = _TRAINING_RATIO_3D if needs_grad else _INFERENCE_RATIO_3D
        return work / (scale * circular)
    if needs_grad:
        taps = math.prod(min(kernel_size, 2 * s - 1) for s in spatial)
        return voxels * taps / _TRAINING_MIN_WORK_2D
    return (kernel_size / _INFERENCE_MIN_KERNEL_2D) ** 2
