"""Cutting a network to a size by each criterion: which channels go, how many, and that the
cut network reloads from its checkpoint."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from tests.simplify.test_prune_and_shrink import _flags
from tests.tolerances import assert_close_to_scale
from visprior.nets.registry import get_model
from visprior.simplify.criteria import CRITERIA, cut_to_size, parameter_count, taylor_gradients
from visprior.simplify.prune import fit_to_state_dict
from visprior.simplify.redundancy import RedundancyReport
from visprior.simplify.shrink import ShrinkSettings, round_sizes

LAYER = "backbone.4.0.conv1"  # ResNet18's first block: its conv1 feeds only its conv2
PER_CHANNEL = 64 * 9 + 2 + 64 * 9  # conv1's kernel, bn1's two, conv2's input slice
WEAK = [3, 10, 17, 40, 41, 42, 60, 63]


def _network() -> torch.nn.Module:
    torch.manual_seed(0)
    return get_model("ggcam_resnet18", num_classes=3).eval()


def _weaken(model, channels, scale=1e-4) -> None:
    """Shrink the weights of ``channels`` of LAYER (and their batch norm) to nearly nothing."""
    block = model.backbone[4][0]
    with torch.no_grad():
        block.conv1.weight[channels] *= scale
        block.bn1.weight[channels] *= scale


def _kept_rows(model, original) -> list[int]:
    """Which of LAYER's original output channels the cut network still has."""
    kept = model.backbone[4][0].conv1.weight.detach().flatten(1)
    before = original.backbone[4][0].conv1.weight.detach().flatten(1)
    return [int(torch.cdist(row[None], before).argmin()) for row in kept]


def _example() -> torch.Tensor:
    return torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(1))


def test_magnitude_cuts_the_channels_with_the_smallest_weights():
    model = _network()
    _weaken(model, WEAK)
    original = copy.deepcopy(model)
    target = parameter_count(model) - len(WEAK) * PER_CHANNEL
    done = cut_to_size(model, "magnitude", target, _example())
    # exactly the eight weak channels: the fewest whose cut reaches the target
    assert done.parameters_after == target and done.channels_removed == len(WEAK)
    assert sorted(set(range(64)) - set(_kept_rows(model, original))) == WEAK


def test_taylor_cuts_the_channels_whose_weights_do_not_move_the_loss():
    """Gradients set by hand: one everywhere, zero on the WEAK channels of LAYER. Their
    weights are as large as any, so magnitude would keep them; Taylor's |w * g| is 0."""
    model = _network()
    original = copy.deepcopy(model)
    for parameter in model.parameters():
        parameter.grad = torch.ones_like(parameter)
    block = model.backbone[4][0]
    for tensor in (block.conv1.weight, block.bn1.weight, block.bn1.bias):
        tensor.grad[WEAK] = 0.0
    block.conv2.weight.grad[:, WEAK] = 0.0
    target = parameter_count(model) - len(WEAK) * PER_CHANNEL
    done = cut_to_size(model, "taylor", target, _example())
    assert done.parameters_after == target
    assert sorted(set(range(64)) - set(_kept_rows(model, original))) == WEAK
    assert all(p.grad is None for p in model.parameters())  # read, then cleared


def test_taylor_gradients_accumulate_the_loss_gradient_without_touching_batch_norm():
    model = _network()
    statistics = model.backbone[1].running_mean.clone()
    images = torch.rand(8, 1, 64, 64, generator=torch.Generator().manual_seed(2))
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    taylor_gradients(model, images, labels, batch_size=4)
    torch.testing.assert_close(model.backbone[1].running_mean, statistics)
    # the sum of the two batches' mean losses, differentiated in one go
    twin = copy.deepcopy(model)
    twin.zero_grad(set_to_none=True)
    losses = [
        torch.nn.functional.cross_entropy(twin(images[i : i + 4]).logits, labels[i : i + 4])
        for i in (0, 4)
    ]
    sum(losses).backward()
    for name, conv in model.named_modules():
        if isinstance(conv, torch.nn.Conv2d):
            expected = twin.get_submodule(name).weight.grad
            assert conv.weight.grad is not None, name
            assert_close_to_scale(conv.weight.grad, expected, rtol=1e-4)


def test_uniform_cuts_one_share_of_every_group_the_smallest_first():
    model = _network()
    _weaken(model, WEAK)
    original = copy.deepcopy(model)
    cut_to_size(model, "uniform", parameter_count(model) // 2, _example(), max_cut=0.5)
    widths = {
        name: (module.out_channels, original.get_submodule(name).out_channels)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Conv2d) and name.endswith("conv1")
    }
    shares = {name: 1 - now / before for name, (now, before) in widths.items()}
    assert max(shares.values()) - min(shares.values()) < 1 / 64 + 1e-9  # one channel's rounding
    assert 0.1 < min(shares.values()) <= 0.5
    # the layer's input channels changed too, so the weak ones are told by their batch norm
    assert model.backbone[4][0].bn1.weight.abs().min() > 1e-2


