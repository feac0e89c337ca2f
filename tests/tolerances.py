"""Tolerances for comparing float32 results that are summed in different orders."""

from __future__ import annotations

import torch


def assert_close_to_scale(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-4) -> None:
    """Assert ``actual`` equals ``expected`` within ``rtol`` of each value and of the largest one.

    Two float32 computations of the same sum in different orders (FFT and direct convolution,
    channel chunks, a merged kernel and its branches, another CPU's SIMD width or thread count)
    differ by rounding that grows with the size of the terms summed, not of each result: a value
    near 0 in an output whose largest value is 1e4 carries an error of order 1e4 * 1e-7. A fixed
    ``atol`` is then either too tight for large tensors (the test fails on another CPU) or too
    loose for small ones. So the absolute tolerance is ``rtol * max|expected|``; a real bug (a
    wrong or shifted kernel, a missing branch) still gives errors of order 1 relative.
    """
    scale = expected.detach().abs().max().item() if expected.numel() else 0.0
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * scale)
