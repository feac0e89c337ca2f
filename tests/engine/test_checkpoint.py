"""Checkpoints: atomic, weights_only, refusal of foreign pickles, exact random states."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from visprior.engine.checkpoint import (
    CheckpointError,
    build_model_from_checkpoint,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from visprior.fileio import remove_stale_temporaries


class NotATensor:
    pass


def test_round_trip_and_model_rebuild(tmp_path):
    spec = {"name": "unet", "kwargs": {"in_channels": 1, "out_channels": 2, "feature_size": 4}}
    model = build_model_from_checkpoint(
        {"model": spec, "state_dict": torch.nn.Module().state_dict()} | _weights(spec)
    )
    path = save_checkpoint(tmp_path / "c.pt", {"model": spec, "state_dict": model.state_dict()})
    rebuilt = build_model_from_checkpoint(load_checkpoint(path))
    for a, b in zip(model.state_dict().values(), rebuilt.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary left behind
    assert oct(os.stat(path).st_mode & 0o777) != oct(0o600)  # not private like a temp file


def _weights(spec):
    from visprior.nets.registry import get_model

    return {"state_dict": get_model(spec["name"], **spec["kwargs"]).state_dict()}


def test_foreign_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "visprior-checkpoint-1", "payload": NotATensor()}, path)
    with pytest.raises(CheckpointError, match="evil.pt: refused"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"not a checkpoint", "not a readable PyTorch checkpoint"),
        (None, "not a visprior checkpoint"),
    ],
)
def test_unusable_files_are_named(tmp_path, content, message):
    path = tmp_path / "x.pt"
    if content is None:
        torch.save({"weight": torch.zeros(1)}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=f"x.pt: {message}"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="checkpoint not found: .*nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")


def test_weights_that_do_not_fit_are_named():
    spec = {"name": "unet", "kwargs": {"in_channels": 1, "out_channels": 2, "feature_size": 4}}
    state = {"model": spec, "state_dict": {"bogus": torch.zeros(1)}}
    with pytest.raises(CheckpointError, match="weights do not fit the network"):
        build_model_from_checkpoint(state)


def test_random_states_survive_a_checkpoint(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.randn()  # leaves a cached Gaussian in NumPy's state
    save_checkpoint(tmp_path / "rng.pt", {"rng": capture_rng_state()})
    expected = (random.random(), np.random.randn(3), torch.rand(2))
    restore_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    assert random.random() == expected[0]
    np.testing.assert_array_equal(np.random.randn(3), expected[1])
    torch.testing.assert_close(torch.rand(2), expected[2], rtol=0, atol=0)


def test_a_write_that_dies_halfway_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "last.pt", {"iteration": 1, "weights": torch.ones(3)})

    def dies_halfway(state, target):
        with open(target, "wb") as handle:
            handle.write(b"PK\x03\x04 half a zip")  # torch.save had begun writing
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"iteration": 2, "weights": torch.zeros(3)})
    monkeypatch.undo()
    state = load_checkpoint(path)
    assert state["iteration"] == 1 and torch.equal(state["weights"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left


KILLED_WHILE_WRITING = """
import os, signal, sys, torch
from visprior.engine.checkpoint import save_checkpoint

def dies_halfway(state, target):
    with open(target, "wb") as handle:
        handle.write(b"PK\\x03\\x04 half a zip")
        handle.flush()
    os.kill(os.getpid(), signal.SIGKILL)

torch.save = dies_halfway
save_checkpoint(sys.argv[1], {"iteration": 2, "weights": torch.zeros(3)})
"""


def test_a_process_killed_while_writing_leaves_the_previous_checkpoint(tmp_path):
    path = save_checkpoint(tmp_path / "last.pt", {"iteration": 1, "weights": torch.ones(3)})
    killed = subprocess.run([sys.executable, "-c", KILLED_WHILE_WRITING, str(path)], timeout=120)
    assert killed.returncode == -signal.SIGKILL
    state = load_checkpoint(path)
    assert state["iteration"] == 1 and torch.equal(state["weights"], torch.ones(3))
    leftovers = [p for p in tmp_path.iterdir() if p.name != "last.pt"]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".last.pt.")
    assert remove_stale_temporaries(tmp_path) == leftovers
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
