"""The benchmark suite's quick mode runs end to end and writes its report (smoke test)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT


@pytest.mark.slow
def test_quick_benchmarks_write_results(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--repeats", "1", "--out", str(tmp_path)],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=900,
    )
    report = (tmp_path / "RESULTS.md").read_text()
    headings = (
        "## Targets",
        "## (a)",
        "## (b)",
        "## (c)",
        "## Crossover",
        "## (d)",
        "## (e)",
        "## (f)",
        "## (e2)",
        "## (f2)",
        "## (g)",
        "## (g2)",
        "## (h)",
        "## (i)",
        "## (j)",
    )
    for heading in headings:
        assert heading in report
    assert "## Failed cases" not in report
    assert "Quick mode" in report
    assert (tmp_path / "results.png").stat().st_size > 10_000
    assert "| MONAI UNet | 1.21M | 48^3 |" in report  # the quality row: a trained network
    assert "| GG-CAM | **" in report and "| CAM classifier (no gaze) | **" in report
    assert "| MT-UNet (both tasks) | " in report and "| saliency only | " in report
    assert "| GG-CAM, finding mask as gaze | " in report and "rho = 1.0:" in report  # (e2)
    assert "| 0 | 23,507,910 | " in report  # (g): the full ResNet50 CAM classifier
    assert "| control: round " in report
    for criterion in ("redundancy", "magnitude", "taylor", "uniform", "random"):  # (g2)
        assert f"| 4,000,000 | {criterion} | " in report
    assert (tmp_path / "simplify_criteria.png").stat().st_size > 10_000
    assert "| visprior `seg plan` (fingerprint only, 1 process) |" in report
    assert "| two-channel MRI (3 x " in report  # (i): a plan per generated dataset
    assert "| demo, 0.05 min each, seed 1: held-out mean Dice (iterations) |" in report  # (j)
    assert "| demo: mean difference over 2 seeds (min .. max) |" in report


@pytest.mark.slow
def test_one_part_keeps_the_other(tmp_path):
    """``--only quality`` adds (d) to an earlier speed report instead of replacing it."""
    (tmp_path / "results.json").write_text(
        '{"quick": true, "repeats": 1, "brain": {"minutes": 1, "rows": []}, "kept": 1}'
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--quick",
            "--only",
            "quality",
            "--out",
            str(tmp_path),
        ],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=900,
    )
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["kept"] == 1 and results["brain"]["rows"][0]["name"] == "unet"
    assert "## (d)" in (tmp_path / "RESULTS.md").read_text()


def test_quality_rows_merge_by_network():
    from benchmarks.brain import merge

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
    from benchmarks.simplify_criteria import merge

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
