"""(d5)'s ladder, plateau, cost and reuse of (d4)'s runs, on made-up rows whose answers are
known."""

from __future__ import annotations

import json

import pytest
from benchmarks.peers_plateau import study

# network -> Dice at 250, 500, 1000, 2000 iterations (seed 0); later seeds add 0.01 per seed
LADDERS = {
    "repuxnet": (0.70, 0.85, 0.90, 0.905),  # plateau 0.905, within 0.01 from 1000
    "uxnet": (0.75, 0.86, 0.88, 0.885),  # plateau 0.885, from 1000
    "unet": (0.84, 0.87, 0.875, 0.878),  # plateau 0.878, from 500
}
STEP_SECONDS = {"repuxnet": 0.6, "uxnet": 0.5, "unet": 0.15}


def _row(name, seed, iterations, mean):
    return {
        "name": name,
        "seed": seed,
        "iterations": iterations,
        "mean_foreground_dice": mean,
        "dice": {"accumbens": mean - 0.1, "thalamus": mean + 0.05},
        "class_voxels": {"accumbens": 100, "thalamus": 5000},
    }


def _data(seeds=(0, 1, 2)):
    rows = [
        _row(name, seed, n, dice + 0.01 * seed)
        for name, ladder in LADDERS.items()
        for seed in seeds
        for n, dice in zip((250, 500, 1000, 2000), ladder, strict=True)
    ]
    steps = [
        {"name": name, "round": r, "step_seconds": seconds * (1 + 0.1 * (r - 1))}
        for name, seconds in STEP_SECONDS.items()
        for r in range(3)
    ]
    settings = study._fixed(study.SETTINGS_FULL)
    return {
        "ladder": {"settings": settings, "rows": rows},
        "steps": {"settings": {**study.STEP_SETTINGS_FULL, "load_before": 0.1}, "rows": steps},
    }


def test_the_ladder_runs_each_seeds_longest_runs_first():
    grid = study.ladder_grid(quick=False)
    keys = [grid.key(unit.fields) for unit in grid.units]
    assert len(keys) == 3 * 3 * 4 and len(set(keys)) == len(keys)
    assert keys[:3] == [("repuxnet", 0, 2000), ("uxnet", 0, 2000), ("unet", 0, 2000)]
    assert keys[3:6] == [("repuxnet", 0, 1000), ("uxnet", 0, 1000), ("unet", 0, 1000)]
    assert keys[-1] == ("unet", 2, 250)


def test_a_longer_ladder_for_one_network_adds_its_units_only():
    settings = {**study.SETTINGS_FULL, "longer": {"unet": (4000,)}}
    assert study.lengths_for("unet", settings) == (250, 500, 1000, 2000, 4000)
    assert study.lengths_for("uxnet", settings) == (250, 500, 1000, 2000)
    assert study._fixed(settings) == study._fixed(study.SETTINGS_FULL)  # the same grid


def test_the_plateau_is_the_longest_run_and_its_reach_the_shortest_run_within_0_01():
    found = study.plateaus(_data())
    repux = found[("repuxnet", 1)]
    assert repux["plateau_dice"] == pytest.approx(0.915) and repux["plateau"]
    assert repux["change"] == pytest.approx(0.005)
    assert repux["reached_at"] == 1000
    assert found[("unet", 0)]["reached_at"] == 500
    assert study.idle_step_seconds(_data()) == pytest.approx(STEP_SECONDS)


def test_a_seed_still_rising_is_not_at_a_plateau():
    data = _data(seeds=(0,))
    for row in data["ladder"]["rows"]:
        if row["name"] == "uxnet" and row["iterations"] == 2000:
            row["mean_foreground_dice"] = 0.93  # +0.05 over 1000
    value = study.plateaus(data)[("uxnet", 0)]
    assert not value["plateau"] and value["reached_at"] == 2000
    assert "| 3D UX-Net 7^3 | 0 | 0.880 @ 1000 | 0.930 @ 2000 | +0.050 | no |" in (
        study.doubling_table(data)
    )


