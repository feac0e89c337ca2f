"""``seg plan --budget``: candidates, the choice rule on hand-made step times, the timing
helper, the plan on a fake timer, and the command on a tiny dataset with real timing."""

from __future__ import annotations

import json
import math

import pytest

from tests.seg.test_plan import TINY_TRAINING, write_dataset
from visprior.cli import main
from visprior.cpu_info import cpu_bf16_support
from visprior.seg.budget import (
    STEPS_TARGET,
    BudgetCandidate,
    choose_candidate,
    coarser_spacings,
    plan_budget,
    time_training_step,
)


def _candidate(seconds, elements, spacing_rank=0, width_rank=0, measured=None):
    return BudgetCandidate(
        model_kwargs={"feature_size": 8 * (width_rank + 1)},
        spacing=(1.0 + spacing_rank,) * 3,
        roi_size=(32, 32, 32),
        width_rank=width_rank,
        spacing_rank=spacing_rank,
        elements=elements,
        predicted_seconds=seconds,
        measured_seconds=measured,
    )


def test_the_rule_takes_the_most_work_that_still_makes_the_target_steps():
    training = STEPS_TARGET * 1.0  # one second a step reaches the target exactly
    small = _candidate(0.5, 100)
    large = _candidate(0.9, 300)  # the most work within the target
    too_slow = _candidate(1.5, 900)
    chosen, reaches = choose_candidate([small, large, too_slow], training)
    assert chosen is large and reaches
    # measured slower than predicted: no longer within the target, the next one is taken
    large.measured_seconds = 1.2
    assert choose_candidate([small, large, too_slow], training) == (small, True)


def test_equal_work_goes_to_the_finer_spacing_then_the_wider_network():
    training = STEPS_TARGET * 10.0
    coarse = _candidate(0.4, 200, spacing_rank=2, measured=0.41)
    fine = _candidate(0.5, 200, spacing_rank=0)  # slower by noise, same work
    assert choose_candidate([coarse, fine], training)[0] is fine
    narrow = _candidate(0.5, 200, width_rank=0)
    wide = _candidate(0.5, 200, width_rank=1)
    assert choose_candidate([narrow, wide], training)[0] is wide


def test_a_short_budget_takes_the_most_steps_and_says_it_falls_short():
    slow, slower = _candidate(5.0, 50), _candidate(9.0, 100)
    chosen, reaches = choose_candidate([slower, slow], training_seconds=60.0)
    assert chosen is slow and not reaches
    # ranked by work, not by timing: equal work measured faster by noise does not win
    noisy = _candidate(5.0, 50, spacing_rank=0, measured=4.0)
    steady = _candidate(5.0, 50, spacing_rank=1)
    assert choose_candidate([noisy, steady], training_seconds=60.0)[0] is steady
    # short of the target, a patch with context still wins over one without
    tiny = _candidate(0.01, 1, width_rank=-1)
    assert choose_candidate([tiny, slow], training_seconds=60.0)[0] is slow
    # a patch without context (width_rank -1) is never chosen while one with context fits
    no_context = _candidate(0.1, 10, width_rank=-1)
    enough = _candidate(0.5, 100)
    assert choose_candidate([no_context, enough], STEPS_TARGET * 1.0)[0] is enough
    # short, with equal steps: the coarser spacing, whose patch covers more of the image
    fine, coarse = _candidate(5.0, 100, spacing_rank=0), _candidate(5.0, 100, spacing_rank=2)
    assert choose_candidate([fine, coarse], training_seconds=60.0) == (coarse, False)


def test_coarser_spacings_follow_the_lowres_steps():
    """Isotropic: all axes grow together, f^3 reaching 2, 4 and 8 first at f = 1.03^8, 1.03^16
    and 1.03^24. Anisotropic: the two fine axes grow alone while under half the coarse one."""
    spacings = coarser_spacings((1.0, 1.0, 1.0))
    assert [s[0] for s in spacings] == pytest.approx([1.03**8, 1.03**16, 1.03**24])
    (first,) = coarser_spacings((1.0, 1.0, 3.0), reductions=(2.0,))
    # 1.03^n squared reaches 2 first at n = 12 (1.03^24 = 2.03); the 3 mm axis has not moved
    assert first == pytest.approx((1.03**12, 1.03**12, 3.0))


