"""The redundancy measure on hand-built layers whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models.resnet import BasicBlock

from visprior.simplify.redundancy import (
    UnsupportedNetworkError,
    check_supported,
    map_ssim,
    measure_redundancy,
)

# offsets of one-pixel kernels: on white-noise probes their maps are shifted, uncorrelated noise
OFFSETS = [(0, 0), (0, 4), (4, 0), (4, 4)]


def _delta(offset, scale=1.0) -> torch.Tensor:
    kernel = torch.zeros(5, 5)
    kernel[offset] = scale
    return kernel


def _known_layer() -> nn.Conv2d:
    """Kernels 0-3 distinct; 4 duplicates 0; 5 is 2.5 x kernel 1; 6 is zero; 7 = 2 + 3."""
    kernels = [_delta(o) for o in OFFSETS]
    kernels += [_delta(OFFSETS[0]), _delta(OFFSETS[1], 2.5), torch.zeros(5, 5)]
    kernels.append(_delta(OFFSETS[2]) + _delta(OFFSETS[3]))
    conv = nn.Conv2d(1, len(kernels), 5, padding=2, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.stack(kernels)[:, None])
    return conv


def _noise(count=12, size=32) -> torch.Tensor:
    return torch.rand(count, 1, size, size, generator=torch.Generator().manual_seed(7))


def test_duplicated_scaled_zeroed_and_combined_kernels_are_redundant_once():
    report = measure_redundancy(nn.Sequential(_known_layer()), _noise())
    layer = report.layers[0]
    flags = layer.redundant
    assert flags[6] and layer.constant[6]  # zeroed: its map never changes
    assert flags[0] + flags[4] == 1  # one of the twins goes, the other stays
    assert flags[1] + flags[5] == 1  # a scaled copy repaints its original
    assert flags[2] + flags[3] + flags[7] == 1  # any one of the three repaints from the others
    assert flags.sum() == 4 and layer.share == pytest.approx(0.5)
    # scores: the copies are indistinguishable from their repainting, the constant one scores 1
    assert layer.scores[[0, 1, 4, 5, 6]].min() > 0.99
    assert layer.scores[6] == 1.0


def test_distinct_kernels_are_not_redundant():
    conv = nn.Conv2d(1, 4, 5, padding=2, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.stack([_delta(o) for o in OFFSETS])[:, None])
    layer = measure_redundancy(conv, _noise()).layers[0]
    assert not layer.redundant.any()
    assert layer.scores.max() < 0.5  # shifted noise is not repainted by other shifts


def test_measure_is_deterministic_and_restores_the_mode():
    net = nn.Sequential(_known_layer(), nn.ReLU(), nn.Conv2d(8, 6, 3, padding=1))
    net.train()
    first = measure_redundancy(net, _noise())
    second = measure_redundancy(net, _noise())
    assert net.training
    for a, b in zip(first.layers, second.layers, strict=True):
        np.testing.assert_array_equal(a.scores, b.scores)
        np.testing.assert_array_equal(a.redundant, b.redundant)


def test_small_memory_budget_gives_the_same_answer():
    net = nn.Sequential(_known_layer(), nn.ReLU(), nn.Conv2d(8, 6, 3, padding=1))
    whole = measure_redundancy(net, _noise())
    split = measure_redundancy(net, _noise(), memory_budget_mb=0.01)  # one layer per pass
    for a, b in zip(whole.layers, split.layers, strict=True):
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-6)


def test_a_block_that_passes_its_input_through_is_redundant():
    stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU())
    idle, busy = BasicBlock(8, 8), BasicBlock(8, 8)
    with torch.no_grad():
        idle.bn2.weight.zero_()  # the residual branch adds nothing: output == relu(input)
        idle.bn2.bias.zero_()
        busy.bn2.weight.fill_(3.0)
    net = nn.Sequential(stem, idle, busy)
    report = measure_redundancy(net, _noise())
    by_name = {block.name: block for block in report.blocks}
    assert by_name["1"].similarity == pytest.approx(1.0, abs=1e-5) and by_name["1"].redundant
    assert by_name["2"].similarity < 0.9 and not by_name["2"].redundant
    assert "1 of 2 blocks are redundant" in report.table()


def test_ssim_of_known_pairs():
    image = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(map_ssim(image, image), torch.ones(3))
    assert (map_ssim(image, 1 - image) < 0).all()  # the negative is a different picture
    tiny = torch.rand(2, 2, 2)
    assert torch.allclose(map_ssim(tiny, tiny), torch.ones(2))  # window shrinks to the map


def test_unsupported_layers_are_named():
    net = nn.Sequential(nn.Conv3d(1, 2, 3), nn.InstanceNorm3d(2), nn.LSTM(4, 4))
    with pytest.raises(UnsupportedNetworkError, match="Conv3d, InstanceNorm3d, LSTM"):
        check_supported(net, source="seg.pt")
    with pytest.raises(UnsupportedNetworkError, match="no Conv2d"):
        check_supported(nn.Sequential(nn.Linear(2, 2)))


def test_bad_arguments_are_named():
    conv = nn.Conv2d(1, 2, 3)
    with pytest.raises(ValueError, match="N >= 4"):
        measure_redundancy(conv, torch.rand(2, 1, 8, 8))
    with pytest.raises(ValueError, match="threshold"):
        measure_redundancy(conv, torch.rand(4, 1, 8, 8), threshold=1.5)
    with pytest.raises(ValueError, match="not Conv2d layers of this network: fc"):
        measure_redundancy(conv, torch.rand(4, 1, 8, 8), layers=["fc"])


def test_a_lone_live_kernel_is_not_redundant():
    conv = nn.Conv2d(1, 2, 5, padding=2, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.stack([_delta(OFFSETS[0]), torch.zeros(5, 5)])[:, None])
    layer = measure_redundancy(conv, _noise()).layers[0]
    assert layer.redundant.tolist() == [False, True]
    assert layer.scores.tolist() == [0.0, 1.0]


def test_the_ranking_past_the_threshold_judges_kept_kernels_without_the_removed_ones():
    """Twins both score ~1 against all the others; once one is gone, the other is judged
    against the kernels that stay and ranks below the threshold, so a cut past the
    threshold does not take both."""
    layer = measure_redundancy(nn.Sequential(_known_layer()), _noise()).layers[0]
    ranking, flags = layer.cut_order, layer.redundant
    assert (ranking[flags] >= 0.95).all()
    twin = 0 if not flags[0] else 4
    assert layer.scores[twin] > 0.99 and ranking[twin] < 0.95
    assert (ranking[~flags] < 0.95).all()
