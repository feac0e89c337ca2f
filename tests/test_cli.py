"""The ``visprior`` command: model listing and the real-data demo, end to end."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from visprior.cli import main


def test_models_command(capsys):
    assert main(["models"]) == 0
    assert "repuxnet\nrepuxnet_plain\nrepuxnet_sr\n" in capsys.readouterr().out


def test_the_package_runs_as_a_module():
    """``python -m visprior.cli``, as ``torchrun ... -m visprior.cli`` starts it."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "visprior.cli", "models"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "repuxnet" in done.stdout.split()


def test_demo_rejects_an_unknown_model(tmp_path, capsys):
    assert main(["demo", "--model", "nope", "--output", str(tmp_path)]) == 2
    assert "unknown model name 'nope'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # refused before the dataset is written


def test_demo_resume_without_a_run_names_the_folder(tmp_path, capsys):
    assert main(["demo", "--model", "unet", "--output", str(tmp_path), "--resume"]) == 2
    error = capsys.readouterr().err
    assert f"--resume: no unet run with a checkpoint under {tmp_path / 'runs'}" in error


@pytest.mark.slow
def test_demo_resume_continues_the_run_from_its_checkpoint(tmp_path, capsys):
    from visprior.checkpoint_io import load_checkpoint

    args = ["demo", "--model", "unet", "--output", str(tmp_path), "--val-every", "1000"]
    assert main([*args, "--iterations", "2"]) == 0
    (run,) = (tmp_path / "runs").iterdir()
    assert load_checkpoint(run / "checkpoints" / "last.pt")["iteration"] == 2
    assert main([*args, "--iterations", "4", "--resume"]) == 0
    assert list((tmp_path / "runs").iterdir()) == [run]  # the same run, continued
    assert load_checkpoint(run / "checkpoints" / "last.pt")["iteration"] == 4
    assert "(resumed from its last checkpoint)" in capsys.readouterr().out


@pytest.mark.slow
def test_demo_runs_every_step_on_the_brain_atlas(tmp_path, capsys):
    # half a minute: planning alone took 11 s of a 9 s budget on a slow machine
    args = ["demo", "--output", str(tmp_path), "--minutes", "0.5", "--val-every", "1000"]
    assert main(args) == 0
    out = capsys.readouterr().out
    for step in ("[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5]", "mean foreground"):
        assert step in out
    (run,) = (tmp_path / "runs").iterdir()
    prediction = nib.load(run / "predictions" / "right.nii.gz")
    source = nib.load(
        tmp_path / "data" / "Dataset001_HarvardOxfordSubcortical" / "imagesTs" / "right_0000.nii.gz"
    )
    assert prediction.shape == source.shape  # back on the 1 mm grid of the input
    np.testing.assert_allclose(prediction.affine, source.affine, atol=1e-6)
    assert (run / "overlay.png").stat().st_size > 10_000
    assert (run / "evaluation" / "per_case.csv").is_file()
    assert "lateral_ventricle" in out and "brain_stem" in out
    assert "the plan expected" in out  # the default settings are planned for the minutes
    (plan,) = (tmp_path / "plans").iterdir()
    assert plan.name == f"{run.name}.json"


def _options(parser, path=("visprior",)):
    """Every (command path, option) of the parser and its subcommands."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options(sub, (*path, name))
        elif action.option_strings and not isinstance(action, argparse._HelpAction):
            yield " ".join(path), action


def test_every_option_has_a_help_line_that_shows_its_default():
    from visprior.cli import build_parser

    missing, no_default = [], []
    for command, action in _options(build_parser()):
        name = f"{command} {action.option_strings[0]}"
        if not action.help:
            missing.append(name)
        # A value-taking option says what it is when not given; a required one has none.
        elif action.nargs != 0 and not action.required and "default" not in action.help:
            no_default.append(name)
    assert not missing, missing
    assert not no_default, no_default


def test_demo_takes_the_short_output_flag(monkeypatch, tmp_path):
    from visprior.seg import demo

    seen = {}
    monkeypatch.setattr(demo, "run_demo", lambda config: seen.setdefault("config", config))
    assert main(["demo", "-o", str(tmp_path), "--minutes", "0.5"]) == 0
    assert seen["config"].output == str(tmp_path) and seen["config"].minutes == 0.5


def test_cxr_help_names_every_cxr_network():
    import argparse

    from visprior.cli import build_parser

    (commands,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    (entry,) = [choice.help for choice in commands._choices_actions if choice.dest == "cxr"]
    assert "GG-CAM" in entry and "MT-UNet" in entry


def test_training_flags_map_onto_config_fields_by_name(tmp_path):
    """A flag given on the command line sets the field of its name; one not given leaves the
    config file's value; --set comes last."""
    from visprior.cli import build_parser
    from visprior.cli.options import train_config_from_args
    from visprior.cxr.config import CXRTrainConfig
    from visprior.seg.config import SegTrainConfig

    config_file = tmp_path / "options.yaml"
    config_file.write_text("iterations: 7\nfold: 2\n")
    args = build_parser().parse_args(
        ["seg", "train", "data", "--config", str(config_file), "--roi", "32", "48", "64",
         "--init", "w.pt", "--time-limit", "3", "--set", "fold=1"]
    )  # fmt: skip
    config = train_config_from_args(SegTrainConfig, args)
    assert config.dataset == "data" and config.iterations == 7 and config.fold == 1
    assert config.roi_size == (32, 48, 64) and config.init_checkpoint == "w.pt"
    assert config.time_limit_minutes == 3.0 and config.model == "repuxnet"

    args = build_parser().parse_args(["cxr", "train", "set", "--no-gaze", "--epochs", "3"])
    config = train_config_from_args(CXRTrainConfig, args)
    assert (config.use_gaze, config.epochs, config.dataset) == (False, 3, "set")
    args = build_parser().parse_args(["cxr", "train", "set"])
    assert train_config_from_args(CXRTrainConfig, args).use_gaze is True


