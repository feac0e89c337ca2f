"""No figure without an artifact: every number in a marked result paragraph of the README, the
studies' analyses and benchmarks/reading.md comes from a results file or a generated table."""

from __future__ import annotations

import pytest
from benchmarks.backing import Backing, Paragraph, figures, marked_paragraphs, unbacked

from tests.conftest import REPO_ROOT

BENCHMARKS = REPO_ROOT / "benchmarks"
ANALYSES = sorted(BENCHMARKS.glob("*/analysis.md"))


def _paragraphs() -> list[Paragraph]:
    found = [p for path in ANALYSES for p in marked_paragraphs(path, (path.parent.name,))]
    for path in (REPO_ROOT / "README.md", BENCHMARKS / "reading.md"):
        found += marked_paragraphs(path)
    return found


def test_every_analysis_and_the_readme_mark_their_result_paragraphs():
    assert len(ANALYSES) >= 13
    for path in [*ANALYSES, REPO_ROOT / "README.md"]:
        text = path.read_text()
        assert list(marked_paragraphs(path)), f"{path}: no marked result paragraph"
        assert text.count("<!-- figures") == text.count("<!-- /figures -->"), path


@pytest.mark.parametrize("paragraph", _paragraphs(), ids=lambda p: p.where)
def test_every_figure_in_a_marked_paragraph_is_backed(paragraph):
    assert unbacked(paragraph, BENCHMARKS) == []


def test_a_figure_is_backed_by_what_rounds_to_it():
    backing = Backing(["| BFR | 0.903 | 730.3x |"], [{"share": 0.512, "steps": [955, 619]}])
    for written in ("0.903", "0.90", "730x", "51%", "955", "-0.903"):
        (digits,) = [d for _, d in figures(written)]
        assert backing.backs(written, digits), written
    for written in ("0.904", "52%", "956", "0.91"):
        (digits,) = [d for _, d in figures(written)]
        assert not backing.backs(written, digits), written


def test_names_dates_and_code_are_not_figures():
    text = "ResNet50 at 21^3 on bf16, k7, (d2), `--seeds 0 1`, 2026-12-01, [x](a/b2.md); 0.5 s"
    assert [written for written, _ in figures(text)] == ["21", "0.5"]
