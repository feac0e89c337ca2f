"""The shared training loop: checkpoints, best selection, exact resume, time limit, logs."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from torch import nn

from visprior.engine.checkpoint import load_checkpoint
from visprior.engine.trainer import Trainer, TrainerSettings, TrainingDiverged


class RegressionTask:
    """Fit y = 3x with noise drawn from torch's RNG (so resume must restore it)."""

    def __init__(self, fail_at: int | None = None):
        self.fail_at, self.calls = fail_at, 0

    def training_loss(self, model, batch):
        self.calls += 1
        if self.fail_at is not None and self.calls >= self.fail_at:
            return torch.tensor(math.nan)
        x = batch
        noise = 0.01 * torch.randn_like(x)
        return (model(x) - 3 * x - noise).square().mean()

    def validate(self, model):
        torch.rand(3)  # validation that draws random numbers must not change training's
        x = torch.linspace(-1, 1, 5)[:, None]
        return {"val_error": float((model(x) - 3 * x).abs().mean())}

    def checkpoint_extras(self):
        return {"task": "toy"}


def make_trainer(run_dir, iterations, **settings):
    torch.manual_seed(0)
    model = nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.5)
    # Three batches a pass: checkpoints every 2 iterations fall inside passes too.
    batches = list(torch.linspace(-1, 1, 12)[:, None].split(4))
    options = {"val_every": 2, "metric": "val_error", "mode": "min", "log_every": 1}
    options.update(settings)
    trainer = Trainer(
        model,
        optimizer,
        settings.pop("task", RegressionTask()),
        batches,
        run_dir,
        TrainerSettings(iterations=iterations, **{k: v for k, v in options.items() if k != "task"}),
        torch.device("cpu"),
    )
    return trainer, model


def test_training_writes_checkpoints_logs_and_curves(tmp_path):
    trainer, model = make_trainer(tmp_path, iterations=8)
    result = trainer.fit()
    assert result.iteration == 8
    last = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    best = load_checkpoint(tmp_path / "checkpoints" / "best.pt")
    assert last["iteration"] == 8 and last["task"] == "toy"
    assert best["best_metric"] == pytest.approx(result.best_metric)
    torch.testing.assert_close(last["state_dict"]["weight"], model.weight.detach())
    with open(tmp_path / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["iteration"]) for r in rows] == list(range(1, 9))
    validated = [r for r in rows if r["val_error"]]
    assert [int(r["iteration"]) for r in validated] == [2, 4, 6, 8]
    errors = [float(r["val_error"]) for r in validated]
    assert result.best_metric == pytest.approx(min(errors))
    assert result.best_iteration == 2 * (errors.index(min(errors)) + 1)
    assert min(errors) < 0.5 * errors[0]  # it learns
    assert (tmp_path / "curves.png").stat().st_size > 0


def test_resume_continues_exactly(tmp_path):
    straight, straight_model = make_trainer(tmp_path / "a", iterations=6)
    straight.fit()

    first, _ = make_trainer(tmp_path / "b", iterations=4)
    first.fit()
    second, resumed_model = make_trainer(tmp_path / "b", iterations=6)
    torch.manual_seed(123)  # the resumed run must not depend on the new process's RNG
    result = second.fit(resume=True)

    assert result.iteration == 6
    torch.testing.assert_close(resumed_model.weight, straight_model.weight, rtol=0, atol=0)
    with open(tmp_path / "b" / "metrics.csv") as handle:
        iterations = [int(r["iteration"]) for r in csv.DictReader(handle)]
    assert iterations == list(range(1, 7))  # no duplicated rows after resuming


def test_time_limit_stops_and_saves(tmp_path):
    trainer, _ = make_trainer(tmp_path, iterations=10_000, time_limit_minutes=1e-9)
    result = trainer.fit()
    assert result.iteration == 1
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["iteration"] == 1


def test_diverging_loss_stops_with_a_clear_error(tmp_path):
    # NaN from the 4th step on: steps 4 and 5 are skipped, the 3rd in a row stops the run
    trainer, _ = make_trainer(tmp_path, iterations=10, task=RegressionTask(fail_at=4))
    with pytest.raises(
        TrainingDiverged, match="loss is nan at iteration 6, 3 steps in a row not finite"
    ):
        trainer.fit()
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["iteration"] == 4


class OneBadStepTask(RegressionTask):
    """A finite loss whose gradient is NaN (sqrt at 0), or a NaN loss, on one call."""

    def __init__(self, bad_call: int, nan_loss: bool):
        super().__init__()
        self.bad_call, self.nan_loss = bad_call, nan_loss

    def training_loss(self, model, batch):
        loss = super().training_loss(model, batch)
        if self.calls != self.bad_call:
            return loss
        if self.nan_loss:
            return loss * math.nan
        return loss + torch.sqrt(model.weight.sum() * 0)  # finite, with a NaN gradient


