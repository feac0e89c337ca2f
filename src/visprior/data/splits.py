"""Case-wise cross-validation splits: ``kfold_split`` makes a deterministic one,
``save_split`` / ``load_split`` store it as JSON.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from visprior.data.dataset import DatasetError
from visprior.fileio import atomic_path


def kfold_split(case_names: Iterable[str], folds: int = 5, seed: int = 0) -> list[dict]:
    """Case-wise k-fold cross-validation split, deterministic for a given seed.

    The names are sorted, shuffled with ``random.Random(seed)`` and dealt round-robin into
    ``folds`` validation sets, so the result does not depend on the input order and fold sizes
    differ by at most one.

    Args:
        case_names: unique case names.
        folds: number of folds, from 2 to the number of cases.
        seed: shuffling seed.

    Returns:
        One ``{"train": [...], "val": [...]}`` per fold, both sorted; every case is in exactly
        one validation set.

    Raises:
        ValueError: duplicate names, or ``folds`` not an integer in ``[2, number of cases]``.
    """
    names = sorted(case_names)
    if len(set(names)) != len(names):
        duplicates = sorted({name for name in names if names.count(name) > 1})
        raise ValueError(f"case names must be unique; repeated: {duplicates}")
    if isinstance(folds, bool) or not isinstance(folds, int) or not 2 <= folds <= len(names):
        raise ValueError(f"folds must be an integer from 2 to {len(names)} (cases), got {folds!r}")
    order = names.copy()
    random.Random(seed).shuffle(order)
    split = []
    for fold in range(folds):
        val = set(order[fold::folds])
        split.append({"train": [n for n in names if n not in val], "val": sorted(val)})
    return split


def save_split(split: list[dict], path: str | os.PathLike) -> None:
    """Write a split as JSON, atomically (a reader never sees a half-written file)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(split, indent=2) + "\n", encoding="utf-8")


def load_split(path: str | os.PathLike) -> list[dict[str, list[str]]]:
    """Read a split written by :func:`save_split`.

    Raises:
        DatasetError: the file is missing, is not JSON, or is not a list of
            ``{"train": [...], "val": [...]}``; the message names the file.
    """
    try:
        split = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DatasetError(f"cannot read split file {path}: {err}") from err
    if not isinstance(split, list) or not all(_is_fold(fold) for fold in split):
        raise DatasetError(
            f"split file {path} must hold a list of {{'train': [...], 'val': [...]}}"
        )
    return split


def _is_fold(fold: Any) -> bool:
    return (
        isinstance(fold, dict)
        and {"train", "val"} <= fold.keys()
        and all(isinstance(fold[key], list) for key in ("train", "val"))
        and all(isinstance(name, str) for name in fold["train"] + fold["val"])
    )
