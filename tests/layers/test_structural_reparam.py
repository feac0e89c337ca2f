"""Structural re-parameterization: the merged kernel equals the multi-branch output."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import randomize_batchnorm
from tests.tolerances import assert_close_to_scale
from visprior.layers import DepthwiseConv, StructuralReparamConv


@pytest.mark.parametrize("spatial_dims, kernel_size, small", [(2, 13, (3, 5)), (3, 21, (3, 5, 7))])
def test_merge_equals_multi_branch_output(spatial_dims, kernel_size, small):
    conv = randomize_batchnorm(StructuralReparamConv(4, kernel_size, small, spatial_dims)).eval()
    x = torch.randn(2, 4, *(16,) * spatial_dims)
    fused = conv.reparameterize()
    assert type(fused) is DepthwiseConv and fused.kernel_size == kernel_size
    with torch.no_grad():
        assert_close_to_scale(fused(x), conv(x), rtol=1e-4)
    assert fused.reparameterize() is fused


def test_merge_uses_every_branch():
    conv = randomize_batchnorm(StructuralReparamConv(2, 9, (3,), spatial_dims=2)).eval()
    x = torch.randn(1, 2, 12, 12)
    with torch.no_grad():
        full = conv.reparameterize()(x)
        conv.small[0].bn.weight.zero_()
        conv.small[0].bn.bias.zero_()
        without_small = conv.reparameterize()(x)
    assert (full - without_small).abs().max() > 1e-3


@pytest.mark.parametrize(
    "small, message",
    [((21,), "smaller than kernel_size"), ((4,), "small_kernel_sizes must be odd")],
)
def test_bad_small_kernels(small, message):
    with pytest.raises(ValueError, match=message):
        StructuralReparamConv(4, 21, small)
