"""A study as a grid of (setting, seed) units that survives being stopped.

Each finished unit's row goes into the study's results file at once (atomically). Running the
study again skips the finished units, and a unit whose work folder holds a training checkpoint
continues from it, so a stopped run loses at most the steps since that unit's last checkpoint.
Work folders live under ``<study folder>/.work/``, one per unit.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.record import ResultsFile


@dataclass(frozen=True)
class Unit:
    """One cell of a grid: ``fields`` name it (and go into its row); ``run(work, resume)``
    trains and scores it in ``work`` and returns its figures; ``started(work)`` says whether
    ``work`` holds a checkpoint to resume from; ``keep`` keeps ``work`` once the unit is done
    (for a figure drawn from its run)."""

    fields: dict
    run: Callable[[Path, bool], dict]
    started: Callable[[Path], bool]
    keep: bool = False

    @property
    def name(self) -> str:
        text = "-".join(f"{key}{value}" for key, value in self.fields.items())
        return re.sub(r"[^A-Za-z0-9.=-]+", "_", text)


@dataclass(frozen=True)
class Grid:
    """A grid's units, the settings that all its rows share, and how a row is keyed."""

    units: Sequence[Unit]
    settings: dict  # fixed across the grid; a results file made with others is refused
    key_fields: tuple[str, ...]

    def key(self, row: dict) -> tuple:
        return tuple(row.get(field) for field in self.key_fields)


def done_keys(grid: Grid, data: dict | None) -> set[tuple]:
    """The keys of the rows in ``data`` that finished without an error."""
    rows = (data or {}).get("rows", [])
    return {grid.key(row) for row in rows if not row.get("error")}


def check_settings(grid: Grid, data: dict | None, where: Path) -> None:
    stored = (data or {}).get("settings", {})
    differ = {k: (stored[k], v) for k, v in grid.settings.items() if k in stored and stored[k] != v}
    if differ and (data or {}).get("rows"):
        listed = ", ".join(f"{k} {old!r} there, {new!r} asked" for k, (old, new) in differ.items())
        raise SystemExit(
            f"{where} holds a grid made with other settings ({listed}); move it away to start "
            "a new grid, or run with its settings"
        )


def run_grid(
    grid: Grid,
    store: ResultsFile,
    part: str,
    merge: Callable[[dict | None, dict], dict],
    log: Callable[[str], None],
    within: str | None = None,
) -> dict:
    """Run every unit not yet done; after each, merge its row into the store and save.
    ``within``: the grid's data is ``store.data[within]`` (a study of several parts)."""

    def grid_data() -> dict | None:
        if within is None:
            return store.data
        return (store.data or {}).get(within)

    check_settings(grid, grid_data(), store.path)
    work_root = store.path.parent / ".work"
    for unit in grid.units:
        if grid.key(unit.fields) in done_keys(grid, grid_data()):
            continue
        work = work_root / unit.name
        resume = work.is_dir() and unit.started(work)
        if work.is_dir() and not resume:
            shutil.rmtree(work)  # started but nothing saved yet: begin it again
        work.mkdir(parents=True, exist_ok=True)
        log(f"{part}: {unit.name}" + (" (resumed from its checkpoint)" if resume else ""))
        row = {**unit.fields, **unit.run(work, resume), "finished": time.strftime("%Y-%m-%d")}
        merged = merge(grid_data(), {"settings": dict(grid.settings), "rows": [row]})
        store.save(merged if within is None else {**(store.data or {}), within: merged}, part)
        if not row.get("error") and not unit.keep:
            shutil.rmtree(work, ignore_errors=True)
    return grid_data()


def merge_keyed(earlier: dict | None, new: dict, key_fields: Sequence[str]) -> dict:
    """``new``'s rows replace ``earlier``'s rows of the same key; ``new``'s settings."""
    rows = {tuple(r[k] for k in key_fields): r for r in (earlier or {}).get("rows", [])}
    rows.update({tuple(r[k] for k in key_fields): r for r in new["rows"]})
    return {"settings": new["settings"], "rows": list(rows.values())}


def grid_status(grid: Grid, data: dict | None, work_root: Path) -> list[str]:
    """How much of ``grid`` is done: a count, then each unit's state."""
    done = done_keys(grid, data)
    failed = {grid.key(r) for r in (data or {}).get("rows", []) if r.get("error")}
    lines = []
    for unit in grid.units:
        key = grid.key(unit.fields)
        work = work_root / unit.name
        if key in done:
            state = "done"
        elif work.is_dir() and unit.started(work):
            state = "started (resumes from its checkpoint)"
        elif key in failed:
            state = "failed (runs again)"
        else:
            state = "pending"
        lines.append(f"  {unit.name}: {state}")
    finished = sum(grid.key(u.fields) in done for u in grid.units)
    return [f"{finished} of {len(grid.units)} units done", *lines]


def completeness(grid_keys: Sequence[tuple], data: dict | None, key_fields) -> tuple[int, int]:
    """(finished units, planned units) of a grid, for the reports' "partial" notes."""
    rows = (data or {}).get("rows", [])
    finished = {tuple(r.get(f) for f in key_fields) for r in rows if not r.get("error")}
    return sum(key in finished for key in grid_keys), len(grid_keys)
