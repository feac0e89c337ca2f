"""The resumable grid runner of the benchmark studies, with stand-in units that train nothing."""

from __future__ import annotations

import json

import pytest
from benchmarks.grid import Grid, Unit, grid_status, run_grid
from benchmarks.record import ResultsFile


def merge_rows(earlier, new):
    rows = {(r["arm"], r["seed"]): r for r in (earlier or {}).get("rows", [])}
    rows.update({(r["arm"], r["seed"]): r for r in new["rows"]})
    return {"settings": new["settings"], "rows": list(rows.values())}


class Stopped(Exception):
    """Stands in for a run killed part-way."""


def make_grid(calls: list, stop_at: str | None = None, settings=None) -> Grid:
    def checkpointed(work):
        return (work / "last.pt").is_file()

    def unit(arm: str, seed: int) -> Unit:
        def run(work, resume):
            calls.append((arm, seed, resume))
            (work / "last.pt").write_text("saved")  # the unit's training checkpoint
            if f"{arm}{seed}" == stop_at:
                raise Stopped
            return {"score": seed + (arm == "b")}

        return Unit({"arm": arm, "seed": seed}, run, checkpointed)

    units = [unit(arm, seed) for seed in (0, 1) for arm in ("a", "b")]
    return Grid(units, settings or {"iterations": 10}, ("arm", "seed"))


def test_a_stopped_grid_keeps_finished_units_and_resumes_the_started_one(tmp_path):
    store = ResultsFile(tmp_path / "study" / "results.json", "study", quick=True)
    calls: list = []
    with pytest.raises(Stopped):
        run_grid(make_grid(calls, stop_at="a1"), store, "part", merge_rows, print)
    on_disk = json.loads(store.path.read_text())
    assert [(r["arm"], r["seed"]) for r in on_disk["data"]["rows"]] == [("a", 0), ("b", 0)]
    assert on_disk["parts"]["part"]["machine"]["cpu"]
    assert (tmp_path / "study" / ".work" / "arma-seed1" / "last.pt").is_file()
    assert not (tmp_path / "study" / ".work" / "arma-seed0").exists()  # done: work removed

    again = ResultsFile(store.path, "study", quick=True)
    calls.clear()
    data = run_grid(make_grid(calls), again, "part", merge_rows, print)
    assert calls == [("a", 1, True), ("b", 1, False)]  # the finished units are skipped
    assert sorted((r["arm"], r["seed"], r["score"]) for r in data["rows"]) == [
        ("a", 0, 0),
        ("a", 1, 1),
        ("b", 0, 1),
        ("b", 1, 2),
    ]


def test_a_unit_stopped_before_its_first_checkpoint_starts_again(tmp_path):
    store = ResultsFile(tmp_path / "results.json", "study", quick=True)
    leftover = tmp_path / ".work" / "arma-seed0"
    leftover.mkdir(parents=True)
    (leftover / "half-written.csv").write_text("x")
    calls: list = []
    run_grid(make_grid(calls), store, "part", merge_rows, print)
    assert calls[0] == ("a", 0, False)


def test_status_counts_done_started_and_pending_units(tmp_path):
    store = ResultsFile(tmp_path / "results.json", "study", quick=True)
    with pytest.raises(Stopped):
        run_grid(make_grid([], stop_at="b0"), store, "part", merge_rows, print)
    lines = grid_status(make_grid([]), store.data, tmp_path / ".work")
    assert lines == [
        "1 of 4 units done",
        "  arma-seed0: done",
        "  armb-seed0: started (resumes from its checkpoint)",
        "  arma-seed1: pending",
        "  armb-seed1: pending",
    ]


def test_a_grid_of_other_settings_is_refused_and_left_as_it_is(tmp_path):
    store = ResultsFile(tmp_path / "results.json", "study", quick=True)
    run_grid(make_grid([]), store, "part", merge_rows, print)
    before = store.path.read_text()
    with pytest.raises(SystemExit, match="iterations 10 there, 20 asked"):
        run_grid(make_grid([], settings={"iterations": 20}), store, "part", merge_rows, print)
    assert store.path.read_text() == before


