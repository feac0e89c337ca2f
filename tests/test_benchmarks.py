"""The benchmark suite's quick mode runs end to end and writes its report (smoke test)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT


def _run_benchmarks(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", *args],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
def test_quick_benchmarks_write_results(tmp_path):
    _run_benchmarks("--quick", "--repeats", "1", "--out", str(tmp_path), timeout=900)
    index = (tmp_path / "RESULTS.md").read_text()
    studies = sorted(path.parent.name for path in tmp_path.glob("*/results.json"))
    assert studies == sorted(
        ("speed", "quality", "mednext_speed", "kernel_scaling", "kernel_plateau", "peers")
        + ("peers_plateau",)
        + ("ggcam", "mtunet")
        + ("gaze_ct", "simplify", "simplify_criteria", "large_volume", "planning", "precision")
        + ("budget_plan", "demo_holds")
    )
    for study in studies:
        assert f"[{study}/]({study}/RESULTS.md)" in index
        content = json.loads((tmp_path / study / "results.json").read_text())
        for record in content["parts"].values():
            assert record["machine"]["cpu"] and "amx_bf16" in record["machine"]["cpu_flags"]
            assert record["date"] and record["command"].startswith("python -m benchmarks")
    report = "\n".join((tmp_path / s / "RESULTS.md").read_text() for s in studies)
    headings = ("## Targets", "## (a)", "## (b)", "## (c)", "## (b2)", "## Crossover", "## (d)")
    headings += (
        "## (d2)",
        "## (d4)",
        "## (d5)",
        "## (d3)",
        "## (e)",
        "## (f)",
        "## (e2)",
        "## (f2)",
        "## (g)",
    )
    for heading in (*headings, "## (g2)", "## (h)", "## (i)", "## (j)", "## (k)", "## (l)"):
        assert heading in report
    assert "## Failed cases" not in report
    assert "Quick mode" in report and "**quick mode**" in index
    assert (tmp_path / "speed" / "figure.png").stat().st_size > 10_000
    assert "| MONAI UNet | 1.21M | 48^3 |" in report  # the quality row: a trained network
    assert "| 3 | BFR | 1 | " in report and "| k = 3, mean Dice | 0: " in report  # (d2), paired
    assert "| 5 | BFR, UpKern | 1 | " in report  # quick: a k3 warm-up, then k5
    assert "| k = 3, BFR - plain, mean Dice | 0: " in report  # (d4), paired
    assert (tmp_path / "kernel_plateau" / ".kept" / "BFR-k3-seed0" / "best.pt").is_file()
    assert "| MONAI UNet | 0 of 1 | **" in report or "| MONAI UNet | 1 of 1 | **" in report  # (d5)
    assert (tmp_path / "peers_plateau" / ".kept" / "unet-seed0-it2" / "best.pt").is_file()
    assert (tmp_path / "kernel_scaling" / "figure.png").stat().st_size > 10_000
    assert "| MedNeXt-S k5, UpKern from k3 | 0.05 | 1 | " in report  # (d3)
    assert "| GG-CAM | **" in report and "| CAM classifier (no gaze) | **" in report
    assert "| MT-UNet (both tasks) | " in report and "| saliency only | " in report
    assert "| GG-CAM, finding mask as gaze | " in report and "rho = 1.0:" in report  # (e2)
    assert "| GG-CAM, AUC i.i.d. | 0: " in report  # (e2), paired by seed
    assert (tmp_path / "gaze_ct" / "figure.png").stat().st_size > 10_000
    assert "| 0 | 23,507,910 | " in report  # (g): the full ResNet50 CAM classifier
    assert "| control: round " in report
    for criterion in ("redundancy", "magnitude", "taylor", "uniform", "random"):  # (g2)
        assert f"| 4,000,000 | {criterion} | " in report
    assert (tmp_path / "simplify_criteria" / "figure.png").stat().st_size > 10_000
    assert "| visprior `seg plan` (fingerprint only, 1 process) |" in report
    assert "| two-channel MRI (3 x " in report  # (i): a plan per generated dataset
    assert "| training step @ 32^3, batch 1 (s) | " in report  # (j)
    for arm in ("planned", "hand-tuned"):  # (k): both arms of seed 0, and their pair
        assert f"| brain | 0.5 min | {arm} | 0 | " in report
    assert "| brain: planned - hand-tuned | 0: " in report
    assert "| 0 | 16/128, " in report and "target met on " in report  # (l): the demo as shipped
    # finished units leave no work behind, but for the two runs the (e2) figure is drawn from
    kept = sorted(path.parent.name for path in tmp_path.glob("*/.work/*/run"))
    assert kept == ["labelCAM_classifier_no_gaze_-rho1.0-train_fraction1.0-seed0"] + [
        "labelGG-CAM-rho1.0-train_fraction1.0-seed0"
    ]
    status = _run_benchmarks(
        "--quick", "--only", "kernel-scaling", "--status", "--out", str(tmp_path)
    )
    assert "kernel-scaling:\n2 of 2 units done" in status.stdout


def test_one_part_writes_its_study_and_the_index_keeps_the_others(tmp_path):
    for part in ("mtunet", "ggcam"):
        _run_benchmarks("--quick", "--only", part, "--out", str(tmp_path))
    ggcam = json.loads((tmp_path / "ggcam" / "results.json").read_text())
    assert ggcam["study"] == "ggcam" and ggcam["quick"] is True
    assert ggcam["parts"]["ggcam"]["command"].endswith("--only ggcam --out " + str(tmp_path))
    assert ggcam["data"]["rows"]
    index = (tmp_path / "RESULTS.md").read_text()
    assert "## (e) " in index and "## (f) " in index  # the earlier part stays listed
    assert "## (e) GG-CAM" in (tmp_path / "ggcam" / "RESULTS.md").read_text()


def test_a_full_mode_results_file_is_not_mixed_with_quick_rows(tmp_path):
    folder = tmp_path / "ggcam"
    folder.mkdir()
    (folder / "results.json").write_text(
        '{"study": "ggcam", "quick": false, "parts": {}, "data": 1}'
    )
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", "ggcam", "--out", str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0
    assert f"{folder / 'results.json'} holds a full-mode run" in done.stderr


def test_measurements_in_a_fresh_process_and_in_this_one():
    from benchmarks import networks, timing
    from benchmarks.speed import large_kernel

    from visprior.layers.conv_algorithm import get_conv_algorithm

    isolated = timing.measure_in_subprocess(
        large_kernel.build_case, "visprior FFT", 2, 8, repeats=2
    )
    assert isolated.error is None and isolated.repeats == 2 and len(isolated.all_seconds) == 2
    timing.isolate(False)
    try:
        here = timing.measure_in_subprocess(
            networks.build_training_step, "uxnet", "direct", 32, True, repeats=1
        )
        failed = timing.measure_in_subprocess(large_kernel.build_case, "no such method", 2, 8)
    finally:
        timing.isolate(True)
    assert here.error is None and here.seconds > 0
    assert get_conv_algorithm() == "auto"  # the builder's "direct" did not leak out
    assert "no such method" in failed.error and failed.repeats == 0


def test_precision_section_sums_up_the_seeds():
    from benchmarks.precision.study import precision_section

    def precision(seconds: float, dice: dict[str, float]) -> dict:
        timed = {"seconds": seconds, "peak_mib": 100.0, "error": None}
        return {
            "training_step": timed,
            "sliding_window": timed,
            "demo_seeds": {
                s: {"mean_foreground_dice": d, "iterations": 9} for s, d in dice.items()
            },
        }

    results = {
        "size": 32,
        "volume": 64,
        "roi": 32,
        "minutes": 5.0,
        "32": precision(2.0, {"0": 0.80, "1": 0.70}),
        "bf16": precision(1.0, {"0": 0.85, "1": 0.69}),
    }
    text = "\n".join(precision_section(results))
    assert "| training step @ 32^3, batch 1 (s) | 2.00 | 1.00 | 2.00x |" in text
    assert "| demo, 5 min each, seed 1: held-out mean Dice (iterations) | 0.700 (9) | " in text
    assert (
        "| demo: mean difference over 2 seeds (min .. max) | | | +0.020 (-0.010 .. +0.050) |"
        in text
    )


def test_quality_rows_merge_by_network():
    from benchmarks.quality.study import merge

    earlier = {"minutes": 10, "rows": [{"name": "unet", "v": 1}, {"name": "uxnet", "v": 1}]}
    new = {"minutes": 10, "rows": [{"name": "repuxnet", "v": 2}, {"name": "unet", "v": 2}]}
    merged = merge(earlier, new)
    assert [(r["name"], r["v"]) for r in merged["rows"]] == [
        ("repuxnet", 2),
        ("uxnet", 1),
        ("unet", 2),
    ]  # the comparison's order, newest figures
    assert merge({"minutes": 5, "rows": earlier["rows"]}, new) == new  # other budget: replaced


def test_criteria_rows_merge_by_seed_and_criterion():
    from benchmarks.simplify_criteria.study import merge

    def part(rows, seconds, natural=None, sizes=(500, 200)):
        return {
            "settings": {"sizes": list(sizes)},
            "rows": [{"seed": s, "criterion": c, "v": v} for s, c, v in rows],
            "natural": natural,
            "seconds_per_image": seconds,
        }

    earlier = part([(0, "magnitude", 1), (0, "redundancy", 1)], 0.5, natural={"seed": 0})
    new = part([(1, "redundancy", 2), (0, "magnitude", 2)], 0.8)
    merged = merge(earlier, new)
    assert [(r["seed"], r["criterion"], r["v"]) for r in merged["rows"]] == [
        (0, "redundancy", 1),
        (0, "magnitude", 2),
        (1, "redundancy", 2),
    ]  # seeds in order, criteria in the comparison's order, newest figures
    assert merged["natural"] == {"seed": 0} and merged["seconds_per_image"] == 0.5
    assert merge(part([], 0.5, sizes=(100,)), new) == new  # other sizes: replaced


def _demo_row(dice: float, accumbens: float, **fields) -> dict:
    return {
        "mean_foreground_dice": dice,
        "dice": {"thalamus": dice, "accumbens": accumbens},
        "class_voxels": {"thalamus": 9000, "accumbens": 300},
        "parameters": 4_000_000,
        "iterations": 200,
        "training_seconds": 240.0,
        **fields,
    }


def test_scaling_pairs_bfr_with_plain_by_seed():
    from benchmarks.kernel_scaling.study import merge, paired_differences, scaling_section

    settings = {"kernels": [7], "seeds": [0, 1], "iterations": 200, "val_every": 50}
    rows = [
        _demo_row(0.80, 0.50, kind="plain", k=7, seed=0),
        _demo_row(0.84, 0.60, kind="BFR", k=7, seed=0),
        _demo_row(0.70, 0.40, kind="plain", k=7, seed=1),
        _demo_row(0.72, 0.34, kind="BFR", k=7, seed=1),
    ]
    scaling = {"settings": settings, "rows": rows}
    ((k, mean, smallest),) = paired_differences(scaling)
    assert k == 7 and mean.seeds == smallest.seeds == (0, 1)
    assert mean.differences == pytest.approx([0.04, 0.02])
    assert smallest.differences == pytest.approx([0.10, -0.06])
    text = "\n".join(scaling_section(scaling))
    assert "| 7 | plain | 2 | 4.00M | 1.20 | 0.750 ± 0.071 | 0.450 ± 0.071 |" in text
    # mean 0.03, sd 0.01414: half-width 12.706 * 0.01414 / sqrt(2) = 0.127
    assert "| k = 7, mean Dice | 0: +0.040, 1: +0.020 | +0.030 | [-0.097, +0.157] |" in text
    assert "| k = 7, accumbens Dice | 0: +0.100, 1: -0.060 | +0.020 | " in text  # the smallest
    # a new seed-1 BFR row replaces the old one; a k=13 row is added
    new_rows = [
        _demo_row(0.9, 0.5, kind="BFR", k=7, seed=1),
        _demo_row(0.6, 0.1, kind="BFR", k=13, seed=0),
    ]
    merged = merge(
        scaling, {"settings": {**settings, "kernels": [7, 13], "seeds": [0, 1]}, "rows": new_rows}
    )
    assert [(r["k"], r["kind"], r["seed"], r["mean_foreground_dice"]) for r in merged["rows"]] == [
        (7, "plain", 0, 0.80),
        (7, "plain", 1, 0.70),
        (7, "BFR", 0, 0.84),
        (7, "BFR", 1, 0.9),
        (13, "BFR", 0, 0.6),
    ]
    other = {"settings": {**settings, "iterations": 400}, "rows": new_rows}
    assert merge(scaling, other) == other  # another iteration count: replaced


def test_upkern_rows_pair_with_bfr_of_the_same_seed():
    from benchmarks.kernel_scaling.study import UPKERN, merge, scaling_section

    settings = {"kernels": [21], "seeds": [0, 1], "iterations": 200, "val_every": 50}
    bfr = [_demo_row(0.50, 0.0, kind="BFR", k=21, seed=s) for s in (0, 1)]
    upkern = [
        _demo_row(0.70, 0.2, kind=UPKERN, k=21, seed=0, warmup_kernel=7),
        _demo_row(0.60, 0.0, kind=UPKERN, k=21, seed=1, warmup_kernel=7),
    ]
    scaling = merge({"settings": settings, "rows": bfr}, {"settings": settings, "rows": upkern})
    assert [(r["kind"], r["seed"]) for r in scaling["rows"]] == [
        ("BFR", 0),
        ("BFR", 1),
        (UPKERN, 0),
        (UPKERN, 1),
    ]
    text = "\n".join(scaling_section(scaling))
    assert "| 21 | BFR, UpKern | 2 | 4.00M | 1.20 | 0.650 ± 0.071 | 0.100 ± 0.141 |" in text
    assert "Paired by seed, BFR, UpKern minus BFR" in text
    assert "| k = 21, mean Dice | 0: +0.200, 1: +0.100 | +0.150 | " in text
    assert "a BFR run at k = 7 for half of the iterations" in text
    assert "BFR minus plain" not in text  # no plain rows to pair with


def test_peer_rows_of_the_same_settings_replace_and_new_settings_append():
    from benchmarks.peers.study import merge, peers_table

    def row(name, seed, dice, minutes=5.0, k=None, start=None, label=None, **extra):
        return _demo_row(
            dice,
            dice / 2,
            name=name,
            seed=seed,
            minutes=minutes,
            kernel_size=k,
            start=start,
            label=label or name,
            **extra,
        )

    earlier = {"settings": {}, "rows": [row("unet", 0, 0.8), row("unet", 1, 0.7)]}
    new = {
        "settings": {},
        "rows": [
            row("unet", 1, 0.9),
            row("unet", 0, 0.5, minutes=10.0),
            row("mednext_s", 0, 0.6, k=3, label="MedNeXt-S k3"),
            row(
                "mednext_s",
                0,
                0.7,
                k=5,
                start="upkern",
                label="MedNeXt-S k5",
                total_training_seconds=480.0,
            ),
        ],
    }
    merged = merge(earlier, new)
    assert merged["settings"]["seeds"] == [0, 1]  # every seed in the table, not the last part's
    assert [
        (r["name"], r["minutes"], r["seed"], r["mean_foreground_dice"]) for r in merged["rows"]
    ] == [
        ("unet", 5.0, 0, 0.8),
        ("unet", 5.0, 1, 0.9),
        ("mednext_s", 5.0, 0, 0.6),
        ("mednext_s", 5.0, 0, 0.7),
        ("unet", 10.0, 0, 0.5),
    ]
    table = "\n".join(peers_table(merged))
    assert "| unet | 5 | 2 | 4.00M | 200 ± 0 | **0.850 ± 0.071** | 0.425 ± 0.035 | 4.0 |" in table
    assert (
        "| MedNeXt-S k5 | 5 | 1 | 4.00M | 200 | **0.700** | 0.350 | 8.0 |" in table
    )  # k3 included


def test_kernel_profile_on_known_kernels():
    import torch
    from benchmarks.kernel_scaling.study import kernel_profile

    from visprior.layers.frequency_prior import frequency_prior

    uniform = torch.ones(2, 1, 9, 9, 9)
    centre = torch.zeros(2, 1, 9, 9, 9)
    centre[:, :, 4, 4, 4] = 3.0
    state = {"a.dwconv.weight": uniform, "b.dwconv.weight": centre, "c.conv.weight": uniform}
    profile = kernel_profile(state)
    assert profile["outside_core"] == pytest.approx(((729 - 343) / 729 + 0.0) / 2)
    assert profile["mean_abs_by_shell"] == pytest.approx([2.0, 0.5, 0.5, 0.5, 0.5])
    # a BFR layer is measured by W * M: M = 1 / (1 + d) halves the first shell's face taps
    bfr = {
        "x.dwconv.weight": torch.ones(1, 1, 3, 3, 3),
        "x.dwconv.frequency_map": frequency_prior(3, 3),
    }
    shells = kernel_profile(bfr)["mean_abs_by_shell"]
    assert shells[0] == pytest.approx(1.0)
    faces, edges, corners = 1 / 2, 1 / (1 + 2**0.5), 1 / (1 + 3**0.5)
    assert shells[1] == pytest.approx((6 * faces + 12 * edges + 8 * corners) / 26)