@pytest.mark.parametrize("nan_loss", [True, False])
def test_one_nonfinite_step_is_skipped_and_the_weights_keep_their_values(tmp_path, nan_loss):
    seen = []
    trainer, model = make_trainer(
        tmp_path, iterations=6, task=OneBadStepTask(bad_call=3, nan_loss=nan_loss)
    )
    original_step = trainer.optimizer.step

    def step(*args, **kwargs):
        seen.append(model.weight.detach().clone())
        return original_step(*args, **kwargs)

    trainer.optimizer.step = step
    result = trainer.fit()
    assert result.iteration == 6 and trainer.skipped_steps == 1
    assert len(seen) == 5  # the optimizer never took the third step
    assert torch.isfinite(model.weight).all()
    with open(tmp_path / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    logged = [int(r["iteration"]) for r in rows if r["train_loss"]]
    assert 3 not in logged and {2, 4} <= set(logged)  # the skipped step logged no loss
    assert all(math.isfinite(float(r["train_loss"])) for r in rows if r["train_loss"])
    # each logged window carries its steps' mean time, the skipped step's included
    assert all(float(r["step_seconds"]) > 0 for r in rows if r["train_loss"])


def test_bad_settings():
    with pytest.raises(ValueError, match="mode must be 'max' or 'min'"):
        make_trainer("unused", iterations=2, mode="up")


@pytest.mark.parametrize(
    "schedule, warmup, expected",
    [
        ("poly", 0, [(1 - i / 4) ** 0.9 for i in range(4)]),
        ("cosine", 0, [0.5 * (1 + math.cos(math.pi * i / 4)) for i in range(4)]),
        ("constant", 2, [0.5, 1.0, 1.0, 1.0]),
    ],
)
def test_learning_rate_schedules(tmp_path, schedule, warmup, expected):
    trainer, _ = make_trainer(
        tmp_path, iterations=4, val_every=4, lr_schedule=schedule, warmup_iterations=warmup
    )
    trainer.fit()
    with open(tmp_path / "metrics.csv") as handle:
        lrs = [float(r["lr"]) for r in csv.DictReader(handle)]
    np.testing.assert_allclose(lrs, [0.2 * f for f in expected], rtol=1e-6)


def test_unknown_schedule_is_named():
    with pytest.raises(ValueError, match="lr_schedule must be one of constant, poly, cosine"):
        make_trainer("unused", iterations=2, lr_schedule="step")


class ScriptedTask(RegressionTask):
    """Validation returns the next value of a script, whatever the model does."""

    def __init__(self, script):
        super().__init__()
        self.script = list(script)

    def validate(self, model):
        return {"val_error": self.script.pop(0), "weight": float(model.weight)}


def test_plateau_drops_lr_reloads_best_and_stops_early(tmp_path):
    # one validation per iteration; best at the 2nd, then no gain
    script = [1.0, 0.5, 0.9, 0.8, 0.7, 0.6, 0.6, 0.6, 0.6, 0.6]
    trainer, model = make_trainer(
        tmp_path,
        iterations=len(script),
        val_every=1,
        task=ScriptedTask(script),
        lr_schedule="plateau",
        plateau_patience=1,
        plateau_factor=0.5,
        reload_best_on_drop=True,
        early_stop_patience=5,
    )
    saved_best, after_validation = [], {}
    save, decide = trainer._save, trainer._after_validation

    def save_and_remember(name, rng):
        if name == "best.pt":
            saved_best.append(model.weight.detach().clone())
        save(name, rng)

    def decide_and_remember(improved, progress):
        decide(improved, progress)
        after_validation[trainer.iteration] = model.weight.detach().clone()

    trainer._save, trainer._after_validation = save_and_remember, decide_and_remember
    result = trainer.fit()
    # gains at validations 1 and 2; drops at 4 and 6 (2 stale each); stop at 7 (5 stale)
    assert result.best_iteration == 2 and len(saved_best) == 2
    assert trainer.stopped_early and result.iteration == 7
    assert trainer.plateau_scale == pytest.approx(0.25)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.2 * 0.25)  # step 7
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["plateau_scale"] == 0.25
    best = saved_best[-1]
    for iteration in (4, 6):  # a drop puts the best weights back
        torch.testing.assert_close(after_validation[iteration], best)
    for iteration in (3, 5):  # training moved them in between
        assert not torch.allclose(after_validation[iteration], best)


def test_unknown_lr_schedule_is_refused(tmp_path):
    with pytest.raises(ValueError, match="plateau"):
        make_trainer(tmp_path, iterations=2, lr_schedule="step")


