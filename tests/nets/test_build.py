"""A network rebuilt from its checkpoint entry alone: the spec round-trips through the plain
dict a checkpoint holds, and a broken entry is named."""

from __future__ import annotations

import pytest
import torch

from visprior.checkpoint_io import CheckpointError
from visprior.nets.build import ModelSpec, build_model_from_checkpoint


def test_spec_round_trips_through_the_checkpoint_entry():
    spec = ModelSpec("unet", {"in_channels": 1, "out_channels": 3, "feature_size": 4})
    entry = spec.to_dict()
    assert entry == {"name": "unet", "kwargs": spec.kwargs}  # no "pruned" key unless cut
    assert ModelSpec.from_dict(entry) == spec
    pruned = ModelSpec("ggcam_resnet18", {"num_classes": 3}, pruned=True)
    assert ModelSpec.from_dict(pruned.to_dict()) == pruned


def test_build_from_checkpoint_loads_the_weights():
    spec = ModelSpec("unet", {"in_channels": 1, "out_channels": 2, "feature_size": 4})
    trained = spec.build()
    state = {"model": spec.to_dict(), "state_dict": trained.state_dict()}
    rebuilt = build_model_from_checkpoint(state)
    for name, tensor in trained.state_dict().items():
        assert torch.equal(tensor, rebuilt.state_dict()[name]), name


@pytest.mark.parametrize("missing", ["model", "state_dict"])
def test_a_missing_entry_is_named(missing):
    spec = ModelSpec("unet", {"in_channels": 1, "out_channels": 2, "feature_size": 4})
    state = {"model": spec.to_dict(), "state_dict": spec.build().state_dict()}
    del state[missing]
    with pytest.raises(CheckpointError, match=f"run/best.pt: missing entry '{missing}'"):
        build_model_from_checkpoint(state, "run/best.pt")


def test_an_entry_without_kwargs_is_named():
    with pytest.raises(CheckpointError, match="missing entry 'kwargs'"):
        build_model_from_checkpoint({"model": {"name": "unet"}, "state_dict": {}}, "x.pt")