def test_a_broken_results_file_is_named(tmp_path):
    path = tmp_path / "results.json"
    path.write_text("{ not json")
    with pytest.raises(SystemExit, match=f"{path}: not a readable results file"):
        ResultsFile(path, "study", quick=True)


def test_reports_call_a_partial_grid_partial():
    from benchmarks.report import grid_progress
    from benchmarks.studies import PARTS

    study = PARTS["kernel-scaling"]
    row = {"kind": "BFR", "k": 7, "seed": 0, "mean_foreground_dice": 0.5}
    content = {"quick": False, "data": {"settings": {}, "rows": [row]}}
    assert grid_progress(study, content) == [
        "**Partial grid** (kernel-scaling): 1 of 12 planned units done "
        "(`python -m benchmarks --only kernel-scaling --status` lists them).",
        "**Partial grid** (kernel-scaling-upkern): 0 of 2 planned units done "
        "(`python -m benchmarks --only kernel-scaling-upkern --status` lists them).",
    ]


@pytest.mark.slow
def test_a_started_kernel_scaling_unit_resumes_from_its_demo_checkpoint(tmp_path):
    """Quick (d2): a unit whose work folder holds a 1-iteration demo run is continued to the
    grid's 2 iterations, not started again; the other units start fresh."""
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    work = tmp_path / "kernel_scaling" / ".work" / "kindplain-k3-seed0"
    demo = [sys.executable, "-m", "visprior.cli", "demo", "--model", "repuxnet_plain"]
    demo += ["--output", str(work), "--kernel-size", "3", "--seed", "0", "--val-every", "2"]
    subprocess.run([*demo, "--iterations", "1"], check=True, capture_output=True, timeout=600)
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", "kernel-scaling"]
        + ["--out", str(tmp_path)],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert "kernel-scaling: kindplain-k3-seed0 (resumed from its checkpoint)" in done.stdout
    assert "kernel-scaling: kindBFR-k3-seed0\n" in done.stdout
    rows = json.loads((tmp_path / "kernel_scaling" / "results.json").read_text())["data"]["rows"]
    assert {(r["kind"], r["iterations"]) for r in rows} == {("plain", 2), ("BFR", 2)}
    assert not work.exists()  # a finished unit's work folder goes


def _dice_row(**fields) -> dict:
    dice = {"lung": 0.5, "accumbens": 0.25}
    return {**fields, "mean_dice": 0.375, "dice": dice, "iterations": 7, "step_seconds": 1.5}


def test_a_pilot_grid_and_the_main_grid_keep_each_other_s_rows():
    """(k) and (l) hold pilot grids beside their main grid: a row of one never drops the other."""
    from benchmarks.budget_plan import study as budget_plan
    from benchmarks.demo_holds import study as demo_holds

    pilot = {
        "settings": {"minutes": 10.0, "precision": "32"},
        "rows": [_dice_row(spacing_mm=2.5, seed=0)],
    }
    earlier = {"settings": {"budget_minutes_brain": 10.0}, "rows": [], "spacing_pilot": pilot}
    merged = budget_plan.merge(earlier, {"settings": {"budget_minutes_chest": 30.0}, "rows": []})
    assert merged["spacing_pilot"] == pilot
    assert merged["settings"] == {"budget_minutes_brain": 10.0, "budget_minutes_chest": 30.0}
    again = budget_plan.merge_pilot(
        pilot, {"settings": pilot["settings"], "rows": [_dice_row(spacing_mm=3.5, seed=0)]}
    )
    assert [r["spacing_mm"] for r in again["rows"]] == [2.5, 3.5]
    lines = budget_plan.section({**merged, "spacing_pilot": again})
    assert "| 3.5 mm | 7 | 1.50 | 0.375 | 0.500 | 0.250 |" in lines

    patch = {"settings": {"minutes": 10.0, "spacing_mm": 1.27}, "rows": [_dice_row(roi=32, seed=0)]}
    earlier = {"settings": {"minutes": 10.0}, "seeds": [0, 1, 2], "rows": [], "patch_pilot": patch}
    merged = demo_holds.merge(earlier, {"settings": {"minutes": 10.0}, "rows": []})
    assert merged["patch_pilot"] == patch
    lines = demo_holds.section(merged)
    assert "| 32^3 | 7 | 1.50 | 0.375 | 0.250 |" in lines
    assert "Partial: 0 of 3 units done; the grid resumes." in lines


