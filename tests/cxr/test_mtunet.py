"""MT-UNet: size, heads, and the uncertainty-weighted multi-task loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from visprior.cxr.loss import multitask_loss
from visprior.nets.mtunet import MTUNetOutput, MultiTaskWeights
from visprior.nets.registry import get_model


def test_default_size_is_the_papers_34_6m():
    net = get_model("mtunet", num_classes=3)
    assert sum(p.numel() for p in net.parameters()) == 34_625_926


@pytest.mark.parametrize("size", [(64, 64), (50, 70)])
def test_heads_shapes_and_saliency_is_a_distribution(size):
    net = get_model("mtunet", num_classes=4, feature_size=8).eval()
    with torch.no_grad():
        logits, log_saliency = net(torch.rand(2, 1, *size))
    assert logits.shape == (2, 4) and log_saliency.shape == (2, 1, *size)
    torch.testing.assert_close(log_saliency.exp().sum(dim=(1, 2, 3)), torch.ones(2))


def test_loss_equals_a_hand_computed_value():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    p = torch.tensor([[0.5, 0.25], [0.25, 0.0]]) + torch.tensor([[0.0, 0.0], [0.0, 1e-12]])
    p = p / p.sum()
    log_p = p.log().expand(2, 1, 2, 2)
    gaze = torch.tensor([[1.0, 1.0], [0.0, 0.0]]).expand(2, 2, 2)  # G = (1/2, 1/2, 0, 0)
    weights = MultiTaskWeights(lg_s_c=math.log(2.0), lg_s_s=0.0)
    target = torch.tensor([0, 1])
    total, ce, kl = multitask_loss(MTUNetOutput(logits, log_p), target, gaze, weights)
    expected_ce = F.cross_entropy(logits, target)
    # KL(G||P) = 1/2 log((1/2)/(1/2)) + 1/2 log((1/2)/(1/4)) = log(2) / 2
    expected_kl = math.log(2) / 2
    assert float(kl) == pytest.approx(expected_kl, rel=1e-5)
    expected = expected_ce / 4 + math.log(3) + expected_kl / 2 + math.log(2)
    assert total.item() == pytest.approx(float(expected), rel=1e-5)
    assert float(ce) == pytest.approx(float(expected_ce))


def test_gradients_reach_both_sigmas_unless_fixed():
    net = get_model("mtunet", num_classes=3, feature_size=4)
    output = net(torch.rand(2, 1, 32, 32))
    gaze = torch.rand(2, 32, 32)
    total, _, _ = multitask_loss(output, torch.tensor([0, 2]), gaze, net.loss_weights)
    total.backward()
    assert net.loss_weights.lg_s_c.grad.abs() > 0 and net.loss_weights.lg_s_s.grad.abs() > 0
    fixed = get_model("mtunet", num_classes=3, feature_size=4, learn_loss_weights=False)
    assert not any(p.requires_grad for p in fixed.loss_weights.parameters())


def test_bad_gaze_is_refused():
    output = MTUNetOutput(torch.zeros(1, 2), torch.zeros(1, 1, 4, 4))
    weights = MultiTaskWeights()
    with pytest.raises(ValueError, match="do not match the saliency map"):
        multitask_loss(output, torch.tensor([0]), torch.ones(1, 3, 3), weights)
    with pytest.raises(ValueError, match="sums to 0"):
        multitask_loss(output, torch.tensor([0]), torch.zeros(1, 4, 4), weights)
