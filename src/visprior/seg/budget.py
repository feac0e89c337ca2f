"""``visprior seg plan --budget MIN``: a plan for the machine at hand, chosen by timing it.

nnU-Net plans for GPU memory alone. On a CPU that picks the paper's widths at tens of seconds
a step, and nothing converges in an hour. A budget plan instead times training steps on this
machine and picks what trains best within the minutes given.

**Candidates** vary the network's widths (:data:`WIDTH_LADDERS`: the registered network's
feature sizes scaled down, never below the widths that train the demo in minutes: a pilot
with half of them, flips on every axis and positive/negative crops made 901 steps in 10
minutes and 0.10 held-out Dice; the three were changed together),
the spacing (the full-resolution target, then coarser ones by nnU-Net's 3d_lowres rule: 1.03x
steps, the finer axes first, at 2x, 4x and 8x fewer image voxels), the patch (cube-equivalent
edges of :data:`PATCH_EDGES` voxels in the spacing's aspect, clipped to the median image, in
multiples of the network's stride) at batch 1 of 2 crops, and the precision (bf16 autocast
where this machine runs it at least :data:`BF16_MIN_SPEEDUP` x faster; the plan records it,
with the CPU's native bf16 instructions, so a run is reproducible on the same kind of
machine).

**Timing** is cheap. One reference step is timed in float32 and in bf16, after a warm-up step
that absorbs one-off costs (allocation, a conv-path choice). A timed candidate's step also
counts its data: the crops and augmentation of one step, drawn from one training case at the
candidate's spacing and patch, since ``seg train`` prepares them in the main process on a
CPU. Every other candidate's step time is predicted from the reference: the network's part by
the count of layer outputs it keeps (what a step computes and stores scales with it), the
data's part by the patch's voxels. Only the candidate about to be chosen is timed itself,
and the next one when it misses; planning stops timing once it has spent
:data:`PLANNING_SHARE` of the budget, and its time counts inside the budget.

**The rule.** Steps first: at CPU budgets the number of steps decides (benchmarks (d) and (d3):
at 5 and 10 CPU minutes the network that makes the most steps wins, and the hand-tuned demo
reached 0.90 held-out Dice in 957 steps but 0.83 in 619). So a candidate must be expected to
make its network's target of steps (:func:`steps_target`: :data:`STEPS_TARGET` for RepUX-Net)
in the training share of the budget (by its measured step time where it was timed), and its
patch must give the kernels context (:data:`MIN_CONTEXT` voxels a side, or the whole median
image). Among those the plan takes the one whose step does
the most work (layer outputs kept: more context, width or resolution per step), paid for with
steps beyond the target that would not be needed. Ties go to the finer spacing, then the wider
network. Where no candidate reaches the target, the plan takes the one with the most steps,
that is the least work a step (ties: the coarser spacing, whose patch covers more of the
image), and says that the budget is short (on the demo's brain at 10 minutes, timing noise
had chosen between 1.0 and 1.27 mm when the measured seconds ranked them). Benchmark (k)
compares this rule against the demo's hand-tuned settings.

**What else a short run needs.** Flips along the left-right axis alone (:data:`FLIP_AXES`;
volumes are reoriented to RAS, so axis 0): the body mirrors itself there, and a run of a
thousand steps cannot spend them learning upside-down and back-to-front anatomy as well, as
nnU-Net's thousand epochs can. Class-balanced crops wherever there are two or more foreground
classes, so that each class is seen within the first hundred steps.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from visprior.cpu_info import cpu_bf16_support
from visprior.engine.precision import autocast
from visprior.nets.registry import canonical_name, get_model
from visprior.seg.config import CPU_BUDGET_NETWORK, METHOD_NETWORK

__all__ = [
    "BF16_MIN_SPEEDUP",
    "DEFAULT_CPU_BUDGET_MINUTES",
    "PATCH_EDGES",
    "STEPS_TARGET",
    "STEPS_TARGETS",
    "WIDTH_LADDERS",
    "BudgetCandidate",
    "choose_candidate",
    "default_network",
    "coarser_spacings",
    "plan_budget",
    "steps_target",
    "time_training_step",
]

DEFAULT_CPU_BUDGET_MINUTES = 60.0  # `seg plan` on a machine without a GPU
STEPS_TARGET = 900  # the demo: 0.90 held-out Dice at 957 steps, 0.83 at 619
# networks whose cheap steps keep paying well past that (see ``steps_target``)
STEPS_TARGETS = {"unet": 5000}
PLANNING_SHARE = 0.05  # of the budget, at most, spent timing candidates
TRAINING_SHARE = 0.85  # of the budget: training; the rest validates and predicts
_BF16_SUPPORT_TEXT = {
    "amx_bf16": "AMX-BF16",
    "avx512_bf16": "AVX512-BF16",
    "none": "no native bf16",
    "unknown": "bf16 support unknown",
}
BF16_MIN_SPEEDUP = 1.2  # bf16 autocast is taken only where it is at least this much faster
PATCH_EDGES = (32, 48, 64, 80, 96, 128)  # cube-equivalent patch edges tried, in voxels
MIN_CONTEXT = 48  # patch edge (geometric mean) a large kernel needs: 2k for k = 21, rounded
CROPS_PER_STEP = 2  # batch 1 of 2 crops per volume, as the demo trains
SPACING_REDUCTIONS = (2.0, 4.0, 8.0)  # coarser spacings: image voxels this many times fewer
LOWRES_SPACING_STEP = 1.03  # nnU-Net's 3d_lowres spacing grows by this factor a step
FLIP_AXES = (0,)  # left-right only (RAS axis 0); nnU-Net mirrors along every axis
VALIDATIONS = 4  # validations in a budget run
# AdamW's rate for a run of about a thousand steps: the demo's (the recipe's 1e-4 is for 40,000)
BUDGET_LR = 1e-3

_LARGE_KERNEL_WIDTHS = [
    {"feature_size": 16, "hidden_size": 128},
    {"feature_size": 24, "hidden_size": 256},
    {"feature_size": 48, "hidden_size": 768},
]
_MEDNEXT_WIDTHS = [{"feature_size": f} for f in (16, 32)]
WIDTH_LADDERS: dict[str, list[dict[str, int]]] = {
    "repuxnet": _LARGE_KERNEL_WIDTHS,
    "repuxnet_plain": _LARGE_KERNEL_WIDTHS,
    "repuxnet_sr": _LARGE_KERNEL_WIDTHS,
    "uxnet": _LARGE_KERNEL_WIDTHS,
    "unet": [{"feature_size": f} for f in (8, 16, 32)],
    "swinunetr": [{"feature_size": f} for f in (12, 24, 48)],
    "segresnet": [{"feature_size": f} for f in (8, 16, 32)],
    "mednext_s": _MEDNEXT_WIDTHS,
    "mednext_b": _MEDNEXT_WIDTHS,
    "mednext_m": _MEDNEXT_WIDTHS,
    "mednext_l": _MEDNEXT_WIDTHS,
}


@dataclass
class BudgetCandidate:
    model_kwargs: dict[str, Any]
    spacing: tuple[float, float, float]
    roi_size: tuple[int, int, int]
    width_rank: int  # position on the width ladder, 0 the narrowest
    spacing_rank: int  # 0: full resolution, then coarser
    elements: float  # layer outputs a step keeps: the cost model's unit
    predicted_seconds: float = math.nan
    measured_seconds: float | None = None

    @property
    def step_seconds(self) -> float:
        return self.predicted_seconds if self.measured_seconds is None else self.measured_seconds

    def describe(self) -> dict[str, Any]:
        return {
            "model_kwargs": dict(self.model_kwargs),
            "spacing": [round(s, 5) for s in self.spacing],
            "roi_size": list(self.roi_size),
            "predicted_step_seconds": round(self.predicted_seconds, 4),
            "measured_step_seconds": (
                None if self.measured_seconds is None else round(self.measured_seconds, 4)
            ),
        }


def coarser_spacings(
    spacing: Sequence[float], reductions: Sequence[float] = SPACING_REDUCTIONS
) -> list[tuple[float, float, float]]:
    """Spacings with ``reductions`` times fewer image voxels, each reached by nnU-Net's
    3d_lowres steps: 1.03x on the axes finer than half the coarsest while there are such
    axes, then on all of them."""
    full = np.array(spacing, dtype=np.float64)
    low, found = full.copy(), []
    for reduction in sorted(reductions):
        while np.prod(low / full) < reduction:
            fine = low.max() / low > 2
            if fine.any():
                low[fine] *= LOWRES_SPACING_STEP
            else:
                low *= LOWRES_SPACING_STEP
        found.append(tuple(float(s) for s in low))
    return found


def _patches(
    spacing: Sequence[float], median: Sequence[int], stride: int
) -> list[tuple[int, int, int]]:
    """One patch per edge of :data:`PATCH_EDGES`: that many voxels' worth in the aspect of
    1 / spacing, clipped to the median image, in multiples of ``stride``, at least two strides
    a side (a network's deepest level then keeps 2 voxels an axis, which its normalisation
    needs in training); distinct ones."""
    inverse = 1 / np.array(spacing)
    smallest = 2 * stride
    found = []
    for edge in PATCH_EDGES:
        sides = inverse * (edge**3 / math.prod(inverse)) ** (1 / 3)
        patch = tuple(
            max(smallest, int(min(s, m) // stride) * stride)
            for s, m in zip(sides, median, strict=True)
        )
        if patch not in found:
            found.append(patch)
    return found


def _make_step(
    model_name: str,
    model_kwargs: dict[str, Any],
    in_channels: int,
    out_channels: int,
    roi_size: Sequence[int],
    precision: str,
) -> Callable[[], None]:
    """One training step as ``seg train`` runs it: DiceCE, AdamW, the given autocast."""
    from monai.losses import DiceCELoss

    torch.manual_seed(0)
    model = get_model(
        model_name, in_channels=in_channels, out_channels=out_channels, **model_kwargs
    ).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    image = torch.randn(CROPS_PER_STEP, in_channels, *roi_size)
    label = torch.randint(0, out_channels, (CROPS_PER_STEP, 1, *roi_size))
    device = torch.device("cpu")

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(precision, device):
            loss = loss_fn(model(image).float(), label)
        loss.backward()
        optimizer.step()

    return step


def time_training_step(
    step: Callable[[], None], repeats: int = 2, warmup: int = 1, give_up_seconds: float = math.inf
) -> float:
    """The median seconds of ``repeats`` calls of ``step`` after ``warmup`` untimed ones; the
    first step's time alone when it already took longer than ``give_up_seconds``."""
    for _ in range(warmup):
        start = time.perf_counter()
        step()
        first = time.perf_counter() - start
        if first > give_up_seconds:
            return first
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def default_network(budget_minutes: float | None, gpu: bool) -> str:
    """The network a plan is made for when ``--model`` is not given.

    RepUX-Net, the method, wherever a GPU trains it or no budget is asked for. A budget plan
    on a machine without a GPU is made for MONAI's UNet instead: at CPU budgets the network
    that makes the most steps and learns fastest per step wins, and that is UNet on both tasks
    measured. On the brain at 5 CPU minutes (benchmark (d3)) a RepUX-Net step cost 4.5-5.1x a
    UNet step and the held-out Dice was 0.534 against 0.891; on the chest CT halves at 600
    iterations (benchmark (k)'s chest pilot) RepUX-Net scored 0.214 and UNet 0.286, learning
    the deep back muscles that RepUX-Net had not learned after 2428 steps. ``--model
    repuxnet`` plans the method's network within the budget all the same.
    """
    return CPU_BUDGET_NETWORK if budget_minutes is not None and not gpu else METHOD_NETWORK