def test_the_loader_sampler_learns_each_epoch(tmp_path):
    """A DistributedSampler is told the epoch, so every pass is shuffled anew."""
    data = torch.linspace(-1, 1, 4)[:, None]
    sampler = torch.utils.data.DistributedSampler(data, num_replicas=1, rank=0, seed=0)
    loader = torch.utils.data.DataLoader(data, batch_size=2, sampler=sampler)
    seen = []
    original = sampler.set_epoch
    sampler.set_epoch = lambda epoch: (seen.append(epoch), original(epoch))
    model = nn.Linear(1, 1)
    settings = TrainerSettings(iterations=6, val_every=6, metric="val_error", mode="min")
    Trainer(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        RegressionTask(),
        loader,
        tmp_path,
        settings,
        torch.device("cpu"),
    ).fit()
    assert seen == [0, 1, 2]  # two batches a pass, six iterations


def test_a_resumed_log_replaces_the_steps_after_its_checkpoint_in_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from visprior.engine.metrics_log import MetricsLog

    first = MetricsLog(tmp_path)
    for step in range(1, 5):  # steps 3 and 4 came after the last checkpoint, then a kill
        first.log(step, train_loss=float(step))
    first.close()
    resumed = MetricsLog(tmp_path, resume_from=2)
    for step in (3, 4):
        resumed.log(step, train_loss=10.0 * step)
    resumed.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    shown = [(e.step, e.value) for e in events.Scalars("train/loss")]
    assert shown == [(1, 1.0), (2, 2.0), (3, 30.0), (4, 40.0)]
    with open(tmp_path / "metrics.csv") as handle:
        assert [float(r["train_loss"]) for r in csv.DictReader(handle)] == [1, 2, 30, 40]


class SlowValidationTask(RegressionTask):
    """Each validation takes 0.2 s of wall time; training steps take almost none."""

    def validate(self, model):
        import time

        time.sleep(0.2)
        return super().validate(model)


class FakeClock:
    """Stands in for the trainer's ``time`` module: every reading moves 1 ms on, and a
    validation moves it 0.2 s, so that a wall-limit test does not depend on how busy the
    machine is."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        self.now += 0.001
        return self.now


class FakeClockValidationTask(RegressionTask):
    def __init__(self, clock):
        super().__init__()
        self.clock = clock

    def validate(self, model):
        self.clock.now += 0.2
        return super().validate(model)


def test_a_wall_limit_stops_in_time_for_the_final_validation_and_counts_validations(
    tmp_path, monkeypatch
):
    """A 1.5 s wall budget, validation every 2 steps at 0.2 s each: training time alone would
    allow thousands of steps, but the wall time (validations included) plus one validation's
    reserve reaches the limit first; the run then ends within the limit."""
    from visprior.engine import trainer as trainer_module

    clock = FakeClock()
    monkeypatch.setattr(trainer_module, "time", clock)
    trainer, _ = make_trainer(
        tmp_path, iterations=100_000, task=FakeClockValidationTask(clock),
        wall_limit_minutes=1.5 / 60,
    )  # fmt: skip
    started = clock.now
    result = trainer.fit()
    assert 4 <= result.iteration < 100_000
    assert clock.now - started <= 1.5  # the final validation fitted inside the limit
    saved = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert saved["wall_seconds"] >= saved["training_seconds"] + 0.2
    assert saved["validation_seconds"] >= 0.2  # the task's, plus checkpoints and curves


def test_the_progress_bar_counts_what_ends_the_run(tmp_path):
    """Iterations by default, training seconds under a time limit, wall seconds under a wall
    limit alone: a bar that reaches its end when the run does."""
    counted, _ = make_trainer(tmp_path / "a", iterations=7)
    assert (counted._progress_bar().total, counted._progress_bar().unit) == (7, "it")
    timed, _ = make_trainer(tmp_path / "b", iterations=7, time_limit_minutes=2.0)
    assert (timed._progress_bar().total, timed._progress_bar().unit) == (120.0, "s")
    walled, _ = make_trainer(tmp_path / "c", iterations=7, wall_limit_minutes=3.0)
    walled.wall_seconds = 200.0  # resumed
    bar = walled._progress_bar()
    assert (bar.total, bar.n, bar.unit) == (180.0, 180.0, "s")  # never past its end
    fresh, _ = make_trainer(tmp_path / "d", iterations=7, wall_limit_minutes=3.0)
    bar = fresh._progress_bar()
    fresh.wall_seconds = 42.0  # a step and a validation later
    fresh._advance(bar, step_seconds=5.0)
    assert bar.n == 42.0


def test_a_resumed_run_counts_the_wall_time_of_both_parts(tmp_path):
    first, _ = make_trainer(tmp_path, iterations=4, task=SlowValidationTask())
    first.fit()
    spent = load_checkpoint(tmp_path / "checkpoints" / "last.pt")["wall_seconds"]
    assert spent >= 0.4  # two validations
    # a wall limit already used up by the first part: the resumed part makes no step
    second, _ = make_trainer(
        tmp_path, iterations=100, task=SlowValidationTask(), wall_limit_minutes=spent / 60
    )
    assert second.fit(resume=True).iteration == 4