def test_timing_discards_the_warm_up_and_gives_up_on_a_slow_first_step():
    durations = iter([0.05, 0.0, 0.01, 0.02])
    calls = []

    def step():
        calls.append(1)
        import time

        time.sleep(next(durations))

    assert time_training_step(step, repeats=3) == pytest.approx(0.01, abs=5e-3)
    assert len(calls) == 4

    def slow():
        import time

        time.sleep(0.05)

    assert time_training_step(slow, repeats=5, give_up_seconds=0.01) >= 0.05


def _fake_plan(bf16_factor, minutes=10.0, per_element=1e-9, data_per_voxel=None):
    """plan_budget on made-up costs: a step takes per_element s per kept layer output, bf16
    bf16_factor of that, and its data data_per_voxel s per patch voxel; every timing is
    recorded."""
    timings = []

    def data_timer(spacing, roi):
        return data_per_voxel * math.prod(roi)

    def elements_per_voxel(widths):
        return 100.0 * widths.get("feature_size", 16)

    def timer(kwargs, roi, precision, give_up):
        timings.append((dict(kwargs), tuple(roi), precision))
        seconds = per_element * elements_per_voxel(kwargs) * math.prod(roi) * 2
        return seconds * (bf16_factor if precision == "bf16" else 1.0)

    budget = plan_budget(
        minutes,
        "repuxnet",
        1,
        3,
        (1.0, 1.0, 1.0),
        lambda spacing: tuple(int(round(160 / s)) for s in spacing),
        elements_per_voxel,
        16,
        timer=timer,
        data_timer=None if data_per_voxel is None else data_timer,
    )
    return budget, timings


def test_a_plan_on_known_costs_uses_bf16_where_faster_and_fills_the_steps():
    budget, timings = _fake_plan(bf16_factor=0.5)
    assert budget["precision"] == "bf16" and budget["bf16_speedup"] == pytest.approx(2.0)
    # the plan names the CPU's native bf16 beside the speed-up it measured
    assert budget["cpu_bf16"] == cpu_bf16_support()
    assert budget["notes"][0].startswith("bf16 autocast 2.00x float32 on this machine (")
    # the reference (narrowest width, smallest patch with 48^3 context) in both precisions
    assert timings[0][2] == "32" and timings[1][2] == "bf16" and timings[0][:2] == timings[1][:2]
    assert budget["iterations"] >= STEPS_TARGET and budget["reaches_steps_target"]
    assert budget["iterations"] * budget["expected_step_seconds"] <= (
        budget["training_minutes"] * 60 + 1e-6
    )
    assert budget["step_time_measured"]  # the chosen candidate was timed itself
    assert budget["val_every"] == budget["iterations"] // 4
    assert budget["lr_schedule"] == "poly" and budget["flip_axes"] == [0]  # left-right only
    assert budget["training_minutes"] <= 0.85 * 10


def test_an_untimed_candidate_is_predicted_with_its_data_as_well():
    """Costs linear in the kept layer outputs and in the patch's voxels: the prediction of the
    chosen candidate, made before it was timed, is its timed step, data included."""
    budget, timings = _fake_plan(bf16_factor=0.5, data_per_voxel=2e-7)
    assert len(budget["timed"]) >= 2  # the reference, then the chosen one
    chosen = budget["timed"][-1]
    data = 2e-7 * math.prod(chosen["roi_size"])
    assert chosen["measured_step_seconds"] > data
    assert chosen["predicted_step_seconds"] == pytest.approx(
        chosen["measured_step_seconds"], rel=1e-3
    )


def test_a_plan_keeps_float32_where_bf16_is_not_faster_enough():
    budget, _ = _fake_plan(bf16_factor=0.9)
    assert budget["precision"] == "32"


def test_a_short_budget_says_so():
    budget, _ = _fake_plan(bf16_factor=1.0, minutes=0.5, per_element=1e-6)
    assert not budget["reaches_steps_target"]
    assert any("the budget is short" in note for note in budget["notes"])


def test_a_budget_of_zero_is_refused():
    with pytest.raises(ValueError, match="--budget must be above 0 minutes, got 0"):
        plan_budget(0, "unet", 1, 2, (1, 1, 1), lambda s: (32, 32, 32), lambda w: 1.0, 16)


