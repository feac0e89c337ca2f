"""(d4)'s grid and tables on made-up rows whose answers are known."""

from __future__ import annotations

import pytest
from benchmarks.kernel_plateau import study


def _row(kind, k, seed, iterations, mean, accumbens):
    return {
        "kind": kind,
        "k": k,
        "seed": seed,
        "iterations": iterations,
        "mean_foreground_dice": mean,
        "dice": {"accumbens": accumbens, "thalamus": mean + 0.05},
        "class_voxels": {"accumbens": 100, "thalamus": 5000},
        "parameters": 1e6,
        "training_seconds": 100.0,
    }


def _data():
    rows = []
    for seed, (plain, bfr) in enumerate([(0.80, 0.83), (0.81, 0.83), (0.79, 0.82)]):
        rows += [_row("plain", 7, seed, 2000, plain, 0.5), _row("BFR", 7, seed, 2000, bfr, 0.6)]
        rows += [_row("plain", 21, seed, 2000, plain - 0.05, 0.4)]
        rows += [_row("BFR", 21, seed, 2000, bfr, 0.6 + 0.01 * seed)]
    rows += [_row("plain", 7, 0, 1000, 0.795, 0.5), _row("BFR", 7, 0, 1000, 0.80, 0.6)]
    settings = {**study._fixed(study.SETTINGS_FULL), "kernels": [7, 21], "seeds": [0, 1, 2]}
    return {"settings": settings, "rows": rows}


def test_the_grid_runs_the_plateau_seed_at_half_right_after_its_full_length_arms():
    grid = study.plateau_grid(quick=False)
    keys = [grid.key(unit.fields) for unit in grid.units]
    assert len(keys) == 2 * 2 * 5 + 2 * 2 * 1 and len(set(keys)) == len(keys)
    assert keys[0] == ("plain", 7, 0, 2000) and keys[3] == ("BFR", 21, 0, 2000)
    assert keys[4] == ("plain", 7, 0, 1000) and keys[7] == ("BFR", 21, 0, 1000)
    assert keys[8] == ("plain", 7, 1, 2000) and keys[-1] == ("BFR", 21, 4, 2000)
    options = study.demo_options(21, 3, 2000, study.SETTINGS_FULL)
    joined = " ".join(options)
    assert "--kernel-size 21" in joined and "--precision bf16" in joined
    assert "--spacing-mm 1.6" in joined and "--roi 48" in joined and "--seed 3" in joined
    assert study.SETTINGS_FULL["roi"] >= 2 * max(study.SETTINGS_FULL["kernels"])  # context


def test_the_plateau_table_calls_a_change_under_0_01_a_plateau():
    lines = study.plateau_table(_data())
    assert "| 7 | BFR | 0 | 0.800 | 0.830 | +0.030 | no |" in lines
    assert "| 7 | plain | 0 | 0.795 | 0.800 | +0.005 | yes |" in lines
    assert len(lines) == 4  # header, rule, two arms


def test_the_differences_pair_by_seed_at_full_length_only():
    compared = study.differences(_data())
    bfr_7 = compared["k = 7, BFR - plain, mean Dice"]
    assert bfr_7.differences == pytest.approx((0.03, 0.02, 0.03)) and bfr_7.verdict == "better"
    plain_scaling = compared["plain, k = 21 - k = 7, mean Dice"]
    assert plain_scaling.mean == pytest.approx(-0.05) and plain_scaling.verdict == "worse"
    bfr_scaling = compared["BFR, k = 21 - k = 7, accumbens Dice"]
    assert bfr_scaling.differences == pytest.approx((0.0, 0.01, 0.02))


def test_the_section_counts_the_planned_units_and_lists_structures_smallest_first():
    text = "\n".join(study.section(_data()))
    assert "14 of 24 planned units done: **partial**" in text
    assert text.index("| accumbens |") < text.index("| thalamus |")


def test_a_kept_checkpoint_is_copied_whole(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "best.pt").write_bytes(b"weights")
    target = study.keep_checkpoint(run_dir, tmp_path / "kept" / "BFR-k21-seed0" / "best.pt")
    assert target.read_bytes() == b"weights"
    assert not list(target.parent.glob("*.partial"))
