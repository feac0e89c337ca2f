"""``visprior seg train`` killed with SIGKILL part-way and resumed ends with the weights of a
run that was never interrupted: model, optimizer, schedule, iteration, data order, every random
state and the augmentation all continue where the last checkpoint left them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.seg.test_pipeline import make_dataset
from visprior.engine.checkpoint import CheckpointError, load_checkpoint

ITERATIONS = 12
TRAIN = [
    "--model", "unet", "--roi", "32", "32", "32", "--iterations", str(ITERATIONS),
    "--set", "model_kwargs={feature_size: 4, num_res_units: 1, dropout: 0.2}",
    "--set", "val_every=2", "--set", "num_workers=0", "--set", "folds=4",
    "--set", "lr=1e-3", "--set", "lr_schedule=poly", "--set", "deterministic=true",
    "--set", "seed=7", "--set", "flip_axes=[0, 1, 2]", "--set", "rotate_range=0.2",
]  # fmt: skip
# 3 training cases a fold: checkpoints every 2 iterations fall inside epochs


def _visprior(*args: str) -> list[str]:
    script = Path(sys.executable).with_name("visprior")
    if script.is_file():
        return [str(script), *args]
    return [sys.executable, "-c", "from visprior.cli import main; raise SystemExit(main())", *args]


def _run(*args: str) -> None:
    done = subprocess.run(_visprior(*args), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def _iteration(checkpoint: Path) -> int:
    try:
        return int(load_checkpoint(checkpoint)["iteration"])
    except CheckpointError:  # not there yet
        return 0


@pytest.mark.slow
def test_sigkill_and_resume_match_an_uninterrupted_run(tmp_path):
    dataset = make_dataset(tmp_path, cases=("a", "b", "c", "d"))
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    _run("seg", "train", str(dataset), "-o", str(straight), *TRAIN)

    process = subprocess.Popen(
        _visprior("seg", "train", str(dataset), "-o", str(interrupted), *TRAIN),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    last = interrupted / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 300
    while _iteration(last) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL
    stopped_at = _iteration(last)
    assert 2 <= stopped_at < ITERATIONS
    # what a kill in the middle of a checkpoint write leaves behind
    leftover = last.with_name(".last.pt.k1ll3d.tmp")
    leftover.write_bytes(b"PK\x03\x04 half a checkpoint")

    _run("seg", "train", "--resume", str(interrupted))

    expected = load_checkpoint(straight / "checkpoints" / "last.pt")
    resumed = load_checkpoint(last)
    assert resumed["iteration"] == expected["iteration"] == ITERATIONS
    assert expected["epoch"] == resumed["epoch"] == ITERATIONS // 3 - 1
    for name, weight in expected["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][name], weight, rtol=0, atol=1e-6)
    moments = zip(
        expected["optimizer"]["state"].values(), resumed["optimizer"]["state"].values(), strict=True
    )
    for a, b in moments:
        torch.testing.assert_close(b["exp_avg_sq"], a["exp_avg_sq"], rtol=0, atol=1e-9)
    assert resumed["best_iteration"] == expected["best_iteration"]
    assert not leftover.exists()
