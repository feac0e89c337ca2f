"""``visprior seg check | plan | train | cv | predict | evaluate``: the 3D segmentation commands.

The parser is built from light modules; each command imports its heavy work (MONAI pipelines,
training) when it runs.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from visprior.cli.options import (
    add_device,
    add_force_flag,
    add_init,
    add_iterations,
    add_model,
    add_output,
    add_precision,
    add_roi,
    add_train_arguments,
    add_upkern,
    dispatch,
    train_config_from_args,
)
from visprior.seg.config import CPU_BUDGET_NETWORK, METHOD_NETWORK, SegTrainConfig

__all__ = ["add_commands", "run"]

DATASET_HELP = "nnU-Net or MSD dataset folder"


def add_commands(commands: argparse._SubParsersAction) -> None:
    seg = commands.add_parser("seg", help="3D segmentation: check, plan, train, predict, evaluate")
    actions = seg.add_subparsers(dest="seg_command", required=True)
    check = actions.add_parser("check", help="report every problem of a dataset at once")
    check.add_argument("dataset", type=Path, help=DATASET_HELP)
    _add_plan(actions)
    _add_train_and_cv(actions)
    _add_predict(actions)
    _add_evaluate(actions)


def _add_plan(actions: argparse._SubParsersAction) -> None:
    plan = actions.add_parser(
        "plan", help="fingerprint a dataset and plan spacing, patch, batch and normalisation"
    )
    plan.add_argument("dataset", type=Path, help=DATASET_HELP)
    add_output(plan, "plan file (default DATASET/visprior_plans.json)")
    add_model(
        plan,
        f"{METHOD_NETWORK}; {CPU_BUDGET_NETWORK} for a --budget plan on a machine without a GPU",
        "registered network the plan is for, and `seg train` trains",
    )
    plan.add_argument(
        "--gpu-memory-gb",
        type=float,
        help="memory budget in GB (default: the GPU's free memory, else 8 on the CPU); "
        "given alone, plans for a GPU of that memory without timing anything",
    )
    plan.add_argument(
        "--budget",
        type=float,
        metavar="MIN",
        help="also plan for MIN minutes of planning, training, validation and prediction on "
        "this machine, timing candidate steps here (default on a machine without a GPU: "
        "60, unless --gpu-memory-gb is given)",
    )
    add_force_flag(plan, "replace an earlier plan file")


def _add_train_and_cv(actions: argparse._SubParsersAction) -> None:
    defaults = SegTrainConfig()
    train = actions.add_parser(
        "train",
        help="train a network (recipe defaults; see seg/config.py for every option)",
        description="Options apply in this order: defaults, the dataset's plan, --config, "
        "flags, --set.",
    )
    _add_training_options(train, defaults)
    train.add_argument(
        "--fold",
        type=int,
        help=f"cross-validation fold, -1: train on every case (default {defaults.fold})",
    )
    cv = actions.add_parser(
        "cv",
        help="train every fold one after another (resumable), score the merged validation, "
        "choose the ensemble's post-processing",
        description="The options of `seg train`, for each fold; -o DIR holds fold_<k>/.",
    )
    _add_training_options(cv, defaults)


def _add_training_options(parser: argparse.ArgumentParser, defaults: SegTrainConfig) -> None:
    """What ``seg train`` and ``seg cv`` both take."""
    add_train_arguments(parser, defaults, DATASET_HELP)
    add_iterations(
        parser, f"optimizer steps in total, resumed runs included (default {defaults.iterations})"
    )
    add_roi(parser, defaults.roi_size)
    plans = parser.add_mutually_exclusive_group()
    plans.add_argument(
        "--plan",
        type=Path,
        metavar="FILE",
        help="take spacing, normalisation, patch, batch and crop sampling from this `seg plan` "
        "file (default: DATASET/visprior_plans.json when it exists)",
    )
    plans.add_argument(
        "--no-plan",
        action="store_true",
        help="ignore the dataset's plan file (default: use it when it exists)",
    )
    parser.add_argument(
        "--budget",
        type=float,
        dest="budget_minutes",
        metavar="MIN",
        help="a budget in wall time for the whole run: the plan's timing (`seg plan --budget "
        "MIN` first), training, validation and the held-out prediction; training stops in "
        "time for the rest (--time-limit counts training alone) (default: none)",
    )
    parser.add_argument(
        "--configuration",
        choices=("auto", "3d_fullres", "3d_lowres", "budget"),
        help="which of the plan's configurations to train: 3d_lowres is nnU-Net's coarser "
        "spacing, where the plan made one, trained on its own; budget is `seg plan --budget`'s "
        "plan timed on this machine; auto: budget where the plan has one, else 3d_fullres "
        f"(default {defaults.configuration})",
    )
    add_init(
        parser,
        "fine-tune from this visprior or authors' checkpoint file; weights that do not fit "
        "(a new label set's head) start fresh (default: none)",
    )
    add_upkern(parser)


def _add_predict(actions: argparse._SubParsersAction) -> None:
    predict = actions.add_parser("predict", help="label volumes in their original geometry")
    predict.add_argument(
        "checkpoint", help="run folder, checkpoint file, or `seg cv` folder (its folds' ensemble)"
    )
    predict.add_argument(
        "inputs",
        nargs="+",
        type=Path,
        help="NIfTI files or folders; a folder without NIfTI files is read as DICOM (itself "
        "one case, or each subfolder one case; one series per channel)",
    )
    add_output(predict, "output folder", required=True)
    predict.add_argument(
        "--format",
        dest="output_format",
        choices=("nifti", "dicom-seg"),
        default="nifti",
        help="nifti: {case}.nii.gz; dicom-seg: {case}.dcm, a DICOM Segmentation of the case's "
        "source series (DICOM input only) (default %(default)s)",
    )
    predict.add_argument(
        "--probabilities", action="store_true", help="also write the softmax (default: labels only)"
    )
    add_force_flag(predict, "replace earlier predictions (an input is never replaced)")
    predict.add_argument(
        "--postprocess",
        choices=("auto", "none", "largest"),
        default="auto",
        help="auto: the run's post-processing chosen on held-out cases (postprocessing.json), "
        "none without one; largest: each class's largest connected component; none "
        "(default %(default)s)",
    )
    predict.add_argument(
        "--largest-component",
        dest="postprocess",
        action="store_const",
        const="largest",
        help="the same as --postprocess largest (default: off)",
    )
    _add_predict_ensemble_options(predict)
    _add_predict_runtime_options(predict)


def _add_predict_ensemble_options(parser: argparse.ArgumentParser) -> None:
    """What is averaged: other runs, mirrored inputs, overlapping windows."""
    predict = parser.add_argument_group("averaging")
    predict.add_argument(
        "--ensemble",
        nargs="+",
        metavar="RUN",
        help="average the probabilities with these runs too; they must share labels and "
        "preprocessing (default: none)",
    )
    predict.add_argument(
        "--tta",
        action="store_true",
        help="test-time mirroring: average the softmax over every flip of the axes training "
        "flipped (default: off)",
    )
    predict.add_argument(
        "--tta-axes",
        type=int,
        nargs="+",
        metavar="AXIS",
        help="mirror over these spatial axes (0 1 2) instead; implies --tta (default: none)",
    )
    predict.add_argument(
        "--overlap",
        type=float,
        default=0.5,
        help="sliding-window overlap between neighbouring windows (default %(default)s)",
    )


def _add_predict_runtime_options(parser: argparse.ArgumentParser) -> None:
    """Where and in what precision the network runs and the volume is assembled."""
    predict = parser.add_argument_group("where it runs")
    predict.add_argument(
        "--sw-batch-size",
        type=int,
        default=2,
        help="windows run through the network at once (default %(default)s)",
    )
    add_precision(
        predict,
        "the network's autocast; the large-kernel FFT path stays float32 (default %(default)s)",
        default="32",
    )
    add_device(predict, "auto")
    predict.add_argument(
        "--stitch-device",
        default="auto",
        help="where the whole-volume output is assembled: auto is the GPU if it fits, else the "
        "CPU (default auto)",
    )
    predict.add_argument(
        "--buffer-dtype",
        default="float32",
        choices=("float32", "float16", "bfloat16"),
        help="whole-volume buffers' type; float16/bfloat16 halve their memory "
        "(default %(default)s)",
    )


def _add_evaluate(actions: argparse._SubParsersAction) -> None:
    evaluate = actions.add_parser("evaluate", help="Dice, HD95, surface Dice per case and class")
    evaluate.add_argument("predictions", type=Path, help="folder of predicted label volumes")
    evaluate.add_argument("labels", type=Path, help="folder of reference label volumes")
    evaluate.add_argument(
        "--dataset", type=Path, help="dataset folder, for class names (default: label values)"
    )
    add_output(evaluate, "folder for CSV and JSON (default: print only)")
    evaluate.add_argument(
        "--nsd-tolerance",
        type=float,
        default=1.0,
        metavar="MM",
        help="surface Dice tolerance in mm (default %(default)s)",
    )
    add_force_flag(evaluate, "replace an earlier evaluation in --output")


def run(args: argparse.Namespace) -> int:
    handlers = {
        "check": _check,
        "plan": _plan,
        "train": _train,
        "cv": _cv,
        "predict": _predict,
        "evaluate": _evaluate,
    }
    return dispatch("seg", args.seg_command, handlers, args)


def _check(args: argparse.Namespace) -> int:
    from visprior.data import check_dataset, format_problems

    problems = check_dataset(args.dataset)
    print(format_problems(problems))
    return 1 if problems else 0


def _plan(args: argparse.Namespace) -> int:
    import time

    import torch

    from visprior.data import load_dataset
    from visprior.fileio import check_outputs
    from visprior.seg.budget import DEFAULT_CPU_BUDGET_MINUTES, default_network
    from visprior.seg.plan import PLAN_FILE, extract_fingerprint, format_plan, make_plan, save_plan

    started = time.perf_counter()
    output = args.output or args.dataset / PLAN_FILE
    check_outputs([output], overwrite=args.overwrite)
    budget = args.budget
    if budget is None and args.gpu_memory_gb is None and not torch.cuda.is_available():
        budget = DEFAULT_CPU_BUDGET_MINUTES
        print(f"no GPU: planning for {budget:g} minutes on this machine (--budget MIN to change)")
    model = args.model or default_network(budget, torch.cuda.is_available())
    if args.model is None and model != METHOD_NETWORK:
        print(
            f"no GPU: a budget plan for {model}, which trains further than {METHOD_NETWORK} "
            f"in CPU minutes (--model {METHOD_NETWORK} to plan the method's network)"
        )
    dataset = load_dataset(args.dataset)
    fingerprint = extract_fingerprint(dataset)
    plan = make_plan(
        fingerprint,
        dataset,
        model,
        memory_gb=args.gpu_memory_gb,
        budget_minutes=budget,
        started=started,
    )
    save_plan(output, fingerprint, plan)
    print(format_plan(plan))
    print(f"wrote {output}")
    return 0


def _training_config(args: argparse.Namespace) -> SegTrainConfig:
    """The config of ``seg train`` / ``seg cv``, with the dataset's plan when there is one."""
    from visprior.engine.distributed import is_main_process
    from visprior.seg.plan import PLAN_FILE, load_plan, plan_values, planned_keys

    config = train_config_from_args(SegTrainConfig, args)
    if args.resume or args.no_plan:  # a resumed run's config.yaml holds its plan already
        return config
    default = Path(config.dataset) / PLAN_FILE
    plan_file = args.plan or (default if default.is_file() else None)
    if plan_file is None:
        if config.budget_minutes is not None:
            raise ValueError(
                f"--budget {config.budget_minutes:g}: no plan for it; run `visprior seg plan "
                f"{config.dataset} --budget {config.budget_minutes:g}` first"
            )
        return config
    # the plan sits between the defaults and everything given, its network included
    try:
        plan = load_plan(plan_file)
        model = train_config_from_args(SegTrainConfig, args, base={"model": plan["model"]}).model
        values, notes = plan_values(plan, model, config.configuration)
    except ValueError as error:
        raise ValueError(f"{plan_file}: {error}") from None
    planned = train_config_from_args(SegTrainConfig, args, base={"model": model, **values})
    _check_budget_plan(planned, plan, plan_file)
    keys = planned_keys(config, planned)
    if is_main_process():
        print(f"from the plan {plan_file}: {', '.join(keys) or 'nothing (all given)'}")
        for note in notes:
            print(f"  note: {note}")
    return dataclasses.replace(planned, plan_file=str(plan_file), from_plan=keys)


