"""Every figure quoted in a result paragraph must come from an artifact.

A result paragraph sits between ``<!-- figures: STUDY ... -->`` and ``<!-- /figures -->`` (in a
study's ``analysis.md`` its own study is implied, and the marker may be bare: ``<!-- figures
-->``). A number in it is backed when a number of the named studies' generated tables, or a
value in their results files, rounds to it at the precision it is written with: ``0.90`` is
backed by 0.903, ``51%`` by 0.512, ``730x`` by 730.3x. Code spans, link targets, dates and the
digits inside names (ResNet50, bf16, k7, 21^3's exponent) are not figures.
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

MARKED = re.compile(
    r"<!-- figures(?::(?P<studies>[^>]*?))? -->(?P<body>.*?)<!-- /figures -->", re.S
)
NUMBER = re.compile(
    r"(?<![\w.^/#@-])[+\-−]?(?P<digits>\d[\d,]*(?:\.\d+)?)(?P<unit>%|x)?(?![\w]|\.\d)"
)
NOT_FIGURES = re.compile(r"`[^`]*`|\]\([^)]*\)|\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True)
class Paragraph:
    where: str  # file and line
    studies: tuple[str, ...]
    text: str


def marked_paragraphs(path: Path, implied: tuple[str, ...] = ()) -> Iterator[Paragraph]:
    text = path.read_text()
    for match in MARKED.finditer(text):
        named = tuple((match.group("studies") or "").split())
        line = text.count("\n", 0, match.start()) + 1
        yield Paragraph(f"{path}:{line}", tuple(dict.fromkeys(implied + named)), match["body"])


def figures(text: str) -> Iterator[tuple[str, str]]:
    """(as written, the digits) of every figure in ``text``."""
    for match in NUMBER.finditer(NOT_FIGURES.sub(" ", text)):
        yield match.group(0), match.group("digits")


def _values(node) -> Iterator[float]:
    if isinstance(node, dict):
        for value in node.values():
            yield from _values(value)
    elif isinstance(node, list):
        for value in node:
            yield from _values(value)
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        yield abs(float(node))


class Backing:
    """The figures a set of studies can back: their tables' numbers and their results' values."""

    def __init__(self, table_texts: Iterable[str], results: Iterable[object]):
        shown = [float(d.replace(",", "")) for text in table_texts for _, d in figures(text)]
        self.shown = sorted(shown)
        self.values = sorted(v for data in results for v in _values(data))

    @staticmethod
    def _near(values: list[float], target: float, tolerance: float) -> bool:
        i = bisect.bisect_left(values, target - tolerance)
        return i < len(values) and values[i] <= target + tolerance

    def backs(self, written: str, digits: str) -> bool:
        value = float(digits.replace(",", ""))
        decimals = len(digits.split(".")[1]) if "." in digits else 0
        tolerance = 0.5 * 10**-decimals + 1e-9
        candidates = [(value, tolerance)]
        if written.endswith("%"):
            candidates.append((value / 100, tolerance / 100))  # a share written as a percentage
        return any(
            self._near(pool, target, tol)
            for target, tol in candidates
            for pool in (self.shown, self.values)
        )


def load_backing(studies: Iterable[str], root: Path) -> Backing:
    """The tables of each study's generated report and the data of its results file."""
    from benchmarks.report import study_tables
    from benchmarks.studies import STUDIES

    by_name = {study.name: study for study in STUDIES}
    texts, results = [], []
    for name in studies:
        if name not in by_name:
            raise ValueError(f"no study named {name!r} (studies: {', '.join(by_name)})")
        content = json.loads((root / name / "results.json").read_text())
        texts.append("\n".join(study_tables(by_name[name], content)))
        results.append(content)
    return Backing(texts, results)


def unbacked(paragraph: Paragraph, root: Path) -> list[str]:
    if not paragraph.studies:
        raise ValueError(f"{paragraph.where}: name the studies that back its figures")
    backing = load_backing(paragraph.studies, root)
    return [
        written for written, digits in figures(paragraph.text) if not backing.backs(written, digits)
    ]
