"""The ``--help`` of ``visprior`` and of every subcommand, compared line by line with the files
in ``tests/golden_help/``, so that every change to a help text shows as a diff of those files.

After a deliberate change, write the files anew and commit them with it:

    .venv/bin/python -m tests.test_help_golden
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

GOLDEN = Path(__file__).resolve().parent / "golden_help"
WIDTH = 100  # the terminal width the help is laid out for
# argparse's layout changes between Python versions (3.13 writes "-o, --output OUTPUT" where
# 3.11 writes "-o OUTPUT, --output OUTPUT"), so the files hold one version's layout.
VERSION_FILE = GOLDEN / "python-version.txt"


def commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ("visprior",)
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """(command words, parser) of ``parser`` and of each subcommand below it."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, (*path, name))


def help_texts() -> dict[str, str]:
    """Golden file name -> help text, laid out for a ``WIDTH``-column terminal."""
    from visprior.cli import build_parser

    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(WIDTH)  # argparse reads the width when it formats
    try:
        return {
            "_".join(path) + ".txt": sub.format_help() for path, sub in commands(build_parser())
        }
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous


def python_version() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def write_golden_files() -> None:
    """Replace the golden files with today's help texts."""
    GOLDEN.mkdir(exist_ok=True)
    for stale in GOLDEN.glob("*.txt"):
        stale.unlink()
    for name, text in help_texts().items():
        (GOLDEN / name).write_text(text)
    VERSION_FILE.write_text(python_version() + "\n")


@pytest.fixture(scope="module")
def texts() -> dict[str, str]:
    made_with = VERSION_FILE.read_text().strip()
    if made_with != python_version():
        pytest.skip(f"the golden help files hold Python {made_with}'s argparse layout")
    return help_texts()


def test_every_command_has_a_golden_file_and_no_file_is_left_over(texts):
    files = {path.name for path in GOLDEN.glob("*.txt")} - {VERSION_FILE.name}
    assert sorted(texts) == sorted(files), "run: python -m tests.test_help_golden"


@pytest.mark.parametrize("name", sorted(p.name for p in GOLDEN.glob("visprior*.txt")))
def test_help_matches_its_golden_file(texts, name):
    assert name in texts, f"{name}: no such command any more"
    assert texts[name].splitlines() == (GOLDEN / name).read_text().splitlines(), (
        f"the help of `{name[:-4].replace('_', ' ')}` changed; if on purpose, run: "
        "python -m tests.test_help_golden"
    )


if __name__ == "__main__":
    write_golden_files()
    print(f"wrote {len(list(GOLDEN.glob('visprior*.txt')))} help files to {GOLDEN}")