def _demo_row(seed: int) -> dict:
    settings = {
        "model_kwargs": {"feature_size": 16, "hidden_size": 128},
        "spacing": [1.27] * 3,
        "roi_size": [48] * 3,
        "precision": "32",
    }
    return {
        **_dice_row(seed=seed), "expected_iterations": 9, "expected_step_seconds": 1.25,
        "wall_minutes": 10.25, "machine": "cpu", "settings": settings,
    }  # fmt: skip


def test_a_demo_that_predicts_otherwise_keeps_the_earlier_rows_apart_and_runs_every_seed():
    from benchmarks.demo_holds import study as demo_holds

    new_settings = {"minutes": 10.0, "prediction": demo_holds.PREDICTION}
    recipe = {
        "settings": {"iterations": 600, "seed": 1, "spacing_mm": 1.27},
        "rows": [],
        "command": "python -m benchmarks.demo_holds.recipe_pilot WORK",
        "date": "2026-12-07",
    }
    earlier = {
        "settings": {"minutes": 10.0},
        "rows": [_demo_row(0), _demo_row(1)],
        "recipe_pilot": recipe,
    }
    moved = demo_holds.merge(earlier, {"settings": new_settings, "rows": []})
    assert moved["rows"] == [] and moved["recipe_pilot"] == recipe
    assert [(r["seed"], r["prediction"]) for r in moved["earlier_rows"]] == [
        (0, "one pass"),
        (1, "one pass"),
    ]
    again = demo_holds.merge(moved, {"settings": new_settings, "rows": [_demo_row(0)]})
    assert len(again["earlier_rows"]) == 2 and [r["seed"] for r in again["rows"]] == [0]
    lines = demo_holds.section(again)
    table_row = "| 0 | cpu | 16/128, 1.27 x 1.27 x 1.27 mm, 48 x 48 x 48, float32 | 7 (9) |"
    assert sum(line.startswith(table_row) for line in lines) == 2  # current and earlier


def test_the_chest_pilot_folds_beside_k_s_rows_and_shows_the_training_half_where_predicted(
    tmp_path,
):
    from benchmarks.budget_plan import chest_pilot
    from benchmarks.budget_plan import study as budget_plan

    work = tmp_path / "work"
    work.mkdir()
    dice = {"lung": 0.75, "rib": 0.25}
    base = {
        "variant": "hand-tuned recipe", "seed": 0, "changes": {}, "iterations": 600,
        "machine": "cpu",
        "step_seconds": 0.8, "held-out half": {"mean_dice": 0.5, "dice": dice},
        "training half": {"mean_dice": 0.625, "dice": {"lung": 1.0, "rib": 0.25}},
    }  # fmt: skip
    lr = {**base, "variant": "lr 3e-3", "changes": {"lr": 0.003}, "training_half_validation": 0.7}
    del lr["training half"]
    (work / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in (base, lr)) + "\n")
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"data": {"settings": {}, "rows": []}}))
    chest_pilot.fold(work, results)
    pilot = json.loads(results.read_text())["data"]["chest_pilot"]
    assert [r["variant"] for r in pilot["rows"]] == ["hand-tuned recipe", "lr 3e-3"]
    earlier = {"settings": {"budget_minutes_brain": 10.0}, "rows": [], "chest_pilot": pilot}
    merged = budget_plan.merge(earlier, {"settings": {}, "rows": []})
    assert merged["chest_pilot"] == pilot
    lines = chest_pilot.section(pilot)
    assert (
        "| hand-tuned recipe | held-out half | cpu | 600 | 0.80 | 0.500 | 0.750 | 0.250 |" in lines
    )
    assert (
        "| hand-tuned recipe | training half | cpu | 600 | 0.80 | 0.625 | 1.000 | 0.250 |" in lines
    )
    assert lines[-1].endswith("on its training half (one pass, not mirrored): lr 3e-3 0.700.")
    assert sum(line.startswith("| lr 3e-3 |") for line in lines) == 1