@pytest.mark.slow
def test_seg_plan_budget_times_this_machine_and_seg_train_takes_the_timed_plan(tmp_path, capsys):
    folder = write_dataset(tmp_path, [(1.0, 1.0, 1.0), (1.0, 1.0, 1.0)])
    assert main(["seg", "plan", str(folder), "--model", "unet", "--budget", "10"]) == 0
    out = capsys.readouterr().out
    assert "budget 10 min" in out and "timed here in" in out
    budget = json.loads((folder / "visprior_plans.json").read_text())["plan"]["budget"]
    assert budget["planning_seconds"] <= 0.05 * 600 + 5  # its share, plus the fingerprint
    assert budget["precision"] in ("32", "bf16") and budget["timed"]

    import yaml

    run = tmp_path / "run"
    args = ["seg", "train", str(folder), "-o", str(run), *TINY_TRAINING]
    assert main(args) == 0  # the explicit --iterations 2 and widths win over the plan
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["precision"] == budget["precision"]
    assert config["roi_size"] == budget["roi_size"]
    assert config["budget_minutes"] == budget["minutes"]
    assert config["preprocessing"]["spacing"] == budget["spacing"]
    assert {"precision", "roi_size", "budget_minutes", "flip_axes"} <= set(config["from_plan"])
    assert config["iterations"] == 2 and "iterations" not in config["from_plan"]


def _full_resolution_plan(crop_sampling: str) -> dict:
    return {
        "model": "repuxnet",
        "spacing": [1.0, 1.0, 1.0],
        "normalization": [{"channel": "T1", "scheme": "zscore"}],
        "roi_size": [96, 96, 96],
        "batch_size": 2,
        "crop_sampling": crop_sampling,
    }


def test_a_budget_configuration_needs_a_budget_plan_for_the_same_network():
    from visprior.seg.plan import plan_values

    plan = _full_resolution_plan("classes")
    with pytest.raises(ValueError, match="the plan has no budget configuration: run `seg plan"):
        plan_values(plan, "repuxnet", "budget")
    assert plan_values(plan, "repuxnet")[0]["roi_size"] == [96, 96, 96]  # auto: 3d_fullres
    budget, _ = _fake_plan(bf16_factor=0.5)
    plan["budget"] = budget
    values, _ = plan_values(plan, "repuxnet")  # auto: the budget plan
    assert values["roi_size"] == budget["roi_size"] and values["precision"] == "bf16"
    assert values["model_kwargs"] == budget["model_kwargs"]
    assert values["budget_minutes"] == budget["minutes"]
    with pytest.raises(ValueError, match="the budget plan is timed for repuxnet, not unet: run"):
        plan_values(plan, "unet")


def test_seg_train_budget_needs_a_plan_timed_for_the_same_minutes(tmp_path, capsys):
    folder = write_dataset(tmp_path, [(1.0, 1.0, 1.0)])
    run = tmp_path / "run"
    args = ["seg", "train", str(folder), "-o", str(run), *TINY_TRAINING, "--budget", "30"]
    assert main(args) == 2
    assert f"--budget 30: no plan for it; run `visprior seg plan {folder} --budget 30` first" in (
        capsys.readouterr().err
    )
    assert main(["seg", "plan", str(folder), "--model", "unet", "--gpu-memory-gb", "8"]) == 0
    assert main(args) == 2
    plan_file = folder / "visprior_plans.json"
    assert (
        f"--budget 30: the plan {plan_file} was made without --budget; run `visprior seg plan "
        in capsys.readouterr().err
    )
    saved = json.loads(plan_file.read_text())
    saved["plan"]["budget"], _ = _fake_plan(bf16_factor=0.5, minutes=20.0)
    plan_file.write_text(json.dumps(saved))
    assert main(args) == 2
    assert "the plan" in (error := capsys.readouterr().err) and "was made for 20 minutes" in error
    assert not run.exists()


