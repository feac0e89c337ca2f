"""The short GPU check: its dry run on a machine that has only torch, numpy, MONAI and einops
(simulated: ``python -S`` with a folder that holds only those), and the wheels it brings for
what such a machine lacks."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from benchmarks.device_check import wheels

from tests.conftest import REPO_ROOT

# The wheels' packages, and torch: with these alone (and their own requirements) the check runs.
BARE = ("torch", "numpy", "monai", "einops")


def _closure(names) -> dict:
    """These distributions and every one they require (extras left out), by normalised name."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    found, queue = {}, list(names)
    while queue:
        name = canonicalize_name(queue.pop())
        if name in found:
            continue
        try:
            found[name] = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # a requirement for another platform
        for line in found[name].requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                queue.append(requirement.name)
    return found


def bare_site(folder: Path) -> Path:
    """A folder that holds only :data:`BARE`'s distributions (links to the installed files), so
    that ``python -S`` with it on the path sees a machine where nothing else is installed."""
    folder.mkdir()
    for distribution in _closure(BARE).values():
        root = Path(distribution.locate_file(""))
        for top in {Path(str(f)).parts[0] for f in distribution.files or []}:
            source, target = root / top, folder / top
            if source.exists() and not target.exists() and top != "..":
                target.symlink_to(source)
    return folder


@pytest.mark.slow
def test_the_dry_run_needs_only_torch_numpy_monai_and_einops(tmp_path):
    out = tmp_path / "out"
    site = bare_site(tmp_path / "site")
    command = f"import sys; sys.path[:0] = [{str(site)!r}]; import runpy; " + (
        "sys.argv[0] = 'device_check'; runpy.run_module('benchmarks.device_check', "
        "run_name='__main__')"
    )
    assert subprocess.run(  # the bare site really lacks what visprior needs elsewhere
        [sys.executable, "-S", "-c", f"import sys; sys.path[:0] = [{str(site)!r}]; import yaml"],
        capture_output=True,
    ).returncode
    done = subprocess.run(
        [sys.executable, "-S", "-c", command, str(out), "--dry"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "device_check.json").read_text())
    assert report["dry"] and report["skipped"]
    assert set(report["parts"]) == {"steps", "conv_paths", "memory", "sliding_window"}
    for name, part in report["parts"].items():
        assert "error" not in part, (name, part["error"])
    steps = report["parts"]["steps"]["rows"]
    assert {(r["network"], r["precision"]) for r in steps} == {
        (n, p) for n in ("repuxnet", "uxnet", "mednext_s") for p in ("bf16", "fp16")
    }
    for row in steps:
        assert "error" in row or (row["median_seconds"] > 0 and row["loss_finite"]), row
    assert all(r["precision"] != "bf16" or "error" not in r for r in steps)
    paths = report["parts"]["conv_paths"]["rows"]
    # every RepUX-Net stage, inference and training, float32 and bf16
    assert len({tuple(r["shape"]) for r in paths}) == 4 and len(paths) == 16
    for row in paths:
        assert row["auto"] in ("direct", "fft") and row["faster"] in ("direct", "fft")
        if not row["auto_measured"]:
            assert row["auto"] == row["rule"]
    (memory,) = report["parts"]["memory"]["rows"]
    assert memory["estimate_gib"] > 0 and memory["measured_gib"] is None
    windows = report["parts"]["sliding_window"]["rows"]
    assert [r["precision"] for r in windows] == ["32", "bf16"]
    assert all(r["finite"] and r["output_shape"] == [1, 14, 48, 48, 40] for r in windows)
    assert "dry run at tiny sizes" in done.stdout


def test_a_missing_wheel_folder_is_named(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.device_check", str(tmp_path), "--wheels", "nowhere"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "--wheels nowhere: no such folder" in done.stderr


def _wheel(folder: Path, name: str, top_level: bool = True) -> Path:
    path = folder / f"{name}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{name}/__init__.py", "VALUE = 42\n")
        if top_level:
            archive.writestr(f"{name}-1.0.dist-info/top_level.txt", f"{name}\n")
        archive.writestr(f"{name}-1.0.dist-info/METADATA", f"Name: {name}\n")
    return path


def test_wheels_are_added_only_where_their_package_is_missing(tmp_path, monkeypatch):
    folder = tmp_path / "wheels"
    folder.mkdir()
    _wheel(folder, "visprior_probe_package")
    _wheel(folder, "json", top_level=False)  # the standard library's: already importable
    monkeypatch.setattr(sys, "path", list(sys.path))
    added = wheels.add_wheels(folder, tmp_path / "deps")
    assert added == ["visprior_probe_package-1.0-py3-none-any.whl"]
    assert sys.path[0] == str(tmp_path / "deps")
    import visprior_probe_package

    assert visprior_probe_package.VALUE == 42
    assert wheels.top_level_names(folder / "json-1.0-py3-none-any.whl") == ["json"]
    monkeypatch.delitem(sys.modules, "visprior_probe_package")