def test_a_row_set_aside_is_run_again_and_stays_on_record_with_its_reason():
    from benchmarks.demo_holds import study as demo_holds

    settings = {"minutes": 10.0, "prediction": demo_holds.PREDICTION}
    data = {"settings": settings, "seeds": [0, 1], "rows": [_demo_row(0), _demo_row(1)]}
    aside = demo_holds.set_aside(data, 0, "the machine slowed down")
    assert [r["seed"] for r in aside["rows"]] == [1]
    assert aside[demo_holds.SET_ASIDE][0]["reason"] == "the machine slowed down"
    lines = demo_holds.section(aside)
    assert "cpu: target met on 0 of 1 seeds." in lines
    assert "Partial: 1 of 2 units done on cpu; the grid resumes." in lines
    assert "- seed 0: the machine slowed down" in lines
    again = demo_holds.merge(aside, {"settings": settings, "rows": [_demo_row(0)]})
    assert [r["seed"] for r in again["rows"]] == [0, 1]
    assert again[demo_holds.SET_ASIDE] == aside[demo_holds.SET_ASIDE]
    with pytest.raises(ValueError, match="no row of seed 5 to set aside"):
        demo_holds.set_aside(data, 5, "-")


def test_each_cpu_kind_keeps_its_own_seeds_of_the_demo():
    from benchmarks.demo_holds import study as demo_holds

    assert demo_holds.cpu_kind("AMD EPYC 7B13") == "AMD"
    assert demo_holds.cpu_kind("Intel(R) Xeon(R) Processor (AVX512_BF16)") == "Intel"
    settings = {"minutes": 10.0, "prediction": demo_holds.PREDICTION}
    intel = {**_demo_row(0), "machine": "Intel(R) Xeon(R) Processor"}  # made before the key
    amd = {**_demo_row(0), "machine": "AMD EPYC 7B13", "cpu_kind": "AMD", "mean_dice": 0.95}
    amd["dice"] = {**amd["dice"], "accumbens": 0.85}
    earlier = {"settings": settings, "seeds": [0], "rows": [intel]}
    merged = demo_holds.merge(earlier, {"settings": settings, "rows": [amd]})
    assert [(r["cpu_kind"], r["seed"]) for r in merged["rows"]] == [("AMD", 0), ("Intel", 0)]
    lines = demo_holds.section(merged)
    assert "AMD: target met on 1 of 1 seeds." in lines
    assert "Intel: target met on 0 of 1 seeds." in lines
    grid = demo_holds.demo_grid(10.0, (0, 1), kind="AMD")
    assert [u.fields for u in grid.units] == [
        {"cpu_kind": "AMD", "seed": 0}, {"cpu_kind": "AMD", "seed": 1}
    ]  # fmt: skip
    with pytest.raises(ValueError, match="seed 0 ran on AMD, Intel: name the CPU kind"):
        demo_holds.set_aside(merged, 0, "-")
    aside = demo_holds.set_aside(merged, 0, "slowed", kind="Intel")
    assert [r["cpu_kind"] for r in aside["rows"]] == ["AMD"]


