"""``visprior demo``: the whole 3D pipeline on real anatomy that ships with a package.

Writes the FSL MNI152 template with its Harvard-Oxford subcortical structures as an nnU-Net
dataset (``data/brain_atlas.py``: left hemisphere to train on, right hemisphere held out),
checks it, plans for the time given on this machine (``seg plan --budget``: widths, spacing,
patch and precision timed here), trains, predicts the right hemisphere in its original 1 mm
geometry with the fused network, mirrored over the left-right axis it trained with flips (as
``seg predict --tta``; nnU-Net mirrors by default too), evaluates Dice / HD95 / surface Dice
per structure and draws an overlay. Every step is the ``visprior seg`` command a user would run.

Study (k) (``benchmarks/budget_plan``) found the timed plan as good as the hand-tuned settings
on this task, so the plan is the default, but for its spacing: the demo resamples to
:data:`PLANNED_SPACING_MM` (study (l)'s spacing pilot). ``settings="hand-tuned"`` (and any
fixed ``iterations``) keeps the fixed settings of :func:`demo_train_config`.

The command ``visprior demo`` (``visprior/cli/demo.py``) fills a :class:`DemoConfig` and calls
:func:`run_demo`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from visprior.data import check_dataset, format_problems, load_dataset
from visprior.data.brain_atlas import write_hemisphere_dataset
from visprior.engine.config import load_config
from visprior.nets.registry import get_model, list_models
from visprior.seg.budget import STEPS_TARGET
from visprior.seg.config import Preprocessing, SegTrainConfig
from visprior.seg.evaluate import evaluate_folder, format_table
from visprior.seg.plan import extract_fingerprint, load_plan, make_plan, plan_values, save_plan
from visprior.seg.postprocess import load_decision
from visprior.seg.predict import load_predictor, predict_files
from visprior.seg.train import train_segmentation
from visprior.viz.overlay import save_overlay_png

__all__ = [
    "DEMO_MODEL_SIZES",
    "SETTINGS",
    "DemoConfig",
    "demo_train_config",
    "planned_train_config",
    "run_demo",
    "run_to_resume",
]

# "planned": `seg plan --budget MINUTES` on this machine; "hand-tuned": the fixed settings below
SETTINGS = ("planned", "hand-tuned")
HAND_TUNED_SPACING_MM = 1.5
HAND_TUNED_ROI = 48
HAND_TUNED_VAL_EVERY = 250
# The planned demo trains at this spacing with the plan's patch, widths and precision. The
# plan keeps 1.0 mm where it expects its 900 steps (the finer spacing wins when the work a
# step is equal) and 1.27 mm where it does not; at 1.6 mm the hemisphere's foreground is 44
# voxels wide, so the plan would clip its patch to 32 there. Study (l)'s spacing pilot (AMD,
# 48^3 crops, same work a step): 1.6 mm minus 1.0 mm, paired by seed, +0.022 [+0.012, +0.032]
# held-out mean Dice (0.905-0.909 on 3 seeds); a crop that spans the hemisphere's width gives
# the large kernels the context they need.
PLANNED_SPACING_MM = 1.6

# Widths that train in minutes on 2 CPU cores; the rest of each network is its default.
DEMO_MODEL_SIZES: dict[str, dict] = {
    "repuxnet": {"feature_size": 16, "hidden_size": 128},
    "repuxnet_plain": {"feature_size": 16, "hidden_size": 128},
    "repuxnet_sr": {"feature_size": 16, "hidden_size": 128},
    "uxnet": {"feature_size": 16, "hidden_size": 128},
    "swinunetr": {"feature_size": 12},
    "unet": {"feature_size": 8},
    "unetr": {"feature_size": 8, "hidden_size": 96, "num_heads": 4, "mlp_dim": 192},
    "mednext_s": {"feature_size": 16},
    "mednext_b": {"feature_size": 16},
    "mednext_m": {"feature_size": 16},
    "mednext_l": {"feature_size": 16},
    "segresnet": {"feature_size": 8},
}


@dataclass
class DemoConfig:
    model: str = "repuxnet"
    output: str = "demo-output"
    minutes: float = 10.0  # planned: wall time for plan, training and validation
    iterations: int | None = None  # a fixed count instead of the time budget (hand-tuned)
    settings: str | None = None  # one of SETTINGS; None: planned, hand-tuned with iterations
    kernel_size: int | None = None  # None: the network's own
    init_checkpoint: str | None = None  # checkpoint file to start from
    upkern: bool = False
    # None: PLANNED_SPACING_MM with the plan, else the hand-tuned values above
    spacing_mm: float | None = None
    roi: int | None = None
    val_every: int | None = None
    seed: int = 0
    # "32", "bf16", "16-mixed"; auto: the plan's, else (hand-tuned) float32 on the CPU
    precision: str = "auto"
    resume: bool = False  # continue the latest run of this model in output from its checkpoint

    def resolved_settings(self) -> str:
        if self.settings is None:
            return "hand-tuned" if self.iterations else "planned"
        if self.settings not in SETTINGS:
            raise ValueError(f"settings {self.settings!r}: choose one of {', '.join(SETTINGS)}")
        if self.settings == "planned" and self.iterations:
            raise ValueError(
                "--settings planned plans for --minutes of wall time; a fixed --iterations "
                "goes with --settings hand-tuned"
            )
        return self.settings


def run_demo(config: DemoConfig) -> dict:
    """Run every step; return the run folder, the evaluation and the files written."""
    started = time.perf_counter()  # a planned run's budget counts from here
    _check_model(config.model)  # before any file is written
    settings = config.resolved_settings()
    output = Path(config.output)
    print(f"visprior demo: {config.model} on Harvard-Oxford subcortical structures (MNI152)")
    dataset = write_hemisphere_dataset(output / "data")
    problems = check_dataset(dataset)
    print(f"[1/5] dataset {dataset}: {format_problems(problems).splitlines()[-1]}")
    if problems:
        raise ValueError(f"the demo dataset has problems:\n{format_problems(problems)}")

    if config.resume:
        run_dir = run_to_resume(output, config.model)
    else:
        run_dir = output / "runs" / f"{config.model}-{time.strftime('%Y%m%d-%H%M%S')}"
    resumed = " (resumed from its last checkpoint)" if config.resume else ""
    expected = None
    if settings == "planned":
        print(f"[2/5] planning for {config.minutes:g} min of wall time on this machine")
        train_config, expected = planned_train_config(config, dataset, run_dir, started)
        print(f"      training -> {run_dir}{resumed}")
    else:
        train_config = demo_train_config(config, dataset, run_dir)
        _print_plan_beside(dataset, train_config)
        fixed = f"{config.iterations} iterations" if config.iterations else None
        print(f"[2/5] training for {fixed or f'{config.minutes:g} min'} -> {run_dir}{resumed}")
    result = train_segmentation(train_config, resume=config.resume)
    print(f"      {_steps_made(result.iteration, result.training_seconds, expected)}")
    if result.iteration == 0:
        raise ValueError(
            f"--minutes {config.minutes:g} left no time to train after planning: give more"
        )

    print(
        "[3/5] predicting the held-out right hemisphere with the fused network, mirrored "
        "left-right (no post-processing: the one training volume leaves no held-out case to "
        "choose it on)"
    )
    predictions = _predict(run_dir, dataset, config.resume)

    print("[4/5] evaluating against the atlas labels")
    evaluation = _evaluate(predictions, dataset, run_dir / "evaluation", config.resume)

    overlay = run_dir / "overlay.png"
    _overlay(dataset, predictions[0], overlay)
    print(f"[5/5] overlay {overlay}")
    print(f"mean foreground Dice on the held-out hemisphere: {evaluation.mean_foreground_dice:.3f}")
    return {
        "run_dir": run_dir,
        "evaluation": evaluation,
        "predictions": predictions,
        "overlay": overlay,
        "iterations": result.iteration,
    }


def run_to_resume(output: Path, model: str) -> Path:
    """The latest run of ``model`` under ``output/runs`` that saved a checkpoint."""
    runs = sorted(
        run
        for run in (output / "runs").glob(f"{model}-*")
        if (run / "checkpoints" / "last.pt").is_file()
    )
    if not runs:
        raise ValueError(f"--resume: no {model} run with a checkpoint under {output / 'runs'}")
    return runs[-1]


def demo_train_config(config: DemoConfig, dataset: Path, run_dir: Path) -> SegTrainConfig:
    """The ``seg train`` config the demo runs: its widths, crop and budget on the atlas."""
    _check_model(config.model)
    kwargs = dict(DEMO_MODEL_SIZES.get(config.model, {}))
    if config.kernel_size is not None:
        kwargs["kernel_size"] = config.kernel_size
    roi = _crop_for(config.model, config.roi or HAND_TUNED_ROI, kwargs)
    if config.model == "unetr":
        kwargs["img_size"] = roi
    train_config = SegTrainConfig(
        dataset=str(dataset),
        output=str(run_dir),
        model=config.model,
        model_kwargs=kwargs,
        preprocessing=Preprocessing(
            intensity="mri", spacing=(config.spacing_mm or HAND_TUNED_SPACING_MM,) * 3
        ),
        fold=-1,  # one training volume: the held-out hemisphere is the test set
        # the poly schedule runs over the iterations, or over the time budget
        iterations=config.iterations or 100_000,
        time_limit_minutes=math.inf if config.iterations else config.minutes,
        init_checkpoint=config.init_checkpoint,
        upkern=config.upkern,
        roi_size=(roi,) * 3,
        flip_axes=(0,),  # left-right flips: the right hemisphere mirrors the left
        crop_sampling="classes",  # the accumbens is 1/60 of the labelled voxels
        val_every=config.val_every or HAND_TUNED_VAL_EVERY,
        lr=1e-3,
        lr_schedule="poly",
        seed=config.seed,
        precision=config.precision,
        num_workers=0,
    )
    return train_config


def planned_train_config(
    config: DemoConfig, dataset: Path, run_dir: Path, started: float | None = None
) -> tuple[SegTrainConfig, dict]:
    """What ``seg plan --budget MINUTES`` then ``seg train --budget MINUTES`` would train, and
    the plan's timing (``budget``). The plan goes to ``output/plans/<run>.json``; the options
    the user gave win over it. A resumed run keeps the config and plan it started with.

    ``started``: when the run began (``time.perf_counter()``); the budget counts from there.
    """
    saved = run_dir / "config.yaml"
    if config.resume and saved.is_file():
        train = load_config(SegTrainConfig, saved)
        if not train.plan_file:
            raise ValueError(f"--resume: {run_dir} was trained with the hand-tuned settings")
        return train, load_plan(train.plan_file)["budget"]
    data = load_dataset(dataset)
    fingerprint = extract_fingerprint(data)
    plan = make_plan(
        fingerprint, data, config.model, budget_minutes=config.minutes, started=started
    )
    plan_file = save_plan(Path(config.output) / "plans" / f"{run_dir.name}.json", fingerprint, plan)
    values, _ = plan_values(load_plan(plan_file), config.model, "budget")
    if config.kernel_size is not None:
        values["model_kwargs"]["kernel_size"] = config.kernel_size
    values["preprocessing"]["spacing"] = [config.spacing_mm or PLANNED_SPACING_MM] * 3
    if config.roi is not None:
        roi = _crop_for(config.model, config.roi, values["model_kwargs"])
        values["roi_size"] = [roi] * 3
    if config.precision != "auto":
        values["precision"] = config.precision
    if config.val_every is not None:
        values["val_every"] = config.val_every
    train = load_config(
        SegTrainConfig,
        base=values,
        dataset=str(dataset),
        output=str(run_dir),
        model=config.model,
        fold=-1,  # one training volume: the held-out hemisphere is the test set
        seed=config.seed,
        init_checkpoint=config.init_checkpoint,
        upkern=config.upkern,
        num_workers=0,
        plan_file=str(plan_file),
    )
    budget = plan.budget
    widths = "/".join(str(v) for v in train.model_kwargs.values())
    print(
        f"      plan {plan_file}: widths {widths}, "
        f"spacing {' x '.join(f'{v:.3g}' for v in train.preprocessing.spacing)} mm, "
        f"patch {' x '.join(str(v) for v in train.roi_size)}, {train.precision}, "
        f"{train.crop_sampling} crops; expected {budget['iterations']} steps of "
        f"{budget['expected_step_seconds']:.2f} s (planned in {budget['planning_seconds']:.0f} s)"
    )
    if (
        config.spacing_mm is None
        and list(plan.budget["spacing"]) != values["preprocessing"]["spacing"]
    ):
        planned = " x ".join(f"{v:.3g}" for v in plan.budget["spacing"])
        print(
            f"      spacing {PLANNED_SPACING_MM:g} mm instead of the plan's {planned} mm: the "
            "same work a step, and crops that span the hemisphere (study (l)'s spacing pilot)"
        )
    advice = short_budget_advice(budget["iterations"], config.minutes)
    if advice:
        print(f"      {advice}")
    return train, budget


def short_budget_advice(expected_steps: int, minutes: float) -> str | None:
    """What to give a machine that the plan expects to make clearly fewer than the
    :data:`~visprior.seg.budget.STEPS_TARGET` steps the demo needs; ``None`` otherwise."""
    if expected_steps >= 0.8 * STEPS_TARGET:
        return None
    needed = math.ceil(minutes * STEPS_TARGET / max(expected_steps, 1))
    return (
        f"this machine is expected to make {expected_steps} steps in {minutes:g} min; the demo "
        f"learns every structure (the accumbens last) in about {STEPS_TARGET}: "
        f"`visprior demo --minutes {needed}` gives it those"
    )


def _steps_made(steps: int, seconds: float, expected: dict | None) -> str:
    """The steps made, beside what the plan expected."""
    made = f"{steps} steps in {seconds / 60:.1f} min of training"
    if not steps or expected is None:
        return made
    return (
        f"{made}, {seconds / steps:.2f} s a step; the plan expected {expected['iterations']} "
        f"steps of {expected['expected_step_seconds']:.2f} s"
    )


def _check_model(name: str) -> None:
    if name not in list_models():
        raise ValueError(
            f"unknown model name {name!r}; registered models: {', '.join(list_models())}"
        )


def _print_plan_beside(dataset: Path, train: SegTrainConfig) -> None:
    """What ``seg plan`` would choose for this dataset on a GPU, beside the demo's own CPU
    settings, which are the ones used."""

    data = load_dataset(dataset)
    plan = make_plan(extract_fingerprint(data), data, train.model, train.model_kwargs, 8.0)
    schemes = ", ".join(n["scheme"] for n in plan.normalization)
    rows = [
        ("spacing (mm)", plan.spacing, train.preprocessing.spacing),
        ("patch", plan.roi_size, train.roi_size),
        ("batch size", plan.batch_size, train.batch_size),
        ("crop sampling", plan.crop_sampling, train.crop_sampling),
        ("normalisation", schemes, train.preprocessing.intensity),
    ]

    def shown(value: Any) -> str:
        if isinstance(value, (tuple, list)):
            return " x ".join(f"{v:g}" for v in value)
        return str(value)

    print("      `seg plan` for an 8 GB GPU        the demo's CPU settings (used)")
    for name, planned, used in rows:
        print(f"      {name:<14}{shown(planned):<20}{shown(used)}")


def _crop_for(model: str, roi: int, kwargs: dict) -> int:
    """``roi`` rounded up to the network's input multiple (SwinUNETR: 32), said aloud."""

    divisor = getattr(get_model(model, out_channels=2, **kwargs), "size_divisibility", 1)
    fitted = -(-roi // divisor) * divisor
    if fitted != roi:
        print(f"      {model} needs crops in multiples of {divisor}: {fitted}^3 instead of {roi}^3")
    return fitted


def _predict(run_dir: Path, dataset: Path, resumed: bool) -> list[Path]:
    """The held-out hemisphere, the softmax averaged with the left-right mirror's (the flip
    training used: +0.014 to +0.028 mean Dice on the 3 runs of study (l)'s recipe pilot, for
    a few seconds more);
    a resumed run replaces what its earlier part predicted."""
    predictor = load_predictor(run_dir, tta=True)
    largest = load_decision(run_dir) or False
    output = run_dir / "predictions"
    return predict_files(
        predictor,
        [dataset / "imagesTs"],
        output,
        largest_component=largest,
        overwrite=resumed,
    )


def _evaluate(predictions: list[Path], dataset: Path, out_dir: Path, resumed: bool):
    """Scores against the atlas; a resumed run replaces its earlier part's scores."""
    classes = {n: v for n, v in load_dataset(dataset).labels.items() if v}
    evaluation = evaluate_folder(
        predictions[0].parent,
        dataset / "labelsTs",
        classes=classes,
        out_dir=out_dir,
        overwrite=resumed,
    )
    print(format_table(evaluation))
    return evaluation


def _overlay(dataset: Path, prediction: Path, path: Path) -> None:

    names = {v: n for n, v in load_dataset(dataset).labels.items() if v}
    image = nib.load(dataset / "imagesTs" / "right_0000.nii.gz")
    label = np.asarray(nib.load(dataset / "labelsTs" / "right.nii.gz").dataobj)
    predicted = np.asarray(nib.load(prediction).dataobj)
    save_overlay_png(
        np.asarray(image.dataobj, dtype=np.float32),
        {"atlas": label, "prediction": predicted},
        path,
        class_names=names,
        spacing=image.header.get_zooms()[:3],
    )
