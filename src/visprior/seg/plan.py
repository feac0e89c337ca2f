"""``visprior seg plan``: a dataset's fingerprint, read in one pass, and the training plan made
from it, so that a new dataset trains without hand-tuning.

**Fingerprint** (every training case read once): per case the voxel spacing and shape (in the
RAS axis order training resamples in), the shape after cropping to the non-zero image region
and the voxels of each label value; per channel the mean, standard deviation and 0.5 / 99.5
percentiles of the foreground (label > 0) intensities, from up to 10,000 foreground voxels a
case drawn with a fixed seed.

**Plan** (the rules are nnU-Net v2's default experiment planner's, Isensee et al., Nature
Methods 2021, as its ``default_experiment_planner.py`` states them):

* target spacing: the median spacing per axis. An axis more than 3x coarser than the finest
  other axis, whose median size is also under a third of the other axes', takes the 10th
  percentile of its own spacings instead (but never finer than the other axes), so that thick
  slices are not interpolated into many invented ones;
* normalisation: a CT channel is clipped to its foreground 0.5 / 99.5 percentiles, then
  z-scored with the foreground mean and standard deviation; any other channel is z-scored per
  image;
* patch size: aspect 1 / spacing at 256^3 voxels' worth, clipped to the median shape after
  resampling, in multiples of the network's total stride; while the estimated training memory
  exceeds the budget, the axis largest relative to the median shape shrinks by one stride;
* batch size: as many patches as the budget holds, at least 2 where it allows, at most 5% of
  the dataset's voxels;
* crop sampling: class-balanced (``"classes"``) when the rarest foreground class holds under 1%
  of the foreground voxels, foreground / background otherwise;
* a **3d_lowres** configuration when the full-resolution patch holds under 25% of the median
  image's voxels: the spacing grows by 1.03x a step (only the axes finer than half the
  coarsest one while there are such axes, then all of them), the patch is planned again at
  each spacing, until the patch holds 25% of the median image; the configuration is dropped
  unless its median image has at least 2x fewer voxels than at full resolution. The patch is
  visprior's own network's. ``seg train --configuration 3d_lowres`` trains it on its own (no
  cascade).

The memory estimate runs the chosen network once on a small input and counts the elements of
every layer's output (what backpropagation keeps), scaled to the patch; the budget is
``--gpu-memory-gb``, else the free memory of the GPU, else :data:`CPU_BUDGET_GB`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

from visprior.data.checks import format_problems
from visprior.data.dataset import (
    DatasetError,
    DatasetProblem,
    ProblemList,
    SegmentationCase,
    SegmentationDataset,
)
from visprior.data.volumes import read_volume
from visprior.engine.config import config_to_dict
from visprior.fileio import write_json
from visprior.nets.registry import canonical_name, get_model
from visprior.seg.budget import FLIP_AXES, LOWRES_SPACING_STEP, plan_budget
from visprior.seg.config import Preprocessing, SegTrainConfig
from visprior.seg.memory_model import activation_elements_per_voxel, training_memory_gb
from visprior.seg.transforms import train_transforms

__all__ = [
    "CONFIGURATIONS",
    "CPU_BUDGET_GB",
    "CaseFingerprint",
    "ChannelFingerprint",
    "DatasetFingerprint",
    "Plan",
    "extract_fingerprint",
    "load_plan",
    "lowres_spacings",
    "make_plan",
    "plan_values",
    "planned_keys",
    "save_plan",
    "target_spacing",
]

PLAN_FILE = "visprior_plans.json"
SAMPLES_PER_CASE = 10_000  # foreground intensities kept per case, as nnU-Net does
ANISOTROPY = 3.0  # an axis this many times coarser than the others is planned apart
COARSE_AXIS_PERCENTILE = 10
PATCH_START_VOXELS = 256**3
LOWRES_PATCH_SHARE = 0.25  # a smaller full-resolution patch share calls for a 3d_lowres plan
LOWRES_MIN_REDUCTION = 2.0  # the lowres median image must be this many times smaller
# "auto": the budget plan where the plan file has one, else 3d_fullres
CONFIGURATIONS = ("auto", "3d_fullres", "3d_lowres", "budget")
RARE_CLASS_SHARE = 0.01  # rarer foreground classes get class-balanced crops
MAX_BATCH_SHARE = 0.05  # a batch covers at most this share of the dataset's voxels
CPU_BUDGET_GB = 8.0


@dataclass
class CaseFingerprint:
    name: str
    spacing: tuple[float, float, float]  # mm, RAS axis order
    shape: tuple[int, int, int]
    cropped_shape: tuple[int, int, int]  # after cropping to the non-zero image region
    class_voxels: dict[int, int]  # label value -> voxels


@dataclass
class ChannelFingerprint:
    name: str
    mean: float  # over foreground voxels (label > 0)
    std: float
    percentile_00_5: float
    percentile_99_5: float


@dataclass
class DatasetFingerprint:
    cases: list[CaseFingerprint]
    channels: list[ChannelFingerprint]

    @property
    def spacings(self) -> np.ndarray:
        return np.array([case.spacing for case in self.cases], dtype=np.float64)

    def median_shape_at(self, spacing: Sequence[float]) -> tuple[int, int, int]:
        """The median cropped shape after resampling every case to ``spacing``."""
        shapes = [
            np.array(case.cropped_shape) * np.array(case.spacing) / np.array(spacing)
            for case in self.cases
        ]
        return tuple(int(round(v)) for v in np.median(np.stack(shapes), axis=0))


@dataclass
class Plan:
    """What ``seg train`` takes from the fingerprint; every field is also a config key."""

    model: str
    spacing: tuple[float, float, float]
    normalization: list[dict[str, Any]]  # per channel: scheme, clip range, mean, std
    roi_size: tuple[int, int, int]
    batch_size: int
    crop_sampling: str
    memory_budget_gb: float
    estimated_memory_gb: float
    median_shape: tuple[int, int, int]  # after resampling to ``spacing``
    stride: int
    notes: list[str] = field(default_factory=list)
    # nnU-Net's 3d_lowres configuration, where one is made: spacing, roi_size, batch_size,
    # estimated_memory_gb and median_shape at the coarser spacing
    lowres: dict[str, Any] | None = None
    # ``--budget``: the plan timed on this machine for a budget in minutes (seg/budget.py)
    budget: dict[str, Any] | None = None


def extract_fingerprint(dataset: SegmentationDataset, seed: int = 0) -> DatasetFingerprint:
    """Read every training case once and describe it (see the module's docstring).

    Raises:
        DatasetError: every unreadable case, channel count that differs from
            ``dataset.json``, image and label of other shapes, and spacing of zero or below, all
            in one message (``problems`` lists them), as ``seg check`` reports them.
    """
    problems = ProblemList(num_cases=len(dataset.training))
    cases, samples = [], [[] for _ in dataset.channel_names]
    for index, case in enumerate(dataset.training):
        try:
            fingerprint, intensities = _case_fingerprint(case, dataset, seed + index)
        except _CaseProblem as problem:
            problems.append(DatasetProblem(problem.kind, str(problem), case.name))
            continue
        except DatasetError as error:
            problems.extend(error.problems or [DatasetProblem("unreadable", str(error), case.name)])
            continue
        cases.append(fingerprint)
        for channel, values in enumerate(intensities):
            samples[channel].append(values)
    if problems:
        raise DatasetError(
            f"{dataset.root}: cannot plan:\n{format_problems(problems)}", list(problems)
        )
    channels = []
    for name, values in zip(dataset.channel_names, samples, strict=True):
        pooled = np.concatenate(values) if values else np.zeros(0)
        if pooled.size == 0:
            pooled = np.zeros(1)  # no foreground anywhere: neutral statistics
        low, high = (float(v) for v in np.percentile(pooled, [0.5, 99.5]))
        channels.append(
            ChannelFingerprint(name, float(pooled.mean()), float(pooled.std()), low, high)
        )
    return DatasetFingerprint(cases, channels)


class _CaseProblem(ValueError):
    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def _case_fingerprint(
    case: SegmentationCase, dataset: SegmentationDataset, seed: int
) -> tuple[CaseFingerprint, list[np.ndarray]]:
    channels = []
    reference = None
    for path in case.images:
        image, voxels = read_volume(path, case.name)
        voxels = np.asarray(voxels, dtype=np.float32)
        if voxels.ndim == 4:  # MSD: the channels on the last axis
            channels += [voxels[..., c] for c in range(voxels.shape[-1])]
        else:
            channels.append(voxels)
        if reference is None:
            reference = image
    if len(channels) != dataset.num_channels:
        raise _CaseProblem(
            "channel-mismatch",
            f"{len(channels)} image channel(s), dataset.json declares {dataset.num_channels}",
        )
    if len({c.shape for c in channels}) > 1:
        raise _CaseProblem("shape-mismatch", "its image channels differ in shape")
    _, label = read_volume(case.label, case.name)
    label = np.asarray(label)
    if label.shape[:3] != channels[0].shape[:3]:
        raise _CaseProblem(
            "shape-mismatch",
            f"label shape {label.shape} differs from the image's {channels[0].shape}",
        )
    # The spacing resampling will use: the affine's column lengths, as MONAI reads them.
    zooms = np.linalg.norm(np.asarray(reference.affine, dtype=np.float64)[:3, :3], axis=0)
    if not np.all(np.isfinite(zooms)) or np.any(zooms <= 0):
        raise _CaseProblem("bad-spacing", f"spacing {tuple(zooms.tolist())} mm: must be above 0")
    # Training reorients to RAS before resampling: describe the axes in that order.
    ras_axis = nib.orientations.io_orientation(reference.affine)[:, 0].astype(int)
    spacing, shape = np.zeros(3), np.zeros(3, dtype=int)
    spacing[ras_axis], shape[ras_axis] = zooms, channels[0].shape[:3]
    nonzero = np.any(np.stack([c != 0 for c in channels]), axis=0)
    cropped = np.zeros(3, dtype=int)
    if nonzero.any():
        for axis in range(3):
            present = np.flatnonzero(nonzero.any(axis=tuple(a for a in range(3) if a != axis)))
            cropped[ras_axis[axis]] = int(present[-1] - present[0] + 1)
    values, counts = np.unique(label.astype(np.int64), return_counts=True)
    foreground = label > 0
    rng = np.random.default_rng(seed)
    intensities = []
    for channel in channels:
        inside = channel[foreground]
        if inside.size > SAMPLES_PER_CASE:
            inside = rng.choice(inside, SAMPLES_PER_CASE, replace=False)
        intensities.append(inside.astype(np.float64))
    fingerprint = CaseFingerprint(
        case.name,
        tuple(float(s) for s in spacing),
        tuple(int(s) for s in shape),
        tuple(int(s) for s in cropped),
        {int(v): int(c) for v, c in zip(values, counts, strict=True)},
    )
    return fingerprint, intensities


def target_spacing(fingerprint: DatasetFingerprint) -> tuple[tuple[float, float, float], str]:
    """The median spacing per axis, with nnU-Net's rule for one coarse axis; and a note that
    says which rule was used."""
    spacings = fingerprint.spacings
    target = np.median(spacings, axis=0)
    shape = np.array(fingerprint.median_shape_at(target))
    coarse = int(np.argmax(target))
    others = [axis for axis in range(3) if axis != coarse]
    coarse_spacing = target[coarse] > ANISOTROPY * max(target[others])
    few_slices = shape[coarse] * ANISOTROPY < min(shape[others])
    if coarse_spacing and few_slices:
        finer = np.percentile(spacings[:, coarse], COARSE_AXIS_PERCENTILE)
        target[coarse] = max(finer, max(target[others])) + 1e-5
        note = (
            f"axis {coarse} is over {ANISOTROPY:g}x coarser: its {COARSE_AXIS_PERCENTILE}th "
            f"percentile spacing {target[coarse]:.4g} mm instead of the median"
        )
    else:
        note = "median spacing per axis"
    return tuple(float(v) for v in target), note


def normalization(
    fingerprint: DatasetFingerprint, channel_names: Sequence[str]
) -> list[dict[str, Any]]:
    """Per channel: CT clipped to its foreground percentiles and z-scored with the foreground
    statistics; anything else z-scored per image."""
    schemes = []
    for name, channel in zip(channel_names, fingerprint.channels, strict=True):
        if name.strip().upper() == "CT":
            schemes.append(
                {
                    "channel": name,
                    "scheme": "ct",
                    "clip": [channel.percentile_00_5, channel.percentile_99_5],
                    "mean": channel.mean,
                    "std": max(channel.std, 1e-8),
                }
            )
        else:
            schemes.append({"channel": name, "scheme": "zscore"})
    return schemes


def make_plan(
    fingerprint: DatasetFingerprint,
    dataset: SegmentationDataset,
    model: str = "repuxnet",
    model_kwargs: dict[str, Any] | None = None,
    memory_gb: float | None = None,
    budget_minutes: float | None = None,
    started: float | None = None,
) -> Plan:
    """The plan for training ``model`` on ``dataset`` (see the module's docstring).

    ``memory_gb``: the budget; ``None`` takes the free memory of the GPU, else
    :data:`CPU_BUDGET_GB`. ``budget_minutes``: add a plan timed on this machine for that many
    minutes of planning, training, validation and prediction (:mod:`visprior.seg.budget`);
    ``started``: ``time.perf_counter()`` when planning began, so the fingerprint counts.
    """
    notes = []
    spacing, note = target_spacing(fingerprint)
    notes.append(note)
    budget, where = _memory_budget(memory_gb)
    notes.append(f"memory budget {budget:g} GB ({where})")
    kwargs = {
        "in_channels": dataset.num_channels,
        "out_channels": dataset.num_classes,
        **(model_kwargs or {}),
    }
    network = get_model(model, **kwargs)
    stride = int(getattr(network, "size_divisibility", 16))
    parameters = sum(p.numel() for p in network.parameters())
    per_voxel = activation_elements_per_voxel(network, dataset.num_channels, stride)

    def memory(patch: Sequence[int], batch: int) -> float:
        return training_memory_gb(parameters, per_voxel, patch, batch)

    dataset_voxels = sum(math.prod(c.cropped_shape) for c in fingerprint.cases)

    def patch_and_batch(at: Sequence[float], median: Sequence[int], voxels: float):
        """nnU-Net's patch at spacing ``at`` shrunk to the budget, and the batch it leaves."""
        inverse = 1 / np.array(at)
        start = inverse * (PATCH_START_VOXELS / math.prod(inverse)) ** (1 / 3)
        patch = [_stride_multiple(min(s, m), stride) for s, m in zip(start, median, strict=True)]
        while memory(patch, 2) > budget and any(p > stride for p in patch):
            ratios = [
                p / max(m, 1) if p > stride else -1 for p, m in zip(patch, median, strict=True)
            ]
            patch[int(np.argmax(ratios))] -= stride
        per_sample = memory(patch, 1) - memory(patch, 0)
        fits = max(1, int((budget - memory(patch, 0)) // per_sample)) if per_sample > 0 else 1
        cap = max(1, int(MAX_BATCH_SHARE * voxels // math.prod(patch)))
        return patch, max(min(fits, cap), min(2, fits))

    median = fingerprint.median_shape_at(spacing)
    patch, batch = patch_and_batch(spacing, median, dataset_voxels)
    if memory(patch, batch) > budget:
        notes.append(f"the smallest patch, {patch}, does not fit the budget")
    lowres = _lowres_plan(spacing, median, patch, dataset_voxels, patch_and_batch, memory)
    if lowres:
        notes.append(
            "3d_lowres at " + " x ".join(f"{s:.3g}" for s in lowres["spacing"]) + " mm "
            "(`seg train --configuration 3d_lowres`)"
        )
    timed = None
    crop_sampling = _crop_sampling(fingerprint)
    schemes = normalization(fingerprint, dataset.channel_names)
    if budget_minutes is not None:

        def elements_per_voxel(widths: dict[str, Any]) -> float:
            return activation_elements_per_voxel(
                get_model(model, **{**kwargs, **widths}), dataset.num_channels, stride
            )

        budget_crops = budget_crop_sampling(dataset.num_classes, crop_sampling)

        def data_seconds(at: Sequence[float], roi: Sequence[int]) -> float:
            return time_data_step(dataset, at, roi, budget_crops, schemes)

        timed = plan_budget(
            budget_minutes,
            model,
            dataset.num_channels,
            dataset.num_classes,
            spacing,
            fingerprint.median_shape_at,
            elements_per_voxel,
            stride,
            started=started,
            data_timer=data_seconds,
        )
        timed["crop_sampling"] = budget_crops
        if len(fingerprint.cases) < 2:
            # no case to hold out: train on the one there is (its validation is no test)
            timed["fold"] = -1
            timed["notes"].append("one training case: trained on it with no held-out fold")
    return Plan(
        budget=timed,
        model=model,
        spacing=spacing,
        normalization=schemes,
        roi_size=tuple(int(p) for p in patch),
        batch_size=int(batch),
        crop_sampling=crop_sampling,
        memory_budget_gb=float(budget),
        estimated_memory_gb=round(memory(patch, batch), 3),
        median_shape=median,
        stride=stride,
        notes=notes,
        lowres=lowres,
    )


def lowres_spacings(
    spacing: Sequence[float], median: Sequence[int], patch_voxels_at: Any
) -> tuple[float, float, float] | None:
    """nnU-Net's 3d_lowres spacing (see the module's docstring), or ``None`` when none is made.

    ``patch_voxels_at(spacing, median_shape)``: the voxels of the patch planned there.
    """
    full = np.array(spacing, dtype=np.float64)
    full_voxels = math.prod(median)
    if patch_voxels_at(tuple(full), tuple(median)) / full_voxels >= LOWRES_PATCH_SHARE:
        return None
    low = full.copy()
    median_voxels, patch_voxels = float(full_voxels), 0.0
    while patch_voxels / median_voxels < LOWRES_PATCH_SHARE:
        fine = low.max() / low > 2
        if fine.any():
            low[fine] *= LOWRES_SPACING_STEP
        else:
            low *= LOWRES_SPACING_STEP
        shape = full / low * np.array(median)
        median_voxels = float(np.prod(shape))
        patch_voxels = patch_voxels_at(tuple(low), tuple(int(round(s)) for s in shape))
    if full_voxels / median_voxels < LOWRES_MIN_REDUCTION:
        return None
    return tuple(float(s) for s in low)


def _lowres_plan(spacing, median, patch, dataset_voxels, patch_and_batch, memory):
    def patch_voxels_at(at, shape):
        reduction = math.prod(shape) / math.prod(median)
        return math.prod(patch_and_batch(at, shape, dataset_voxels * reduction)[0])

    low = lowres_spacings(spacing, median, patch_voxels_at)
    if low is None:
        return None
    shape = tuple(int(round(s)) for s in np.array(spacing) / np.array(low) * np.array(median))
    reduction = math.prod(shape) / math.prod(median)
    low_patch, low_batch = patch_and_batch(low, shape, dataset_voxels * reduction)
    return {
        "spacing": list(low),
        "roi_size": [int(p) for p in low_patch],
        "batch_size": int(low_batch),
        "estimated_memory_gb": round(memory(low_patch, low_batch), 3),
        "median_shape": list(shape),
    }


def time_data_step(
    dataset: SegmentationDataset,
    spacing: Sequence[float],
    roi_size: Sequence[int],
    crop_sampling: str,
    schemes: list[dict[str, Any]],
    draws: int = 3,
) -> float:
    """The median seconds of one training step's crops and augmentation, drawn from the first
    training case preprocessed at ``spacing`` (the preprocessing is cached, as in training)."""
    import statistics
    import time

    from monai.data import CacheDataset

    config = SegTrainConfig(
        dataset=str(dataset.root),
        preprocessing=Preprocessing(
            intensity="planned",
            channel_normalization=tuple(schemes),
            spacing=tuple(float(s) for s in spacing),
        ),
        roi_size=tuple(int(s) for s in roi_size),
        crop_sampling=crop_sampling,
        flip_axes=FLIP_AXES,
    )
    data = CacheDataset(
        dataset.data_dicts(dataset.training[:1]),
        train_transforms(config, dataset.num_classes),
        num_workers=0,
        progress=False,
    )
    data[0]  # warm-up
    times = []
    for _ in range(draws):
        start = time.perf_counter()
        data[0]
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _stride_multiple(size: float, stride: int) -> int:
    """``size`` rounded down to a multiple of ``stride``, at least one stride."""
    return max(stride, int(size // stride) * stride)


def _memory_budget(memory_gb: float | None) -> tuple[float, str]:
    if memory_gb is not None:
        if not memory_gb > 0:
            raise ValueError(f"--gpu-memory-gb must be above 0, got {memory_gb}")
        return float(memory_gb), "--gpu-memory-gb"
    if torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info()
        return round(free / 2**30, 1), "free memory of the GPU"
    return CPU_BUDGET_GB, "no GPU: the CPU default"


def budget_crop_sampling(num_classes: int, planned: str) -> str:
    """A budget run's crops: class-balanced wherever there are two or more foreground classes
    (background counted in ``num_classes``), so that a run of a thousand steps sees each class
    early, whatever its share of the voxels."""
    return "classes" if num_classes >= 3 else planned


def _crop_sampling(fingerprint: DatasetFingerprint) -> str:
    voxels: dict[int, int] = {}
    for case in fingerprint.cases:
        for value, count in case.class_voxels.items():
            if value > 0:
                voxels[value] = voxels.get(value, 0) + count
    foreground = sum(voxels.values())
    if foreground and min(voxels.values()) < RARE_CLASS_SHARE * foreground:
        return "classes"
    return "pos_neg"


def save_plan(path: str | os.PathLike, fingerprint: DatasetFingerprint, plan: Plan) -> Path:
    """Write the fingerprint and the plan as JSON, atomically."""
    path = Path(path)
    content = {
        "format": "visprior-plan-1",
        "fingerprint": dataclasses.asdict(fingerprint),
        "plan": dataclasses.asdict(plan),
    }
    return write_json(path, content)


def format_plan(plan: Plan) -> str:
    """A short terminal table of the plan."""
    schemes = ", ".join(f"{n['channel']}: {n['scheme']}" for n in plan.normalization)
    rows = [
        ("network", f"{plan.model} (stride {plan.stride})"),
        ("spacing (mm)", " x ".join(f"{s:.3g}" for s in plan.spacing)),
        ("median shape", " x ".join(map(str, plan.median_shape))),
        ("patch (roi_size)", " x ".join(map(str, plan.roi_size))),
        ("batch size", str(plan.batch_size)),
        ("crop sampling", plan.crop_sampling),
        ("normalisation", schemes),
        ("memory", f"{plan.estimated_memory_gb:.2f} of {plan.memory_budget_gb:g} GB"),
    ]
    if plan.budget:
        b = plan.budget
        widths = ", ".join(f"{k} {v}" for k, v in b["model_kwargs"].items()) or "default"
        rows += [
            (f"budget {b['minutes']:g} min", f"timed here in {b['planning_seconds']:g} s"),
            ("  widths", widths),
            ("  spacing (mm)", " x ".join(f"{s:.3g}" for s in b["spacing"])),
            ("  patch, batch", " x ".join(map(str, b["roi_size"])) + f", {b['batch_size']}"),
            ("  precision", b["precision"]),
            ("  step", f"{b['expected_step_seconds']:.2f} s"
             + ("" if b["step_time_measured"] else " (predicted)")),
            ("  iterations", f"about {b['iterations']} in {b['training_minutes']:.1f} min"),
            ("  validation", f"every {b['val_every']} iterations"),
            ("  flips", "axes " + ", ".join(map(str, b["flip_axes"]))),
            ("  crop sampling", b.get("crop_sampling", plan.crop_sampling)),
        ]  # fmt: skip
    if plan.lowres:
        low = plan.lowres
        rows.append(
            (
                "3d_lowres",
                " x ".join(f"{s:.3g}" for s in low["spacing"])
                + " mm, patch "
                + " x ".join(map(str, low["roi_size"]))
                + f", batch {low['batch_size']}",
            )
        )
    width = max(len(name) for name, _ in rows)
    lines = [f"{name:<{width}}  {value}" for name, value in rows]
    notes = plan.notes + ([f"budget: {n}" for n in plan.budget["notes"]] if plan.budget else [])
    return "\n".join(lines + [f"note: {note}" for note in notes])


def load_plan(path: str | os.PathLike) -> dict[str, Any]:
    """The ``plan`` section of a plan file written by ``seg plan``.

    Raises:
        ValueError: the file is missing, not JSON, or not a visprior plan (named).
    """
    path = Path(path)
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"plan file not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a readable plan file ({error})") from None
    plan = content.get("plan") if isinstance(content, dict) else None
    needed = ("model", "spacing", "normalization", "roi_size", "batch_size", "crop_sampling")
    if content.get("format") != "visprior-plan-1" or not isinstance(plan, dict):
        raise ValueError(f"{path}: not a plan written by `visprior seg plan`")
    missing = [key for key in needed if key not in plan]
    if missing:
        raise ValueError(f"{path}: the plan lacks {', '.join(missing)}; run `seg plan` again")
    return plan


def plan_values(
    plan: dict[str, Any], model: str, configuration: str = "auto"
) -> tuple[dict[str, Any], list[str]]:
    """The config values a plan sets for training ``model`` in ``configuration``, and notes on
    what it left out.

    Spacing, normalisation and crop sampling hold for any network; the patch and batch size
    only for the network the plan was made for (another one has another stride and memory).

    Raises:
        ValueError: an unknown configuration, or 3d_lowres where the plan made none.
    """
    if configuration not in CONFIGURATIONS:
        raise ValueError(
            f"configuration {configuration!r}: choose one of {', '.join(CONFIGURATIONS)}"
        )
    if configuration == "auto":
        configuration = "budget" if plan.get("budget") else "3d_fullres"
    if configuration == "budget":
        return _budget_values(plan, model)
    if configuration == "3d_lowres":
        if not plan.get("lowres"):
            raise ValueError(
                "the plan has no 3d_lowres configuration: its full-resolution patch already "
                f"covers {LOWRES_PATCH_SHARE:.0%} of the median image, or a coarser spacing "
                f"would not make the image {LOWRES_MIN_REDUCTION:g}x smaller"
            )
        plan = {**plan, **plan["lowres"]}
    values = _data_values(plan, plan["spacing"])
    notes = []
    if canonical_name(plan["model"]) == canonical_name(model):
        values.update(roi_size=list(plan["roi_size"]), batch_size=plan["batch_size"])
    else:
        notes.append(
            f"the plan's patch and batch size are for {plan['model']}, not {model}: not used "
            f"(run `visprior seg plan --model {model}`)"
        )
    return values, notes


def _data_values(plan: dict[str, Any], spacing: Sequence[float]) -> dict[str, Any]:
    """What any network takes from a plan: the spacing, normalisation and crop sampling."""
    return {
        "preprocessing": {
            "spacing": list(spacing),
            "intensity": "planned",
            "channel_normalization": list(plan["normalization"]),
        },
        "crop_sampling": plan["crop_sampling"],
    }


def _budget_values(plan: dict[str, Any], model: str) -> tuple[dict[str, Any], list[str]]:
    """The config values of a ``--budget`` plan: its widths, spacing, patch, precision and a
    schedule that ends with the budget's training share."""
    budget = plan.get("budget")
    if not budget:
        raise ValueError("the plan has no budget configuration: run `seg plan --budget MIN`")
    if canonical_name(plan["model"]) != canonical_name(model):
        raise ValueError(
            f"the budget plan is timed for {plan['model']}, not {model}: run "
            f"`visprior seg plan --budget {budget['minutes']:g} --model {model}`"
        )
    values = _data_values(plan, budget["spacing"])
    values |= {
        "crop_sampling": budget.get("crop_sampling", plan["crop_sampling"]),
        "model_kwargs": dict(budget["model_kwargs"]),
        "roi_size": list(budget["roi_size"]),
        "batch_size": budget["batch_size"],
        "crops_per_volume": budget["crops_per_volume"],
        "precision": budget["precision"],
        # the wall budget ends training, in time for the last validation; the poly schedule
        # runs over it, and the iterations only cap it
        "budget_minutes": budget["minutes"],
        "iterations": 2 * budget["iterations"],
        "lr_schedule": budget["lr_schedule"],
        "lr": budget["lr"],
        "val_every": budget["val_every"],
        "flip_axes": list(budget["flip_axes"]),
        # validation fits the budget: the fewest sliding windows (no overlap)
        "val_overlap": 0.0,
    }
    if budget.get("fold") is not None:
        values["fold"] = budget["fold"]
    return values, []


def planned_keys(before: Any, after: Any) -> tuple[str, ...]:
    """Dotted config keys whose value the plan changed: those that differ between the config
    made without the plan (``before``) and with it (``after``)."""
    old, new = config_to_dict(before), config_to_dict(after)
    keys = []
    for key, value in new.items():
        if isinstance(value, dict):
            keys += [f"{key}.{k}" for k, v in value.items() if old[key].get(k) != v]
        elif old[key] != value:
            keys.append(key)
    return tuple(keys)