def test_the_plateau_table_costs_the_reach_at_the_idle_step_time():
    lines = study.plateau_table(_data())
    # RepUX-Net reaches its plateau at 1000 iterations x 0.6 s = 10.0 CPU minutes
    assert lines[2] == (
        "| RepUX-Net BFR 21^3 | 3 of 3 | **0.915 ± 0.010** | 0.815 ± 0.010 | 1000, 1000, 1000 "
        "| 0.600 | 10.0 ± 0.0 |"
    )
    # UNet at 500 x 0.15 s = 1.25 minutes, shown to one decimal
    assert lines[4].startswith("| MONAI UNet | 3 of 3 | **0.888 ± 0.010** |")
    assert lines[4].endswith("| 500, 500, 500 | 0.150 | 1.2 ± 0.0 |")


def test_the_differences_pair_repuxnet_with_each_peer_by_seed():
    compared = study.differences(_data())
    dice = compared["RepUX-Net BFR 21^3 - MONAI UNet, mean Dice"]
    assert dice.differences == pytest.approx((0.027, 0.027, 0.027))
    assert dice.verdict == "better"  # the same difference in every seed
    cost = compared["RepUX-Net BFR 21^3 - MONAI UNet, CPU minutes to the plateau"]
    assert cost.mean == pytest.approx(10.0 - 1.25) and cost.verdict == "worse"  # costs more
    assert "RepUX-Net BFR 21^3 - 3D UX-Net 7^3, accumbens Dice" in compared


def test_step_seconds_leave_out_the_first_window(tmp_path):
    metrics = tmp_path / "metrics.csv"
    metrics.write_text(
        "iteration,step_seconds,train_loss\n10,5.0,1\n20,1.0,1\n30,1.2,1\n40,0.9,1\n"
    )
    assert study.step_seconds(metrics, 100.0, 40) == pytest.approx(1.0)
    metrics.write_text("iteration,step_seconds,train_loss\n10,5.0,1\n")
    assert study.step_seconds(metrics, 100.0, 40) == pytest.approx(2.5)  # too few windows


def _kernel_plateau_results(path, roi=48, rows=None):
    settings = {"val_every": 250, "spacing_mm": 1.6, "roi": roi, "precision": "bf16"}
    row = {"kind": "BFR", "k": 21, "seed": 1, "iterations": 2000, "mean_foreground_dice": 0.9}
    path.write_text(json.dumps({"data": {"settings": settings, "rows": rows or [row]}}))
    return path


def test_repuxnet_runs_of_the_same_seed_and_length_are_taken_from_the_kernel_study(tmp_path):
    results = _kernel_plateau_results(tmp_path / "results.json")
    settings = study.SETTINGS_FULL
    assert study.reusable_row(results, 21, 1, 2000, settings)["mean_foreground_dice"] == 0.9
    assert study.reusable_row(results, 21, 1, 1000, settings) is None  # another length
    assert study.reusable_row(results, 21, 0, 2000, settings) is None  # another seed
    assert study.reusable_row(results, None, 1, 2000, settings) is None  # not RepUX-Net
    other = _kernel_plateau_results(tmp_path / "other.json", roi=64)
    assert study.reusable_row(other, 21, 1, 2000, settings) is None  # other settings
    unit = study._unit("RepUX-Net BFR 21^3", "repuxnet", 21, 1, 2000, settings, False, results)
    row = unit.run(tmp_path / "work", False)  # taken, not trained
    assert row["reused_from"] == "kernel_plateau (d4)" and "kind" not in row
    assert row["mean_foreground_dice"] == 0.9 and not (tmp_path / "work").exists()


def test_the_section_counts_the_planned_ladder_and_says_partial():
    data = _data(seeds=(0,))
    text = "\n".join(study.section(data))
    assert "12 of 36 planned ladder runs done: **partial**" in text
    assert "## (d5) Peers at a plateau" in text and "| RepUX-Net BFR 21^3 | 1 of 1 |" in text
    assert "| MONAI UNet | 0.840 | 0.870 | 0.875 | 0.878 |" in text  # the ladder, one seed
