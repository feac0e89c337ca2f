"""FFT depth-wise conv: equal to F.conv2d/F.conv3d in value and gradient, any size."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.tolerances import assert_close_to_scale
from visprior.layers import fft_conv
from visprior.layers.fft_conv import circular_sizes, fft_depthwise_conv, fft_size

CONVS = {2: F.conv2d, 3: F.conv3d}


def _direct(x, w, b=None):
    return CONVS[x.ndim - 2](x, w, b, padding=w.shape[-1] // 2, groups=w.shape[0])


def test_fft_size_has_small_prime_factors():
    assert [fft_size(n) for n in (1, 11, 13, 17, 58, 61)] == [1, 12, 14, 18, 60, 63]
    assert fft_size(61, even=True) == 64
    # A 'same' conv needs only S + k // 2 per axis.
    assert circular_sizes((48, 24, 6), 21) == (60, 35, 16)


@pytest.mark.parametrize(
    "shape, k",
    [
        ((2, 3, 9, 7, 11), 5),  # odd, non-cubic sizes, batch 2
        ((1, 4, 12, 12, 12), 21),  # kernel larger than the volume
        ((1, 2, 6, 16, 5), 7),
        ((3, 2, 13, 10), 9),  # 2D
        ((1, 5, 8, 8), 1),
    ],
)
def test_values_and_gradients_equal_direct_conv(shape, k):
    spatial = len(shape) - 2
    x = torch.randn(shape, requires_grad=True)
    w = torch.randn(shape[1], 1, *(k,) * spatial, requires_grad=True)
    b = torch.randn(shape[1], requires_grad=True)
    target = torch.randn(shape)

    y = fft_depthwise_conv(x, w, b)
    (y * target).sum().backward()
    grads = [t.grad.clone() for t in (x, w, b)]
    for t in (x, w, b):
        t.grad = None
    reference = _direct(x, w, b)
    (reference * target).sum().backward()

    assert_close_to_scale(y, reference, rtol=1e-4)
    for grad, t in zip(grads, (x, w, b), strict=True):
        assert_close_to_scale(grad, t.grad, rtol=1e-4)


@pytest.mark.parametrize("spatial", [2, 3])
def test_gradcheck_float64(spatial):
    x = torch.randn(2, 2, *(6, 5, 7)[:spatial], dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 1, *(5,) * spatial, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(fft_depthwise_conv, (x, w))


def test_channel_chunks_give_the_same_result(monkeypatch):
    x = torch.randn(2, 5, 10, 10, 10, requires_grad=True)
    w = torch.randn(5, 1, 7, 7, 7, requires_grad=True)
    y = fft_depthwise_conv(x, w)
    y.square().sum().backward()
    whole = (y.detach(), x.grad.clone(), w.grad.clone())
    x.grad = w.grad = None

    monkeypatch.setattr(fft_conv, "_CHUNK_ELEMENTS", {"cpu": 1})  # one channel per chunk
    y = fft_depthwise_conv(x, w)
    y.square().sum().backward()
    # The same sums in another order: float32 rounding relative to the largest value.
    for a, b in zip(whole, (y.detach(), x.grad, w.grad), strict=True):
        assert_close_to_scale(b, a, rtol=1e-4)


def test_only_the_needed_gradients():
    x = torch.randn(1, 2, 8, 8, 8)
    w = torch.randn(2, 1, 5, 5, 5, requires_grad=True)
    fft_depthwise_conv(x, w).sum().backward()
    assert x.grad is None and w.grad is not None

    x.requires_grad_(True)
    w2 = w.detach()
    fft_depthwise_conv(x, w2).sum().backward()
    assert x.grad is not None and w2.grad is None


def test_half_precision_input_is_computed_in_float32():
    x = torch.randn(1, 2, 8, 8, 8)
    w = torch.randn(2, 1, 5, 5, 5)
    y = fft_depthwise_conv(x.bfloat16(), w.bfloat16())
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(
        y.float(), _direct(x.bfloat16().float(), w.bfloat16().float()), rtol=2e-2, atol=2e-2
    )