def test_the_wall_limit_leaves_out_the_plans_timing_and_the_setup(tmp_path):
    from visprior.seg.config import SegTrainConfig
    from visprior.seg.train import _wall_limit_minutes

    assert _wall_limit_minutes(SegTrainConfig(), 30.0) == math.inf
    folder = write_dataset(tmp_path, [(1.0, 1.0, 1.0)])
    assert main(["seg", "plan", str(folder), "--model", "unet", "--gpu-memory-gb", "8"]) == 0
    plan_file = folder / "visprior_plans.json"
    saved = json.loads(plan_file.read_text())
    saved["plan"]["budget"] = {"minutes": 10.0, "planning_seconds": 30.0}
    plan_file.write_text(json.dumps(saved))
    config = SegTrainConfig(budget_minutes=10.0, plan_file=str(plan_file))
    assert _wall_limit_minutes(config, setup_seconds=30.0) == pytest.approx(9.0)
    fullres = SegTrainConfig(
        budget_minutes=10.0, plan_file=str(plan_file), configuration="3d_fullres"
    )
    assert _wall_limit_minutes(fullres, setup_seconds=0.0) == pytest.approx(10.0)


def test_a_budget_run_balances_its_crops_by_class_and_trains_a_lone_case_without_a_fold():
    from visprior.seg.plan import budget_crop_sampling, plan_values

    assert budget_crop_sampling(num_classes=3, planned="pos_neg") == "classes"
    assert budget_crop_sampling(num_classes=2, planned="pos_neg") == "pos_neg"  # one foreground
    budget, _ = _fake_plan(bf16_factor=0.5)
    plan = {**_full_resolution_plan("pos_neg"), "budget": {**budget, "crop_sampling": "classes"}}
    values, _ = plan_values(plan, "repuxnet")
    assert values["crop_sampling"] == "classes" and "fold" not in values
    plan["budget"]["fold"] = -1
    assert plan_values(plan, "repuxnet")[0]["fold"] == -1


def test_a_lone_training_case_cannot_train_a_fold(tmp_path, capsys):
    folder = write_dataset(tmp_path, [(1.0, 1.0, 1.0)])
    run = tmp_path / "run"
    args = ["seg", "train", str(folder), "-o", str(run), "--no-plan", *TINY_TRAINING]
    assert main([*args, "--fold", "0"]) == 2
    assert (
        f"{folder}: one training case leaves none to validate fold 0 on; train on it with "
        "--fold -1" in capsys.readouterr().err
    )


def test_a_cpu_budget_plan_is_for_unet_and_every_other_plan_for_the_method():
    from visprior.seg.budget import default_network

    assert default_network(budget_minutes=30.0, gpu=False) == "unet"
    assert default_network(budget_minutes=30.0, gpu=True) == "repuxnet"
    assert default_network(budget_minutes=None, gpu=False) == "repuxnet"
    assert default_network(budget_minutes=None, gpu=True) == "repuxnet"


def test_seg_train_trains_the_plans_network_unless_told_another(tmp_path, capsys):
    import yaml

    folder = write_dataset(tmp_path, [(1.0, 1.0, 1.0), (1.0, 1.0, 1.0)])
    assert main(["seg", "plan", str(folder), "--model", "unet", "--gpu-memory-gb", "8"]) == 0
    plan_file = folder / "visprior_plans.json"
    saved = json.loads(plan_file.read_text())
    budget, _ = _fake_plan(bf16_factor=0.5)
    saved["plan"]["budget"] = {**budget, "model_kwargs": {"feature_size": 4, "num_res_units": 1}}
    plan_file.write_text(json.dumps(saved))
    without_model = [a for a in TINY_TRAINING if a not in ("--model", "unet")]
    run = tmp_path / "run"
    small = ["--set", "roi_size=[32, 32, 32]"]
    assert main(["seg", "train", str(folder), "-o", str(run), *without_model, *small]) == 0
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"] == "unet" and "model" in config["from_plan"]
    other = ["seg", "train", str(folder), "-o", str(tmp_path / "other"), *without_model]
    assert main([*other, "--model", "repuxnet"]) == 2
    assert "the budget plan is timed for unet, not repuxnet" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()


def test_unet_must_expect_more_steps_than_the_large_kernel_networks_before_a_larger_step():
    from visprior.seg.budget import STEPS_TARGETS, steps_target

    assert steps_target("repuxnet") == steps_target("uxnet") == STEPS_TARGET
    assert steps_target("unet") == STEPS_TARGETS["unet"] > STEPS_TARGET
    training = 2000.0  # seconds: 2000 steps of 1 s, 5000 of 0.4 s
    large = _candidate(1.0, 300)
    small = _candidate(0.4, 100)
    assert choose_candidate([small, large], training, STEPS_TARGET) == (large, True)
    assert choose_candidate([small, large], training, steps_target("unet")) == (small, True)
