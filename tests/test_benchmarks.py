"""The benchmark suite's quick mode runs end to end and writes its report (smoke test)."""

from __future__ import annotations

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
    for heading in ("## Targets", "## (a)", "## (b)", "## (c)", "## Crossover"):
        assert heading in report
    assert "## Failed cases" not in report
    assert "Quick mode" in report
    assert (tmp_path / "results.png").stat().st_size > 10_000