def steps_target(model: str) -> int:
    """The steps a budget plan for ``model`` must expect before it buys a larger step.

    :data:`STEPS_TARGET` (900) for the large-kernel networks: the RepUX-Net demo reached 0.90
    held-out Dice in 957 steps. MONAI's UNet, whose step costs a fifth of theirs, kept gaining
    from steps long after: on the brain 0.891 after 1067 steps and 0.912 after 4746 (benchmarks
    (d3), (d)); on the chest CT halves a 30-minute plan at the 900-step target made 1028 steps
    of 128 x 128 x 48 voxels and scored 0.490 mirrored, while 7568 steps of 48^3 (about as many
    voxels in all) scored 0.593 mirrored (benchmark (k)). So UNet's target, in
    :data:`STEPS_TARGETS`, is 5000.
    """
    return STEPS_TARGETS.get(canonical_name(model), STEPS_TARGET)


def choose_candidate(
    candidates: Sequence[BudgetCandidate], training_seconds: float, target: int = STEPS_TARGET
) -> tuple[BudgetCandidate, bool]:
    """The rule of the module's docstring on each candidate's step time (measured where it
    was, else predicted); and whether it is expected to reach ``target`` steps."""
    if not candidates:
        raise ValueError("no candidate to choose from")

    def steps(candidate: BudgetCandidate) -> float:
        return training_seconds / candidate.step_seconds

    with_context = [c for c in candidates if c.width_rank >= 0]
    feasible = [c for c in with_context if steps(c) >= target]
    if not feasible:
        # the most steps: the least work a step, as with the ranking below, since equal work
        # differs in timing by noise alone; then the coarser spacing, whose patch covers more
        # of the image, then the narrower network
        pool = with_context or candidates
        return min(pool, key=lambda c: (c.elements, -c.spacing_rank, c.width_rank)), False
    # ranked by the work a step does (its kept layer outputs), not by its timing: two
    # candidates of equal work differ in measured time by noise alone
    best = max(feasible, key=lambda c: (c.elements, -c.spacing_rank, c.width_rank))
    return best, True


