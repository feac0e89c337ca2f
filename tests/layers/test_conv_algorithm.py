"""Automatic choice between direct and FFT depth-wise convolution, and forcing either."""

from __future__ import annotations

import pytest
import torch

from tests.tolerances import assert_close_to_scale
from visprior.layers import DepthwiseConv, depthwise_conv, fft_conv
from visprior.layers.conv_algorithm import (
    choose_algorithm,
    conv_algorithm,
    get_conv_algorithm,
    set_conv_algorithm,
)


@pytest.mark.parametrize(
    "spatial, k, needs_grad, expected",
    [
        # Training in 3D: FFT from 3^3 up (PyTorch's CPU direct backward is slow) ...
        ((48, 48, 48), 21, True, "fft"),
        ((12, 12, 12), 3, True, "fft"),
        ((2, 2, 2), 21, True, "direct"),  # ... but not on tiny volumes.
        # Inference in 3D: FFT where it saves work, direct for small kernels and volumes.
        ((48, 48, 48), 21, False, "fft"),
        ((24, 24, 24), 13, False, "fft"),
        ((48, 48, 48), 7, False, "direct"),
        ((6, 6, 6), 21, False, "direct"),  # only 6^3 taps reach a 6^3 volume
        ((12, 12, 12), 21, False, "direct"),  # about 11.4^3 taps: direct wins (measured)
        ((12, 12, 12), 13, False, "fft"),
        # 2D.
        ((128, 128), 21, False, "fft"),
        ((64, 64), 13, False, "direct"),
        ((64, 64), 7, True, "fft"),
        ((16, 16), 7, True, "direct"),
    ],
)
def test_measured_rule(spatial, k, needs_grad, expected):
    assert choose_algorithm(spatial, k, needs_grad) == expected


def _count_fft_calls(monkeypatch) -> list:
    calls = []
    original = fft_conv.fft_depthwise_conv

    def spy(*args):
        calls.append(args[0].shape)
        return original(*args)

    monkeypatch.setattr("visprior.layers.depthwise.fft_depthwise_conv", spy)
    return calls


def test_auto_uses_the_gradient_state(monkeypatch):
    monkeypatch.setenv("VISPRIOR_CONV_AUTOTUNE", "0")  # the size rule alone
    calls = _count_fft_calls(monkeypatch)
    conv = DepthwiseConv(2, 7, spatial_dims=3)
    x = torch.randn(1, 2, 16, 16, 16)
    y_train = conv(x)  # weight requires grad: training
    assert len(calls) == 1
    with torch.no_grad():
        y_eval = conv(x)  # 7^3 inference: direct
    assert len(calls) == 1
    assert_close_to_scale(y_train, y_eval, rtol=1e-4)  # FFT and direct sum in other orders


def test_forcing_an_algorithm(monkeypatch):
    calls = _count_fft_calls(monkeypatch)
    conv = DepthwiseConv(2, 7, spatial_dims=3)
    x = torch.randn(1, 2, 16, 16, 16)
    with conv_algorithm("direct"):
        assert get_conv_algorithm() == "direct"
        conv(x)
    assert calls == [] and get_conv_algorithm() == "auto"
    with torch.no_grad(), conv_algorithm("fft"):
        conv(x)
    assert len(calls) == 1
    depthwise_conv(x, conv.weight, None, algorithm="direct")
    assert len(calls) == 1


def test_bad_algorithm():
    with pytest.raises(ValueError, match=r"algorithm must be one of \('auto', 'direct', 'fft'\)"):
        set_conv_algorithm("winograd")
    with pytest.raises(ValueError, match="algorithm must be one of"):
        depthwise_conv(torch.randn(1, 1, 4, 4), torch.randn(1, 1, 3, 3), None, algorithm="x")
    assert get_conv_algorithm() == "auto"


@pytest.mark.parametrize("spatial", [(3, 3, 3), (2, 5, 11), (4, 30, 1)])
def test_direct_path_on_volumes_smaller_than_the_kernel_matches_the_full_kernel(spatial):
    # The direct path cuts a 21-tap kernel to the 2s - 1 taps an s-voxel axis can meet; the
    # output and both gradients must equal F.conv3d's with the whole kernel.
    torch.manual_seed(0)
    x = torch.randn(2, 3, *spatial, requires_grad=True)
    weight = torch.randn(3, 1, 21, 21, 21, requires_grad=True)
    bias = torch.randn(3, requires_grad=True)
    upstream = torch.randn(2, 3, *spatial)
    cut = depthwise_conv(x, weight, bias, algorithm="direct")
    cut_grads = torch.autograd.grad(cut, (x, weight, bias), upstream)
    full = torch.nn.functional.conv3d(x, weight, bias, padding=10, groups=3)
    full_grads = torch.autograd.grad(full, (x, weight, bias), upstream)
    assert cut.shape == x.shape
    assert_close_to_scale(cut, full)
    for got, expected in zip(cut_grads, full_grads, strict=True):
        assert_close_to_scale(got, expected)
    # the taps that never meet the input get no gradient
    kept = [slice((21 - k) // 2, (21 + k) // 2) for k in (min(21, 2 * s - 1) for s in spatial)]
    outside = torch.ones_like(weight, dtype=torch.bool)
    outside[(slice(None), slice(None), *kept)] = False
    assert outside.any() and cut_grads[1][outside].abs().max() == 0


def test_direct_path_keeps_the_kernel_where_the_volume_is_large_enough():
    torch.manual_seed(0)
    x = torch.randn(1, 2, 12, 12, 12)
    weight = torch.randn(2, 1, 7, 7, 7)
    expected = torch.nn.functional.conv3d(x, weight, None, padding=3, groups=2)
    assert_close_to_scale(depthwise_conv(x, weight, None, algorithm="direct"), expected)
