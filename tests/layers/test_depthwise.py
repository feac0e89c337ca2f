"""Plain large-kernel depth-wise conv and the channels-first LayerNorm."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.tolerances import assert_close_to_scale
from visprior.layers import ChannelsFirstLayerNorm, DepthwiseConv


@pytest.mark.parametrize("spatial_dims, kernel_size", [(2, 3), (2, 21), (3, 7), (3, 21)])
def test_same_padding_matches_torch_conv(spatial_dims, kernel_size):
    conv = DepthwiseConv(5, kernel_size, spatial_dims)
    x = torch.randn(2, 5, *(9, 12, 7)[:spatial_dims])
    reference = (F.conv2d if spatial_dims == 2 else F.conv3d)(
        x, conv.weight, conv.bias, padding=kernel_size // 2, groups=5
    )
    y = conv(x)
    assert y.shape == x.shape
    assert_close_to_scale(y, reference, rtol=1e-4)  # training may take the FFT path


def test_wrong_input_rank_and_channels():
    conv = DepthwiseConv(4, 5, spatial_dims=3)
    with pytest.raises(
        ValueError, match=r"input must have 5 dimensions .* got shape \(1, 4, 8, 8\)"
    ):
        conv(torch.randn(1, 4, 8, 8))
    with pytest.raises(ValueError, match="input has 3 channels but the depth-wise conv has 4"):
        conv(torch.randn(1, 3, 8, 8, 8))


@pytest.mark.parametrize("kernel_size", [2, 20, -3, 0, 3.0, True])
def test_bad_kernel_size(kernel_size):
    with pytest.raises(ValueError, match="kernel_size"):
        DepthwiseConv(4, kernel_size)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_channels_first_layer_norm_matches_layer_norm_over_channels(spatial_dims):
    norm = ChannelsFirstLayerNorm(6, eps=1e-6)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.normal_()
    x = torch.randn(2, 6, *(5,) * spatial_dims) * 3 + 1
    mean = x.mean(1, keepdim=True)
    var = (x - mean).pow(2).mean(1, keepdim=True)
    shape = (1, 6) + (1,) * spatial_dims
    expected = (x - mean) / torch.sqrt(var + 1e-6) * norm.weight.view(shape) + norm.bias.view(shape)
    torch.testing.assert_close(norm(x), expected, rtol=1e-5, atol=1e-5)