def test_the_cpu_default_network_rows_fold_beside_k_and_name_the_network_the_plan_chose():
    from benchmarks.budget_plan import study as budget_plan

    settings = {
        "model": "unet", "model_kwargs": {"feature_size": 16}, "spacing": [1.0, 1.0, 2.5],
        "roi_size": [128, 128, 48], "precision": "32", "crop_sampling": "classes",
        "flip_axes": [0],
    }  # fmt: skip
    row = {
        **_dice_row(task="chest", arm=budget_plan.NETWORK_ARM, seed=0), "machine": "AMD EPYC",
        "settings": settings, "plan": {"expected_step_seconds": 1.27}, "training_minutes": 25.5,
        "wall_minutes": 31.0,
    }  # fmt: skip
    new = budget_plan.merge_pilot(None, {"settings": {"minutes": 30.0}, "rows": [row]}, ("seed",))
    earlier = {"settings": {"budget_minutes_chest": 30.0}, "rows": []}
    merged = budget_plan.merge({**earlier, budget_plan.NETWORK_PILOT: new}, {**earlier})
    assert merged[budget_plan.NETWORK_PILOT] == new
    lines = budget_plan.network_section(new)
    assert any(
        line.startswith(
            "| chest | 30 min | planned, CPU default network | 0 | unet 16, 1 x 1 x 2.5"
        )
        and "| 7 | 1.50 (1.27) | 25.5 | 31.0 | 0.375 |" in line
        for line in lines
    )
    assert "| 0 | AMD EPYC | 0.500 | 0.250 |" in lines
    assert "Partial: 1 of 3 units done; the grid resumes." in lines
    grid = budget_plan.network_grid()
    assert [u.fields["arm"] for u in grid.units] == [budget_plan.NETWORK_ARM] * 3


def test_the_spacing_pilot_pairs_each_arm_by_seed_and_a_demo_row_stands_for_its_own_arm():
    from benchmarks.demo_holds import study as demo_holds

    settings = {"minutes": 10.0, "prediction": demo_holds.PREDICTION}

    def row(seed: int, mm: float, dice: float) -> dict:
        made = {**_demo_row(seed), "cpu_kind": "AMD", "mean_dice": dice}
        return {**made, "settings": {**made["settings"], "spacing": [mm + 0.001] * 3}}

    demo = [row(0, 1.0, 0.88), row(1, 1.27, 0.89)]
    grid = demo_holds.spacing_pilot_grid(10.0, (0, 1), kind="AMD", demo_rows=demo)
    assert [(u.fields["spacing_mm"], u.fields["seed"]) for u in grid.units] == [
        (1.6, 0), (1.6, 1), (1.0, 1), (1.27, 0)
    ]  # fmt: skip
    pilot_rows = [
        {**row(0, 1.6, 0.91), "spacing_mm": 1.6},
        {**row(1, 1.6, 0.92), "spacing_mm": 1.6},
        {**row(1, 1.0, 0.87), "spacing_mm": 1.0},
    ]
    pilot = {"settings": settings, "rows": pilot_rows}
    earlier = {"settings": settings, "seeds": [0, 1], "rows": demo, "spacing_pilot": pilot}
    merged = demo_holds.merge(earlier, {"settings": settings, "rows": []})
    assert merged["spacing_pilot"] == pilot and len(merged["rows"]) == 2
    lines = demo_holds.section(merged)
    # 1.6 mm against 1.0 mm: seed 0's 1.0 arm is its demo row, seed 1's is a pilot row
    assert "AMD, 1.6 mm minus 1 mm:" in lines
    assert any(line.startswith("| mean Dice | 0: +0.030, 1: +0.050 | +0.040 |") for line in lines)
    # 1.27 mm against 1.0 mm: seed 1 alone (seed 0's 1.27 arm has not run)
    assert any(line.startswith("| mean Dice | 1: +0.020 | +0.020 | - |") for line in lines)
