"""BFR semantics: W is the trained parameter, the forward convolves with W * M."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tests.tolerances import assert_close_to_scale
from visprior.layers import BFRDepthwiseConv, DepthwiseConv, frequency_prior


def test_frequency_map_values():
    m = frequency_prior(21, spatial_dims=3)
    assert m.shape == (21, 21, 21)
    assert m[10, 10, 10] == 1.0
    assert m[10, 10, 11] == pytest.approx(0.5)
    assert m[10, 11, 11] == pytest.approx(1 / (1 + math.sqrt(2)))
    assert m[0, 0, 0] == pytest.approx(1 / (1 + 10 * math.sqrt(3)))  # 0.0546
    m2 = frequency_prior(5, spatial_dims=2, a=2.0)
    assert m2.shape == (5, 5)
    assert m2[2, 4] == pytest.approx(2 / (2 + 2))


def test_frequency_map_matches_authors_map(reference_dir):
    ref = torch.load(reference_dir / "official_repuxnet_small.pt", weights_only=True)
    torch.testing.assert_close(frequency_prior(21, 3), ref["bfm_21_a1"], rtol=0, atol=1e-7)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"kernel_size": 4}, "kernel_size must be odd"),
        ({"kernel_size": 0}, "kernel_size must be a positive odd integer"),
        ({"kernel_size": 5, "a": 0.0}, "a must be > 0"),
        ({"kernel_size": 5, "a": -1.0}, "a must be > 0"),
        ({"kernel_size": 5, "a": float("nan")}, "a must be > 0"),
        ({"kernel_size": 5, "spatial_dims": 4}, "spatial_dims must be 2 or 3"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BFRDepthwiseConv(4, **kwargs)


def test_frequency_map_is_a_buffer_not_a_parameter():
    conv = BFRDepthwiseConv(3, 7, spatial_dims=3)
    assert [name for name, _ in conv.named_parameters()] == ["weight", "bias"]
    assert "frequency_map" in dict(conv.named_buffers())
    assert "frequency_map" in conv.state_dict()


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_forward_is_conv_with_w_times_m(spatial_dims):
    conv = BFRDepthwiseConv(4, 7, spatial_dims=spatial_dims, a=1.5)
    x = torch.randn(2, 4, *(12,) * spatial_dims)
    conv_fn = F.conv2d if spatial_dims == 2 else F.conv3d
    expected = conv_fn(
        x, conv.weight * frequency_prior(7, spatial_dims, 1.5), conv.bias, padding=3, groups=4
    )
    assert_close_to_scale(conv(x), expected, rtol=1e-4)  # FFT (training) against direct


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_gradient_reaches_w_and_equals_m_times_kernel_gradient(spatial_dims):
    conv = BFRDepthwiseConv(3, 9, spatial_dims=spatial_dims)
    x = torch.randn(2, 3, *(10,) * spatial_dims)
    target = torch.randn(2, 3, *(10,) * spatial_dims)
    F.mse_loss(conv(x), target).backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0

    # The same loss as a function of the effective kernel K = W * M.
    kernel = (conv.weight * conv.frequency_map).detach().requires_grad_(True)
    plain = DepthwiseConv(3, 9, spatial_dims)
    with torch.no_grad():
        plain.bias.copy_(conv.bias)
    plain.effective_weight = lambda: kernel
    F.mse_loss(plain(x), target).backward()
    torch.testing.assert_close(
        conv.weight.grad, conv.frequency_map * kernel.grad, rtol=1e-5, atol=1e-8
    )


def test_sgd_step_updates_w_with_lr_scaled_by_m_squared():
    conv = BFRDepthwiseConv(2, 11, spatial_dims=2)
    optimizer = torch.optim.SGD(conv.parameters(), lr=0.1)
    x = torch.randn(1, 2, 16, 16)
    w0 = conv.weight.detach().clone()
    kernel0 = conv.effective_weight().detach().clone()
    conv(x).square().mean().backward()
    kernel_grad = conv.weight.grad / conv.frequency_map  # dL/dK (M > 0 everywhere)
    optimizer.step()

    assert not torch.equal(conv.weight, w0)
    # The effective kernel moves by -lr * M^2 * dL/dK: the periphery converges slowly.
    # K - K0 cancels: W's rounding is small against the largest step, not against each one.
    assert_close_to_scale(
        conv.effective_weight().detach() - kernel0,
        -0.1 * conv.frequency_map**2 * kernel_grad,
        rtol=1e-4,
    )
    # The optimizer holds the very parameter the forward uses.
    assert optimizer.param_groups[0]["params"][0] is conv.weight


def test_repeated_forwards_never_change_the_weights():
    conv = BFRDepthwiseConv(3, 7, spatial_dims=3)
    before = {k: v.clone() for k, v in conv.state_dict().items()}
    weight_object = conv.weight
    x = torch.randn(1, 3, 8, 8, 8)
    outputs = []
    for train in (True, True, False, False):
        conv.train(train)
        with torch.set_grad_enabled(train):
            outputs.append(conv(x).detach())
    assert conv.weight is weight_object
    for key, value in conv.state_dict().items():
        assert torch.equal(value, before[key]), key
    # Same path, same output bit for bit; training and inference may take different
    # convolution algorithms (FFT / direct), equal within float32 rounding.
    assert torch.equal(outputs[1], outputs[0]) and torch.equal(outputs[3], outputs[2])
    assert_close_to_scale(outputs[2], outputs[0], rtol=1e-4)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_reparameterize_folds_into_plain_conv(spatial_dims):
    conv = BFRDepthwiseConv(4, 7, spatial_dims=spatial_dims)
    fused = conv.reparameterize()
    assert type(fused) is DepthwiseConv
    assert fused.reparameterize() is fused  # already fused: no-op
    x = torch.randn(2, 4, *(11,) * spatial_dims)
    torch.testing.assert_close(fused(x), conv(x), rtol=1e-5, atol=1e-6)
    # The training layer is untouched and keeps training.
    assert isinstance(conv.weight, torch.nn.Parameter) and conv.weight.requires_grad


def test_load_deployed_kernel_gives_that_effective_kernel():
    conv = BFRDepthwiseConv(2, 5, spatial_dims=3)
    kernel = torch.randn(2, 1, 5, 5, 5)
    conv.load_deployed_kernel(kernel)
    torch.testing.assert_close(conv.effective_weight(), kernel, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="expected"):
        conv.load_deployed_kernel(torch.randn(2, 1, 3, 3, 3))