def plan_budget(
    minutes: float,
    model: str,
    in_channels: int,
    out_channels: int,
    spacing: Sequence[float],
    median_shape_at: Callable[[Sequence[float]], Sequence[int]],
    elements_per_voxel: Callable[[dict[str, Any]], float],
    stride: int,
    started: float | None = None,
    timer: Callable[..., float] | None = None,
    data_timer: Callable[[Sequence[float], Sequence[int]], float] | None = None,
) -> dict[str, Any]:
    """The budget section of a plan (see the module's docstring).

    Args:
        minutes: the whole budget: planning, training, validation, prediction.
        spacing: the full-resolution target spacing.
        median_shape_at: the median image shape at a spacing.
        elements_per_voxel: layer outputs per input voxel of the network at given widths.
        started: ``time.perf_counter()`` when planning began (the fingerprint counts too).
        timer: ``timer(model_kwargs, roi_size, precision, give_up_seconds) -> seconds``; the
            default builds the network and times real steps.
        data_timer: ``data_timer(spacing, roi_size) -> seconds`` that one step's crops and
            augmentation take in the main process (``seg train`` prepares them there on a
            CPU); added to a candidate's timed step. ``None``: not counted.
    """
    if not minutes > 0:
        raise ValueError(f"--budget must be above 0 minutes, got {minutes}")
    started = time.perf_counter() if started is None else started
    budget_seconds = 60.0 * minutes
    planning_seconds = PLANNING_SHARE * budget_seconds

    def timer_default(kwargs, roi, precision, give_up):
        step = _make_step(model, kwargs, in_channels, out_channels, roi, precision)
        return time_training_step(step, give_up_seconds=give_up)

    timer = timer or timer_default
    target = steps_target(model)
    ladder = WIDTH_LADDERS.get(canonical_name(model), [{}])
    spacings = [tuple(float(s) for s in spacing), *coarser_spacings(spacing)]
    per_voxel = [elements_per_voxel(kwargs) for kwargs in ladder]
    candidates = []
    for spacing_rank, at in enumerate(spacings):
        median = tuple(int(m) for m in median_shape_at(at))
        whole = math.prod(max(m, stride) for m in median) ** (1 / 3)
        for patch in _patches(at, median, stride):
            context = math.prod(patch) ** (1 / 3) >= min(MIN_CONTEXT, whole) - 1e-6
            for width_rank, kwargs in enumerate(ladder):
                candidates.append(
                    BudgetCandidate(
                        model_kwargs=dict(kwargs),
                        spacing=at,
                        roi_size=patch,
                        width_rank=width_rank if context else -1,
                        spacing_rank=spacing_rank,
                        elements=per_voxel[width_rank] * math.prod(patch) * CROPS_PER_STEP,
                    )
                )
    # the reference: the cheapest candidate with context, timed in float32 and in bf16
    reference = min(
        (c for c in candidates if c.width_rank >= 0), key=lambda c: c.elements, default=None
    ) or min(candidates, key=lambda c: c.elements)
    fp32 = timer(reference.model_kwargs, reference.roi_size, "32", planning_seconds)
    bf16 = timer(reference.model_kwargs, reference.roi_size, "bf16", planning_seconds)
    speedup = fp32 / bf16 if bf16 > 0 else 1.0
    precision = "bf16" if speedup >= BF16_MIN_SPEEDUP else "32"
    reference_seconds = bf16 if precision == "bf16" else fp32
    data_cache: dict[tuple, float] = {}

    def data_seconds(candidate: BudgetCandidate) -> float:
        if data_timer is None:
            return 0.0
        key = (candidate.spacing, candidate.roi_size)
        if key not in data_cache:
            data_cache[key] = data_timer(candidate.spacing, candidate.roi_size)
        return data_cache[key]

    reference_data = data_seconds(reference)
    reference.measured_seconds = reference_seconds + reference_data
    for candidate in candidates:
        candidate.predicted_seconds = (
            candidate.elements * reference_seconds / reference.elements
            + reference_data * math.prod(candidate.roi_size) / math.prod(reference.roi_size)
        )

    def training_seconds() -> float:
        spent = time.perf_counter() - started
        return max(1.0, TRAINING_SHARE * budget_seconds - spent)

    measured = [reference]
    while True:
        chosen, reaches = choose_candidate(candidates, training_seconds(), target)
        if chosen.measured_seconds is not None:
            break
        left = planning_seconds - (time.perf_counter() - started)
        if left <= 0:
            break  # planning has had its share: the prediction stands
        chosen.measured_seconds = timer(
            chosen.model_kwargs, chosen.roi_size, precision, left
        ) + data_seconds(chosen)
        measured.append(chosen)
    train_seconds = training_seconds()
    iterations = max(1, int(train_seconds / chosen.step_seconds))
    bf16_support = cpu_bf16_support()
    notes = [
        f"bf16 autocast {speedup:.2f}x float32 on this machine "
        f"({_BF16_SUPPORT_TEXT.get(bf16_support, bf16_support)}): "
        + ("bf16" if precision == "bf16" else "float32")
    ]
    if not reaches:
        notes.append(
            f"the budget is short: no candidate with context is expected to make "
            f"{target} steps; the one with the most steps was taken"
        )
    return {
        "minutes": float(minutes),
        "planning_seconds": round(time.perf_counter() - started, 2),
        "training_minutes": round(train_seconds / 60, 3),
        "precision": precision,
        "bf16_speedup": round(speedup, 3),
        "cpu_bf16": bf16_support,
        "model_kwargs": dict(chosen.model_kwargs),
        "spacing": list(chosen.spacing),
        "roi_size": list(chosen.roi_size),
        "batch_size": 1,
        "crops_per_volume": CROPS_PER_STEP,
        "expected_step_seconds": round(chosen.step_seconds, 4),
        "step_time_measured": chosen.measured_seconds is not None,
        "iterations": iterations,
        "lr_schedule": "poly",
        "lr": BUDGET_LR,
        "val_every": max(1, iterations // VALIDATIONS),
        "flip_axes": list(FLIP_AXES),
        "steps_target": target,
        "reaches_steps_target": reaches,
        "timed": [c.describe() for c in measured],
        "data_seconds_per_step": round(data_seconds(chosen), 4) if data_cache else None,
        "candidates": len(candidates),
        "notes": notes,
    }