def _report(layer_flags: dict[str, list[int]], ranking: dict[str, np.ndarray] | None = None):
    layers = []
    widths = {"backbone.7.1.conv1": 512}
    for name, flagged in layer_flags.items():
        layer = _flags(name, widths.get(name, 64), flagged)
        if ranking and name in ranking:
            layer.ranking = ranking[name]
        layers.append(layer)
    return RedundancyReport(layers, [], 0.95, 4)


def test_redundancy_cuts_its_redundant_set_then_continues_down_its_ranking():
    model = _network()
    original = copy.deepcopy(model)
    flagged = [5, 6, 7]
    ranking = np.linspace(0.9, 0.1, 64)  # past the threshold, channel 0 goes first
    ranking[flagged] = 0.97
    report = _report({LAYER: flagged}, {LAYER: ranking})
    example = _example()

    first = copy.deepcopy(model)
    cut_to_size(
        first, "redundancy", parameter_count(model) - 3 * PER_CHANNEL, example, report=report
    )
    assert sorted(set(range(64)) - set(_kept_rows(first, original))) == flagged

    second = copy.deepcopy(model)
    cut_to_size(
        second, "redundancy", parameter_count(model) - 6 * PER_CHANNEL, example, report=report
    )
    assert sorted(set(range(64)) - set(_kept_rows(second, original))) == [0, 1, 2, 5, 6, 7]


def test_random_takes_redundancys_counts_and_its_seed_decides_the_channels():
    model = _network()
    original = copy.deepcopy(model)
    report = _report({LAYER: list(range(20))})
    target = parameter_count(model) - 10 * PER_CHANNEL
    gone = []
    for seed in (1, 1, 2):
        trial = copy.deepcopy(model)
        done = cut_to_size(trial, "random", target, _example(), report=report, seed=seed)
        assert done.channels_removed == 10 and trial.backbone[4][0].conv1.out_channels == 54
        gone.append(set(range(64)) - set(_kept_rows(trial, original)))
    assert gone[0] == gone[1] and gone[0] != gone[2]


@pytest.mark.parametrize("criterion", CRITERIA)
def test_a_network_cut_by_any_criterion_reloads_from_its_tensors(criterion):
    model = _network()
    example = _example()
    report = _report({LAYER: [1, 2], "backbone.7.1.conv1": list(range(100))})
    if criterion == "taylor":
        taylor_gradients(model, torch.rand(4, 1, 64, 64), torch.tensor([0, 1, 2, 0]))
    done = cut_to_size(model, criterion, 9_000_000, example, report=report)
    assert done.parameters_after <= 9_000_000 < done.parameters_before
    rebuilt = fit_to_state_dict(get_model("ggcam_resnet18", num_classes=3), model.state_dict())
    images = torch.rand(2, 1, 64, 64)
    torch.testing.assert_close(rebuilt.eval()(images).logits, model(images).logits)


def test_a_target_out_of_reach_cuts_what_the_caps_allow():
    model = _network()
    before = parameter_count(model)
    done = cut_to_size(model, "magnitude", 1000, _example(), max_cut=0.25)
    # every group lost a quarter of its channels: about (3/4)^2 of the parameters stay
    assert 0.5 < done.parameters_after / before < 0.62


def test_bad_criteria_requests_are_refused_by_name():
    model = _network()
    with pytest.raises(ValueError, match="unknown criterion 'l2'"):
        cut_to_size(model, "l2", 1000, _example())
    with pytest.raises(ValueError, match="'random' needs the redundancy report"):
        cut_to_size(model, "random", 1000, _example())
    with pytest.raises(ValueError, match="taylor_gradients first"):
        cut_to_size(model, "taylor", 1000, _example())
    with pytest.raises(ValueError, match="--criterion magnitude has no stopping point"):
        ShrinkSettings(criterion="magnitude").check()
    with pytest.raises(ValueError, match="--waypoints must fall"):
        ShrinkSettings(target_parameters=500, waypoints=(400,)).check()
    with pytest.raises(ValueError, match="--auc-tolerance"):
        ShrinkSettings(auc_tolerance=-0.1).check()


def test_round_sizes_hit_every_waypoint_in_steps_within_the_limit():
    settings = ShrinkSettings(target_parameters=128_000, waypoints=(500_000, 211_000))
    sizes = round_sizes(23_507_910, settings)
    assert sizes[-3:] == [500_000, 211_000, 128_000]
    steps = [a / b for a, b in zip([23_507_910, *sizes], sizes, strict=False)]
    assert max(steps) <= 3.0 and len(sizes) == 6
    assert round_sizes(100_000, settings) == []  # already under every size