def _check_budget_plan(config: SegTrainConfig, plan: dict, plan_file: Path) -> None:
    """``--budget MIN`` trains the plan timed for those minutes, on this kind of machine."""
    if config.budget_minutes is None:
        return
    timed = plan.get("budget") or {}
    if timed.get("minutes") != config.budget_minutes:
        made = f"for {timed['minutes']:g} minutes" if timed else "without --budget"
        raise ValueError(
            f"--budget {config.budget_minutes:g}: the plan {plan_file} was made {made}; run "
            f"`visprior seg plan {config.dataset} --budget {config.budget_minutes:g} --force`"
        )


def _train(args: argparse.Namespace) -> int:
    from visprior.engine.distributed import is_main_process
    from visprior.seg.train import train_segmentation

    config = _training_config(args)
    result = train_segmentation(config, resume=bool(args.resume))
    if is_main_process():  # under torchrun: one summary, not one per process
        print(result.summary("val_mean_dice"))
    return 0


def _cv(args: argparse.Namespace) -> int:
    from visprior.engine.distributed import is_main_process
    from visprior.seg.cv import format_summary, train_folds

    config = _training_config(args)
    summary = train_folds(config, config.output)
    if is_main_process():
        print(format_summary(summary, config.output))
    return 0


def _predict(args: argparse.Namespace) -> int:
    from visprior.seg.cv import fold_runs
    from visprior.seg.predict import load_ensemble, predict_files

    folds = fold_runs(args.checkpoint)  # a `seg cv` folder: the ensemble of its folds
    runs = [*(folds or [args.checkpoint]), *(args.ensemble or [])]
    predictor = load_ensemble(
        runs,
        device=args.device,
        stitch_device=args.stitch_device,
        buffer_dtype=args.buffer_dtype,
        tta=args.tta,
        tta_axes=args.tta_axes,
        precision=args.precision,
    )
    if len(runs) > 1:
        print(f"ensemble of {len(runs)} runs: {', '.join(map(str, runs))}")
    decision_from = args.checkpoint if folds or not args.ensemble else None
    written = predict_files(
        predictor,
        args.inputs,
        args.output,
        overlap=args.overlap,
        sw_batch_size=args.sw_batch_size,
        save_probabilities=args.probabilities,
        overwrite=args.overwrite,
        largest_component=_postprocessing(args.postprocess, decision_from),
        output_format=args.output_format,
    )
    print(f"wrote {len(written)} file(s) to {args.output}")
    return 0


def _postprocessing(choice: str, run: str | None) -> bool | list[int]:
    """``predict_files``' ``largest_component`` for ``--postprocess``; ``run`` is where the
    decision is (``None``: an ensemble of runs named one by one, which has none)."""
    from visprior.seg.postprocess import DECISION_FILE, load_decision

    if choice != "auto":
        return choice == "largest"
    decision = load_decision(run) if run is not None else None
    if decision is None:
        where = f"{run} has no {DECISION_FILE}" if run else "an ensemble named run by run"
        print(f"--postprocess auto: {where}; no post-processing")
        return False
    return decision


def _evaluate(args: argparse.Namespace) -> int:
    from visprior.data import load_dataset
    from visprior.seg.evaluate import evaluate_folder, format_table

    classes = None
    if args.dataset is not None:
        classes = {n: v for n, v in load_dataset(args.dataset).labels.items() if v}
    result = evaluate_folder(
        args.predictions,
        args.labels,
        classes=classes,
        out_dir=args.output,
        nsd_tolerance_mm=args.nsd_tolerance,
        overwrite=args.overwrite,
    )
    print(format_table(result))
    return 0
