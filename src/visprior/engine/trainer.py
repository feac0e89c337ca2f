"""The training loop every visprior task shares: iteration-based, validation every N
iterations, best and last checkpoints written atomically, exact resume, a time limit, AMP on
CUDA, tqdm progress with loss and ETA, metrics CSV + TensorBoard and a curves PNG.

A task supplies what differs: how a batch becomes a loss, how the model is validated, and what
else its checkpoints must carry (labels, preprocessing). Only rank 0 writes files.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from monai.utils import set_determinism
from torch import nn
from tqdm.auto import tqdm

from visprior.engine.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    load_weights,
    restore_rng_state,
    save_checkpoint,
)
from visprior.engine.distributed import (
    all_gather_objects,
    all_reduce_mean,
    barrier,
    get_rank,
    get_world_size,
    init_distributed,
    is_main_process,
    unwrap,
    wrap_distributed,
)
from visprior.engine.metrics_log import MetricsLog
from visprior.engine.precision import autocast, grad_scaler, resolve_precision
from visprior.fileio import remove_stale_temporaries
from visprior.viz.curves import save_curves_png

__all__ = [
    "DistributedFailure",
    "Trainer",
    "TrainerSettings",
    "TrainingDiverged",
    "TrainingResult",
    "TrainingTask",
    "check_run_folder",
    "start_run",
]


_SCHEDULES: dict[str, Callable[[float], float]] = {
    "constant": lambda progress: 1.0,
    "poly": lambda progress: (1.0 - progress) ** 0.9,
    "cosine": lambda progress: 0.5 * (1.0 + math.cos(math.pi * progress)),
}


class TrainingTask(Protocol):
    def training_loss(self, model: nn.Module, batch: Any) -> torch.Tensor: ...

    def validate(self, model: nn.Module) -> dict[str, float]: ...

    def checkpoint_extras(self) -> dict[str, Any]: ...


class TrainingDiverged(RuntimeError):
    """The loss or the gradient stayed NaN or infinite for :data:`NONFINITE_STEPS_IN_A_ROW`
    steps; the last good checkpoint is kept."""


# A step whose loss or gradient is not finite is skipped, as float16's gradient scaler skips
# one: the weights never take it. A rare one in bf16 (one in about ten 10-minute RepUX-Net runs
# on the demo) then costs a step, not the run; this many in a row stop it.
NONFINITE_STEPS_IN_A_ROW = 3


@dataclass
class TrainerSettings:
    """Args:
    iterations: optimizer steps in total (a resumed run counts from where it stopped).
    val_every: validate (and write checkpoints) every this many iterations and at the end.
    metric: the validation metric that picks the best checkpoint; ``mode`` says which way.
    time_limit_minutes: stop after this much training time (validation not counted),
        summed over resumed sessions: equal budgets compare networks fairly.
    wall_limit_minutes: stop once the run's wall time (training and validation, summed over
        resumed sessions), plus ``reserve_validations`` times the last validation's wall
        time, reaches this: a budget in wall time that leaves room for the final
        validation and what follows it.
    reserve_validations: validations' worth of wall time kept for after the loop (the final
        validation, and a prediction of the held-out cases that takes as long).
    amp: for ``precision="auto"``: bfloat16 autocast where the device is CUDA.
    precision: ``"32"``, ``"bf16"``, ``"16-mixed"`` (float16 autocast and a gradient scaler)
        or ``"auto"`` (see ``amp``); see :mod:`visprior.engine.precision`.
    log_every: write the running training loss every this many iterations.
    lr_schedule: ``"constant"``, ``"poly"`` (nnU-Net's ``(1 - progress) ** 0.9``),
        ``"cosine"``, where progress is the larger of the iteration and time fractions, so
        a run cut by its time limit still ends at a small learning rate; or ``"plateau"``:
        the rate is multiplied by ``plateau_factor`` once ``metric`` has not improved for
        more than ``plateau_patience`` validations (``ReduceLROnPlateau``'s rule).
    warmup_iterations: linear warm-up from 0 to the optimizer's learning rate.
    plateau_patience: validations without improvement tolerated before a drop.
    plateau_factor: what a drop multiplies the learning rate by.
    reload_best_on_drop: at each drop, go back to the best weights seen so far.
    early_stop_patience: stop after this many validations without improvement (0: never).
    sync_batchnorm: under ``torchrun`` on GPUs, BatchNorm statistics over the global batch.
    unused_parameters: the task's loss leaves some parameters out (``torchrun`` must know).
    """

    iterations: int
    val_every: int
    metric: str
    mode: str = "max"
    time_limit_minutes: float = math.inf
    wall_limit_minutes: float = math.inf
    reserve_validations: float = 1.0
    amp: bool = True
    precision: str = "auto"
    log_every: int = 10
    lr_schedule: str = "constant"
    warmup_iterations: int = 0
    plateau_patience: int = 10
    plateau_factor: float = 0.1
    reload_best_on_drop: bool = False
    early_stop_patience: int = 0
    sync_batchnorm: bool = False
    unused_parameters: bool = False


class DistributedFailure(RuntimeError):
    """Another process of a ``torchrun`` job failed or vanished; the last checkpoint stands."""


@dataclass
class TrainingResult:
    iteration: int
    best_metric: float
    best_iteration: int
    training_seconds: float
    run_dir: Path

    @property
    def best_checkpoint(self) -> Path:
        return self.run_dir / "checkpoints" / "best.pt"

    @property
    def last_checkpoint(self) -> Path:
        return self.run_dir / "checkpoints" / "last.pt"

    def summary(self, metric: str) -> str:
        """One line for the command line: steps, time, best ``metric`` and where it is."""
        return (
            f"trained {self.iteration} iterations in {self.training_seconds / 60:.1f} min; "
            f"best {metric} {self.best_metric:.4f} at iteration {self.best_iteration}; "
            f"checkpoints in {self.run_dir / 'checkpoints'}"
        )


class Trainer:
    """Drive ``task`` over ``batches`` until the iteration count or the time limit is reached.

    Args:
        model: the network; under ``torchrun`` it is wrapped in ``DistributedDataParallel``
            here (the task's ``training_loss`` gets the wrapper, ``validate`` the network).
        optimizer: its optimizer.
        task: a ``TrainingTask``.
        batches: an iterable re-iterated for as long as training lasts (a DataLoader).
        run_dir: folder for ``checkpoints/``, ``metrics.csv``, ``tensorboard/``, ``curves.png``.
        settings: a ``TrainerSettings``.
        device: where the batches go (the task moves them).
        scheduler: optional learning-rate scheduler stepped once per iteration.
        on_epoch: called with the epoch number before each pass over ``batches``; by default
            the epoch goes to the DataLoader's sampler when it has ``set_epoch``.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        task: TrainingTask,
        batches: Iterable,
        run_dir: str | Path,
        settings: TrainerSettings,
        device: torch.device,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        on_epoch: Callable[[int], None] | None = None,
    ):
        if settings.mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {settings.mode!r}")
        if settings.iterations < 1 or settings.val_every < 1:
            raise ValueError("iterations and val_every must be >= 1")
        if settings.lr_schedule not in (*_SCHEDULES, "plateau"):
            raise ValueError(
                f"lr_schedule must be one of {', '.join(_SCHEDULES)}, plateau; "
                f"got {settings.lr_schedule!r}"
            )
        self.precision = resolve_precision(settings.precision, device, settings.amp)
        self.scaler = grad_scaler(self.precision, device)
        self.nonfinite_in_a_row = 0
        self.skipped_steps = 0
        self.model = wrap_distributed(
            model, device, settings.sync_batchnorm, settings.unused_parameters
        )
        self.optimizer, self.task = optimizer, task
        self.batches, self.settings, self.device = batches, settings, device
        self.scheduler, self.on_epoch = scheduler, on_epoch
        self.run_dir = Path(run_dir)
        self.checkpoint_dir = self.run_dir / "checkpoints"
        self.iteration = 0
        self.epoch = 0
        self.epoch_batches = 0  # batches drawn so far in this epoch
        self.resume_position = 0  # batches of the first epoch to pass over after a resume
        self.training_seconds = 0.0
        self.wall_seconds = 0.0  # training and validation, summed over resumed sessions
        self.validation_seconds = 0.0  # the last validation's wall time
        self.best_metric = -math.inf if settings.mode == "max" else math.inf
        self.best_iteration = 0
        # "plateau" state: the learning-rate multiplier, and validations since the last gain
        self.plateau_scale = 1.0
        self.stale_validations = 0
        self.validations_since_best = 0
        self.stopped_early = False
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])

    # -- public -----------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> TrainingResult:
        if resume:
            self._resume()
        log = MetricsLog(self.run_dir, resume_from=self.iteration) if is_main_process() else None
        try:
            self._loop(log)
        except RuntimeError as error:
            if get_world_size() == 1 or not _lost_another_process(error):
                raise
            raise DistributedFailure(
                f"rank {get_rank()}: lost the other processes at iteration {self.iteration} "
                f"({type(error).__name__}: {str(error).splitlines()[0][:200]}); the last "
                f"checkpoint is {self.checkpoint_dir / 'last.pt'}: start the job again with "
                "--resume"
            ) from error
        finally:
            if log is not None:
                log.close()
        return TrainingResult(
            self.iteration,
            self.best_metric,
            self.best_iteration,
            self.training_seconds,
            self.run_dir,
        )

    # -- loop -------------------------------------------------------------------------------
    def _loop(self, log: MetricsLog | None) -> None:
        s = self.settings
        batches = self._endless_batches()
        progress = self._progress_bar()
        window: list[float] = []
        window_seconds: list[float] = []  # the steps' own time, without validation
        self._session = (time.perf_counter(), self.wall_seconds)
        with progress:
            while (
                self.iteration < s.iterations and not self._time_is_up() and not self.stopped_early
            ):
                started = time.perf_counter()
                loss = self._step(next(batches))  # None: a skipped step
                elapsed = time.perf_counter() - started
                if self._timed():  # every process must agree on when the time is up
                    seconds = torch.tensor([elapsed], dtype=torch.float64, device=self.device)
                    elapsed = float(all_reduce_mean(seconds))  # NCCL reduces device tensors
                self.training_seconds += elapsed
                window_seconds.append(elapsed)
                self.iteration += 1
                if loss is not None:
                    window.append(loss)
                self._tick()
                self._advance(progress, time.perf_counter() - started)
                shown = "skipped" if loss is None else f"{loss:.4f}"
                progress.set_postfix(it=self.iteration, loss=shown, refresh=False)
                if log is not None and self.iteration % s.log_every == 0 and window:
                    log.log(
                        self.iteration,
                        train_loss=sum(window) / len(window),
                        lr=self._lr(),
                        step_seconds=sum(window_seconds) / len(window_seconds),
                    )
                    window.clear()
                    window_seconds.clear()
                last = self.iteration >= s.iterations or self._time_is_up()
                if self.iteration % s.val_every == 0 or last:
                    validation_started = time.perf_counter()
                    self._validate_and_save(log, progress)
                    self.validation_seconds = time.perf_counter() - validation_started
                    self._tick()

    def _step(self, batch: Any) -> float | None:
        self._set_lr()
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            loss = self.task.training_loss(self.model, batch)
        # the mean over the processes: one NaN skips the step on all of them
        reported = float(all_reduce_mean(loss.detach().float().reshape(1)))
        if not math.isfinite(reported):
            return self._skip_step(f"loss is {reported}")
        if self.scaler is not None:  # float16: scaled so that small gradients do not vanish
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)  # skips the step itself where a gradient is inf
            self.scaler.update()
        else:
            loss.backward()
            # gradients are all-reduced by now, so every process sees the same norm
            norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), math.inf))
            if not math.isfinite(norm):
                return self._skip_step(f"gradient norm is {norm}")
            self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.nonfinite_in_a_row = 0
        return reported

    def _skip_step(self, what: str) -> None:
        """Leave the weights as they are; stop the run once too many steps in a row did."""
        self.optimizer.zero_grad(set_to_none=True)
        self.nonfinite_in_a_row += 1
        self.skipped_steps += 1
        where = f"iteration {self.iteration + 1}"
        if self.nonfinite_in_a_row >= NONFINITE_STEPS_IN_A_ROW:
            raise TrainingDiverged(
                f"{what} at {where}, {self.nonfinite_in_a_row} steps in a row not finite; the "
                f"last good checkpoint is {self.checkpoint_dir / 'last.pt'}. Lower the learning "
                "rate."
            )
        if is_main_process():
            tqdm.write(f"{where}: {what}; the step is skipped (the weights keep their values)")
        return None

    def _validate_and_save(self, log: MetricsLog | None, progress: tqdm) -> None:
        metrics = {}
        own_rng = capture_rng_state()
        rng = all_gather_objects(own_rng)  # every process's, for an exact resume
        if is_main_process():
            unwrap(self.model).eval()
            with torch.no_grad(), self._autocast():
                metrics = self.task.validate(unwrap(self.model))
            value = metrics[self.settings.metric]
            improved = self._is_better(value)
            # the checkpoints count this validation's time too (a resumed run's wall limit
            # starts from it); the next _tick brings every rank to the same figure again
            started, before = self._session
            self.wall_seconds = max(self.wall_seconds, before + time.perf_counter() - started)
            if improved:
                self.best_metric, self.best_iteration = value, self.iteration
                self._save("best.pt", rng)
            self._after_validation(improved, progress)
            self._save("last.pt", rng)
            if log is not None:
                log.log(self.iteration, **metrics)
                self._plot(log)
            progress.write(
                f"iteration {self.iteration}: {self.settings.metric} {value:.4f} "
                f"(best {self.best_metric:.4f} at {self.best_iteration}); all in metrics.csv"
            )
        barrier()
        self._share_decisions()
        # Validation may draw random numbers (MONAI's DataLoader even reseeds torch): training
        # goes on from the saved state, as a resumed run will.
        restore_rng_state(own_rng)

    def _after_validation(self, improved: bool, progress: tqdm) -> None:
        """The plateau rule and early stopping, decided on rank 0."""
        s = self.settings
        self.stale_validations = 0 if improved else self.stale_validations + 1
        self.validations_since_best = 0 if improved else self.validations_since_best + 1
        if s.lr_schedule == "plateau" and self.stale_validations > s.plateau_patience:
            self.plateau_scale *= s.plateau_factor
            self.stale_validations = 0
            message = f"no gain in {s.plateau_patience + 1} validations: lr x {s.plateau_factor:g}"
            best = self.checkpoint_dir / "best.pt"
            if s.reload_best_on_drop and best.is_file():
                state = load_checkpoint(best, map_location=self.device)
                load_weights(unwrap(self.model), state["state_dict"], str(best))
                message += f", back to the best weights (iteration {self.best_iteration})"
            progress.write(message)
        if s.early_stop_patience and self.validations_since_best >= s.early_stop_patience:
            self.stopped_early = True
            progress.write(f"early stop: no gain in {self.validations_since_best} validations")

    def _share_decisions(self) -> None:
        """Rank 0 decided on the learning rate, the weights and stopping: tell the others."""
        if get_world_size() == 1:
            return
        decisions = torch.tensor(
            [
                self.plateau_scale,
                float(self.stopped_early),
                float(self.stale_validations),
                float(self.validations_since_best),
            ],
            dtype=torch.float64,
            device=self.device,
        )
        torch.distributed.broadcast(decisions, src=0)
        self.plateau_scale = float(decisions[0])
        self.stopped_early = bool(decisions[1])
        self.stale_validations = int(decisions[2])
        self.validations_since_best = int(decisions[3])
        for tensor in unwrap(self.model).state_dict().values():
            torch.distributed.broadcast(tensor, src=0)

    # -- checkpoints ------------------------------------------------------------------------
    def _save(self, name: str, rng: list[dict[str, Any]]) -> None:
        state = {
            "state_dict": unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "iteration": self.iteration,
            "epoch": self.epoch,
            "epoch_batches": self.epoch_batches,
            "training_seconds": self.training_seconds,
            "wall_seconds": self.wall_seconds,
            "validation_seconds": self.validation_seconds,
            "best_metric": self.best_metric,
            "best_iteration": self.best_iteration,
            "metric": self.settings.metric,
            "plateau_scale": self.plateau_scale,
            "stale_validations": self.stale_validations,
            "validations_since_best": self.validations_since_best,
            "rng": rng[0],
            "rng_per_rank": rng,
            **self.task.checkpoint_extras(),
        }
        save_checkpoint(self.checkpoint_dir / name, state)

    def _resume(self) -> None:
        path = self.checkpoint_dir / "last.pt"
        if is_main_process():  # left by a process killed while writing a checkpoint
            remove_stale_temporaries(self.checkpoint_dir)
        state = load_checkpoint(path, map_location=self.device)
        load_weights(unwrap(self.model), state["state_dict"], str(path))
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler") is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.iteration = int(state["iteration"])
        if "epoch_batches" in state:  # the same epoch, from the next batch on
            self.epoch, self.resume_position = int(state["epoch"]), int(state["epoch_batches"])
        else:  # an older checkpoint without the position: a fresh pass
            self.epoch = int(state.get("epoch", 0)) + 1
        self.training_seconds = float(state.get("training_seconds", 0.0))
        self.wall_seconds = float(state.get("wall_seconds", 0.0))
        self.validation_seconds = float(state.get("validation_seconds", 0.0))
        self.best_metric = float(state["best_metric"])
        self.best_iteration = int(state["best_iteration"])
        self.plateau_scale = float(state.get("plateau_scale", 1.0))
        self.stale_validations = int(state.get("stale_validations", 0))
        self.validations_since_best = int(state.get("validations_since_best", 0))
        per_rank = state.get("rng_per_rank") or []
        same_job_size = len(per_rank) == get_world_size()
        restore_rng_state(per_rank[get_rank()] if same_job_size else state["rng"])

    # -- helpers ----------------------------------------------------------------------------
    def _endless_batches(self) -> Iterator:
        while True:
            if self.on_epoch is not None:
                self.on_epoch(self.epoch)
            else:  # a DistributedSampler reshuffles by epoch: tell it which one this is
                set_epoch = getattr(getattr(self.batches, "sampler", None), "set_epoch", None)
                if set_epoch is not None:
                    set_epoch(self.epoch)
            self.epoch_batches, self.resume_position = self.resume_position, 0
            for batch in self._pass_from(self.epoch_batches):
                self.epoch_batches += 1
                yield batch
            self.epoch += 1

    def _pass_from(self, position: int) -> Iterable:
        """One pass over ``batches`` from batch ``position`` on: a ``TrainingSampler`` starts
        there; any other loader draws the batches before it and drops them."""
        if position == 0:
            return self.batches
        sampler = getattr(self.batches, "sampler", None)
        batch_size = getattr(self.batches, "batch_size", None)
        if hasattr(sampler, "skip_samples") and batch_size is not None:
            sampler.skip_samples(position * batch_size)
            return self.batches
        return itertools.islice(self.batches, position, None)

    def _set_lr(self) -> None:
        s = self.settings
        progress = self.iteration / s.iterations
        if self._timed():
            progress = max(progress, self.training_seconds / (s.time_limit_minutes * 60))
        if self._wall_timed():
            usable = s.wall_limit_minutes * 60 - self._reserve()
            progress = max(progress, self.wall_seconds / usable if usable > 0 else 1.0)
        if s.lr_schedule == "plateau":
            factor = self.plateau_scale
        else:
            factor = _SCHEDULES[s.lr_schedule](min(progress, 1.0))
        if self.iteration < s.warmup_iterations:
            factor *= (self.iteration + 1) / s.warmup_iterations
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor

    def _timed(self) -> bool:
        return math.isfinite(self.settings.time_limit_minutes)

    def _progress_bar(self) -> tqdm:
        """Counts iterations; training seconds when a time limit decides the end; wall seconds
        when only a wall limit does."""
        common = {"desc": "train", "disable": not is_main_process(), "dynamic_ncols": True}
        seconds = "{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}{postfix}]"
        if self._timed():
            total, initial = self.settings.time_limit_minutes * 60, self.training_seconds
        elif self._wall_timed():
            total, initial = self.settings.wall_limit_minutes * 60, self.wall_seconds
        else:
            return tqdm(total=self.settings.iterations, initial=self.iteration, unit="it", **common)
        initial = min(initial, total)
        return tqdm(total=total, initial=initial, unit="s", bar_format=seconds, **common)

    def _advance(self, progress: tqdm, step_seconds: float) -> None:
        """Move the bar by what it counts (see :meth:`_progress_bar`)."""
        if self._timed():
            done = step_seconds
        elif self._wall_timed():
            done = self.wall_seconds - progress.n
        else:
            done = 1
        progress.update(max(0.0, min(done, progress.total - progress.n)))

    def _time_is_up(self) -> bool:
        if self.training_seconds >= self.settings.time_limit_minutes * 60:
            return True
        if not self._wall_timed():
            return False
        return self.wall_seconds + self._reserve() >= self.settings.wall_limit_minutes * 60

    def _wall_timed(self) -> bool:
        return math.isfinite(self.settings.wall_limit_minutes)

    def _reserve(self) -> float:
        return self.settings.reserve_validations * self.validation_seconds

    def _tick(self) -> None:
        """Bring the wall time up to now; every process takes the mean, so that all agree on
        when the time is up."""
        started, before = self._session
        wall = before + time.perf_counter() - started
        if self._wall_timed():
            values = torch.tensor([wall, self.validation_seconds], dtype=torch.float64,
                                  device=self.device)  # fmt: skip
            wall, self.validation_seconds = (float(v) for v in all_reduce_mean(values))
        self.wall_seconds = wall

    def _is_better(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.settings.mode == "max":
            return value > self.best_metric
        return value < self.best_metric

    def _autocast(self):
        return autocast(self.precision, self.device)

    def _lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def _plot(self, log: MetricsLog) -> None:
        save_curves_png(log.as_rows(), self.run_dir / "curves.png")


def _lost_another_process(error: RuntimeError) -> bool:
    """A collective that failed because a peer process died or stopped answering."""
    if isinstance(error, torch.distributed.DistError):
        return True
    signs = ("Connection closed", "Connection reset", "Broken pipe", "gloo", "NCCL", "timed out")
    return any(sign in str(error) for sign in signs)


def start_run(
    run_dir: Path, resume: bool, seed: int, deterministic: bool, device: str
) -> torch.device:
    """Join the ``torchrun`` job if there is one, check the run folder, seed every generator
    (process r with ``seed + r``: its own random augmentations), set determinism; return the
    device."""
    device = init_distributed(device)
    check_run_folder(run_dir, resume)
    set_determinism(seed=seed + get_rank())
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    return device


def check_run_folder(run_dir: Path, resume: bool) -> None:
    """Refuse to start a run over an earlier one, or to resume one that has no checkpoint."""
    last = run_dir / "checkpoints" / "last.pt"
    if resume and not last.is_file():
        raise ValueError(f"cannot resume: {last} does not exist")
    if not resume and (run_dir / "checkpoints").exists():
        raise ValueError(
            f"{run_dir} already holds a run; pass --resume to continue it or choose another "
            "output folder (nothing was overwritten)"
        )
