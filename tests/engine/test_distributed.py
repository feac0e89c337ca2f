"""torchrun jobs on this CPU (gloo): the same weights as one process, and a clean failure."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from visprior.engine.checkpoint import load_checkpoint

WORKER = Path(__file__).with_name("ddp_worker.py")
pytestmark = pytest.mark.slow


def _command(processes: int, *args: str) -> list[str]:
    if processes == 1:
        return [sys.executable, str(WORKER), *args]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    return [*torchrun, "--nproc_per_node", str(processes), str(WORKER), *args]


def _environment() -> dict[str, str]:
    # one thread per process: two processes on two cores, and no oversubscription
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _run(processes: int, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        _command(processes, *args),
        capture_output=True,
        text=True,
        timeout=300,
        env=_environment(),
    )


def test_two_processes_reach_the_weights_of_one(tmp_path):
    """Same seed and global batch (8 = 2 x 4): DistributedSampler gives the two processes the
    halves of the one process's batch and DDP averages their gradients, so the weights agree
    up to float32 summation order (atol 1e-6)."""
    one, two = tmp_path / "one", tmp_path / "two"
    single = _run(1, str(one))
    assert single.returncode == 0, single.stderr[-2000:]
    double = _run(2, str(two))
    assert double.returncode == 0, double.stderr[-2000:]
    first = load_checkpoint(one / "checkpoints" / "last.pt")
    second = load_checkpoint(two / "checkpoints" / "last.pt")
    assert first["iteration"] == second["iteration"] == 12
    for key, value in first["state_dict"].items():
        torch.testing.assert_close(second["state_dict"][key], value, atol=1e-6, rtol=0)
    # every process's random state is kept for an exact resume
    assert len(second["rng_per_rank"]) == 2 and len(first["rng_per_rank"]) == 1
    assert sorted(p.name for p in (two / "checkpoints").iterdir()) == ["best.pt", "last.pt"]


def _worker_with_rank(job: subprocess.Popen, rank: int, timeout: float = 60) -> int:
    """The pid of the job's process whose RANK is ``rank`` (torchrun's children)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                status = (entry / "status").read_text()
                environ = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            parent = int(status.split("PPid:")[1].split()[0])
            if parent == job.pid and f"RANK={rank}".encode() in environ:
                return int(entry.name)
        time.sleep(0.2)
    raise AssertionError(f"no worker with RANK={rank} under {job.pid}")


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the worker through /proc")
def test_a_killed_process_fails_the_job_cleanly_and_the_checkpoint_resumes(tmp_path):
    run = tmp_path / "run"
    args = ["--iterations", "400", "--val-every", "2", "--step-seconds", "0.1"]
    job = subprocess.Popen(
        _command(2, str(run), *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_environment(),
    )
    try:
        last = run / "checkpoints" / "last.pt"
        deadline = time.monotonic() + 120
        while not last.is_file() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert last.is_file(), "the job wrote no checkpoint"
        os.kill(_worker_with_rank(job, 1), signal.SIGKILL)
        _, errors = job.communicate(timeout=120)
    finally:
        job.kill()
    assert job.returncode != 0
    assert "Signal 9 (SIGKILL)" in errors and "rank" in errors.lower()
    # the last checkpoint is whole, and the job resumes from it under torchrun again
    stopped_at = load_checkpoint(last)["iteration"]
    assert 0 < stopped_at < 400
    resumed = _run(2, str(run), "--iterations", str(stopped_at + 4), "--val-every", "2", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert load_checkpoint(last)["iteration"] == stopped_at + 4


def test_cxr_train_and_shrink_run_under_torchrun(tmp_path):
    """The real commands, two processes: GG-CAM without gaze (its loss scalars unused) trains,
    and `simplify shrink` retrains a cut network; one process writes each file."""
    from visprior.cxr.synthetic import write_synthetic_egd

    with pytest.warns(UserWarning, match="SYNTHETIC"):
        data = write_synthetic_egd(tmp_path / "egd", cases_per_class=8, size=64, seed=0)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command = [*torchrun, "--nproc_per_node", "2", "-m", "visprior.cli"]
    run = tmp_path / "run"
    train = [
        *("cxr", "train", str(data), "--model", "ggcam_resnet18", "-o", str(run)),
        *("--epochs", "2", "--no-gaze", "--set", "image_size=64", "--set", "batch_size=8"),
    ]
    result = subprocess.run(
        [*command, *train], capture_output=True, text=True, timeout=300, env=_environment()
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("trained 2 iterations") == 1  # 20 cases / (2 x 8): 1 step/epoch
    rows = (run / "metrics.csv").read_text().splitlines()
    assert len([r for r in rows if r.split(",")[0] == "2"]) == 1  # one writer
    shrink = [*("simplify", "shrink", str(run), "-o", str(tmp_path / "small")), "--rounds", "1"]
    result = subprocess.run(
        [*command, *shrink, "--epochs", "1", "--probes", "8", "--auc-tolerance", "1"],
        capture_output=True,
        text=True,
        timeout=300,
        env=_environment(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = (tmp_path / "small" / "shrink.json").read_text()
    assert '"round": 1' in summary
    assert result.stdout.count("final: round") == 1


def test_seg_train_runs_under_torchrun(tmp_path):
    from tests.seg.test_pipeline import TRAIN, make_dataset

    dataset = make_dataset(tmp_path)
    run = tmp_path / "run"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command = [*torchrun, "--nproc_per_node", "2", "-m", "visprior.cli"]
    result = subprocess.run(
        [*command, "seg", "train", str(dataset), "-o", str(run), *TRAIN],
        capture_output=True,
        text=True,
        timeout=300,
        env=_environment(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("trained 4 iterations") == 1
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["iteration"] == 4 and len(state["rng_per_rank"]) == 2  # two processes ran
