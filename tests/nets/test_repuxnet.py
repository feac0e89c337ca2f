"""RepUX-Net and 3D UX-Net: sizes, shapes, bad arguments, BFR training through the network."""

from __future__ import annotations

import re

import pytest
import torch

from visprior.layers import BFRDepthwiseConv, DepthwiseConv, StructuralReparamConv
from visprior.nets import RepUXNet, UXNet

SMALL = {"feature_size": 8, "hidden_size": 32}


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _reference_counts(reference_dir):
    text = (reference_dir / "README.md").read_text()
    rows = re.findall(r"^PARAMS (\w+) out=(\d+) train: (\d+)$", text, flags=re.M)
    assert len(rows) >= 4, "no PARAMS lines in the reference README"
    return [(name, int(out), int(count)) for name, out, count in rows]


@pytest.mark.slow
def test_parameter_counts_equal_the_authors(reference_dir):
    builders = {
        "repuxnet": [
            lambda out: RepUXNet(out_channels=out, block="bfr"),
            lambda out: RepUXNet(out_channels=out, block="plain"),
            lambda out: RepUXNet(out_channels=out, inference_mode=True),
        ],
        "uxnet": [lambda out: UXNet(out_channels=out)],
    }
    for name, out, count in _reference_counts(reference_dir):
        for build in builders[name]:
            assert _count(build(out)) == count, (name, out)


@pytest.mark.parametrize(
    "cls, kwargs, expected",
    [
        # Small fixture configurations of the authors' code (head width = feature_size[0]).
        (RepUXNet, {"block": "bfr"}, 3_684_251),
        (RepUXNet, {"inference_mode": True}, 3_684_251),
        (UXNet, {}, 1_547_291),
    ],
)
def test_small_parameter_counts(cls, kwargs, expected):
    model = cls(
        in_channels=1, out_channels=3, feature_size=[8, 16, 32, 64], hidden_size=128, **kwargs
    )
    assert _count(model) == expected


@pytest.mark.parametrize(
    "cls, kwargs",
    [
        (RepUXNet, {"block": "bfr"}),
        (RepUXNet, {"block": "sr", "kernel_size": 7, "small_kernel_sizes": (3,)}),
        (RepUXNet, {"block": "plain", "kernel_size": 9}),
        (UXNet, {"drop_path_rate": 0.1}),
    ],
)
@pytest.mark.parametrize(
    "spatial_dims, size", [(3, (32, 32, 32)), (3, (16, 48, 32)), (2, (64, 48))]
)
def test_output_shape(cls, kwargs, spatial_dims, size):
    model = cls(in_channels=2, out_channels=4, spatial_dims=spatial_dims, **SMALL, **kwargs).eval()
    with torch.no_grad():
        y = model(torch.randn(1, 2, *size))
    assert y.shape == (1, 4, *size)


@pytest.mark.parametrize(
    "block, kind",
    [("bfr", BFRDepthwiseConv), ("sr", StructuralReparamConv), ("plain", DepthwiseConv)],
)
def test_block_kind_builds_that_layer(block, kind):
    model = RepUXNet(block=block, kernel_size=7, **SMALL)
    layers = [m.dwconv for stage in model.backbone.stages for m in stage]
    assert len(layers) == 8 and all(type(layer) is kind for layer in layers)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"kernel_size": 20}, "kernel_size must be odd"),
        ({"bfr_a": 0}, "bfr_a must be > 0"),
        ({"block": "dense"}, r"block must be one of \('bfr', 'sr', 'plain'\)"),
        ({"spatial_dims": 1}, "spatial_dims must be 2 or 3"),
        ({"depths": (2, 2, 2)}, "depths must be 4 ints"),
        ({"feature_size": (8, 16)}, "feature_size must be"),
        ({"out_channels": 0}, "out_channels must be a positive int"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RepUXNet(**{**SMALL, **kwargs})


def test_uxnet_bad_arguments():
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        UXNet(kernel_size=6)
    with pytest.raises(ValueError, match="drop_path_rate"):
        UXNet(drop_path_rate=1.5)


@pytest.mark.parametrize("cls", [RepUXNet, UXNet])
def test_bad_inputs(cls):
    model = cls(in_channels=1, out_channels=2, kernel_size=5, **SMALL)
    with pytest.raises(ValueError, match=r"input must have shape \(N, C, H, W, D\)"):
        model(torch.randn(1, 32, 32, 32))
    with pytest.raises(ValueError, match="input has 2 channels, the network expects in_channels=1"):
        model(torch.randn(1, 2, 32, 32, 32))
    with pytest.raises(ValueError, match=r"\(32, 40, 32\) must be divisible by .* stride 16"):
        model(torch.randn(1, 1, 32, 40, 32))


def test_bfr_network_trains_every_kernel():
    model = RepUXNet(in_channels=1, out_channels=2, kernel_size=7, **SMALL)
    bfr_layers = [m for m in model.modules() if isinstance(m, BFRDepthwiseConv)]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = [layer.weight.detach().clone() for layer in bfr_layers]
    maps = [layer.frequency_map.clone() for layer in bfr_layers]
    loss = model(torch.randn(1, 1, 32, 32, 32)).logsumexp(1).mean()
    loss.backward()
    optimizer.step()
    assert len(bfr_layers) == 8
    for layer, w0, m0 in zip(bfr_layers, before, maps, strict=True):
        assert layer.weight.grad is not None
        assert (layer.weight - w0).abs().max() > 0
        assert torch.equal(layer.frequency_map, m0)  # the prior never trains
    parameter_ids = {id(p) for p in model.parameters()}
    assert all(id(layer.weight) in parameter_ids for layer in bfr_layers)
    assert not any("frequency_map" in name for name, _ in model.named_parameters())