def test_demo_iterations_kernel_size_and_upkern_reach_the_training_config(tmp_path):
    import math

    from visprior.seg.demo import DemoConfig, demo_train_config

    config = DemoConfig(
        model="mednext_s", iterations=200, kernel_size=5, init_checkpoint="k3/best.pt", upkern=True
    )
    train = demo_train_config(config, tmp_path / "data", tmp_path / "run")
    assert train.iterations == 200 and math.isinf(train.time_limit_minutes)
    assert train.model_kwargs == {"feature_size": 16, "kernel_size": 5}
    assert train.init_checkpoint == "k3/best.pt" and train.upkern
    budget = demo_train_config(DemoConfig(minutes=3.0), tmp_path / "data", tmp_path / "run")
    assert budget.time_limit_minutes == 3.0 and budget.iterations == 100_000
    assert budget.init_checkpoint is None and not budget.upkern


def test_demo_settings_default_to_the_plan_and_a_fixed_count_to_the_hand_tuned_ones():
    from visprior.seg.demo import DemoConfig

    assert DemoConfig().resolved_settings() == "planned"
    assert DemoConfig(iterations=5).resolved_settings() == "hand-tuned"
    assert DemoConfig(settings="hand-tuned").resolved_settings() == "hand-tuned"
    with pytest.raises(ValueError, match="a fixed --iterations goes with --settings hand-tuned"):
        DemoConfig(settings="planned", iterations=5).resolved_settings()
    with pytest.raises(ValueError, match="settings 'tuned': choose one of planned, hand-tuned"):
        DemoConfig(settings="tuned").resolved_settings()


@pytest.mark.slow
def test_the_planned_demo_trains_what_the_budget_plan_says_unless_told_otherwise(tmp_path):
    """The values `seg train --budget` would take from `seg plan --budget`, on the demo's
    dataset, but for the demo's own spacing; a given spacing or precision wins over both."""
    from visprior.data.brain_atlas import write_hemisphere_dataset
    from visprior.seg.demo import PLANNED_SPACING_MM, DemoConfig, planned_train_config
    from visprior.seg.plan import load_plan

    dataset = write_hemisphere_dataset(tmp_path / "data")
    config = DemoConfig(minutes=0.2, output=str(tmp_path), seed=3)
    train, budget = planned_train_config(config, dataset, tmp_path / "runs" / "a")
    plan_file = tmp_path / "plans" / "a.json"
    assert train.plan_file == str(plan_file)
    assert load_plan(plan_file)["budget"] == budget
    assert train.model_kwargs == budget["model_kwargs"]
    assert list(train.preprocessing.spacing) == [PLANNED_SPACING_MM] * 3
    assert list(train.roi_size) == budget["roi_size"] and train.precision == budget["precision"]
    assert (train.budget_minutes, train.fold, train.seed) == (0.2, -1, 3)
    assert train.val_every == budget["val_every"] and train.crop_sampling == "classes"

    given = DemoConfig(minutes=0.2, output=str(tmp_path), spacing_mm=2.0, precision="32")
    told, _ = planned_train_config(given, dataset, tmp_path / "runs" / "b")
    assert told.preprocessing.spacing == (2.0, 2.0, 2.0) and told.precision == "32"


def test_a_planned_demo_refuses_to_resume_a_hand_tuned_run(tmp_path):
    from visprior.engine.config import save_config
    from visprior.seg.demo import DemoConfig, demo_train_config, planned_train_config

    run_dir = tmp_path / "runs" / "a"
    run_dir.mkdir(parents=True)
    hand_tuned = demo_train_config(DemoConfig(), tmp_path / "data", run_dir)
    save_config(hand_tuned, run_dir / "config.yaml")
    resumed = DemoConfig(output=str(tmp_path), resume=True)
    with pytest.raises(ValueError, match=f"--resume: {run_dir} was trained with the hand-tuned"):
        planned_train_config(resumed, tmp_path / "data", run_dir)


def test_the_demo_says_how_many_minutes_a_slow_machine_needs():
    from visprior.seg.budget import STEPS_TARGET
    from visprior.seg.demo import short_budget_advice

    assert short_budget_advice(376, 10.0) == (
        "this machine is expected to make 376 steps in 10 min; the demo learns every structure "
        f"(the accumbens last) in about {STEPS_TARGET}: `visprior demo --minutes "
        f"{-(-10 * STEPS_TARGET // 376)}` gives it those"
    )
    assert short_budget_advice(int(0.8 * STEPS_TARGET), 10.0) is None  # nearly there: quiet
