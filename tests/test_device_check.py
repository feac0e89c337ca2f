"""The short GPU check: its dry run on a machine that has only torch, numpy, MONAI and einops
(simulated: an import system that finds nothing else), and the wheels it brings for
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

# A bare machine, simulated: the path finder is replaced by one that finds only the packages
# of ALLOWED (the standard library, visprior's source and BARE's distributions), so anything
# else is as absent as on a machine where it was never installed.
BARE_MACHINE = r"""
import importlib.machinery, sys
ALLOWED = set(sys.argv[1].split(",")) | set(sys.stdlib_module_names) | {"visprior", "benchmarks"}

class Bare:
    @staticmethod
    def find_spec(name, path=None, target=None):
        top = name.split(".")[0]
        if top in ALLOWED or top.startswith("_"):
            return importlib.machinery.PathFinder.find_spec(name, path, target)
        return None

    @staticmethod
    def invalidate_caches():
        importlib.machinery.PathFinder.invalidate_caches()

sys.meta_path = [f for f in sys.meta_path if f is not importlib.machinery.PathFinder] + [Bare]
sys.argv = [sys.argv[0], *sys.argv[2:]]
exec(sys.argv[1])
"""
# what the check imports, and the networks it builds
CHECK_IMPORTS = """
sys.path.insert(0, "src")
import benchmarks.device_check.check, visprior.layers.conv_autotune, visprior.seg.memory_model
import visprior.reparam, monai.inferers
from visprior.nets.registry import get_model
for name in ("repuxnet", "uxnet", "mednext_s"):
    get_model(name, in_channels=1, out_channels=2, feature_size=8)
print("imported")
"""


def _closure(names) -> set[str]:
    """The importable top-level names of these distributions and of every one they require
    (extras left out)."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    found, tops, queue = set(), set(), list(names)
    while queue:
        name = canonicalize_name(queue.pop())
        if name in found:
            continue
        found.add(name)
        try:
            distribution = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # a requirement for another platform
        for path in distribution.files or []:
            top = Path(str(path)).parts[0]
            tops.add(top.removesuffix(".py"))
        for line in distribution.requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                queue.append(requirement.name)
    return {t for t in tops if not t.endswith((".dist-info", ".libs", ".data")) and t != ".."}


@pytest.mark.slow
def test_what_the_check_imports_needs_only_torch_numpy_monai_and_einops():
    allowed = ",".join(sorted(_closure(BARE)))
    assert "yaml" not in allowed and "torch" in allowed and "numpy" in allowed
    done = subprocess.run(
        [sys.executable, "-c", BARE_MACHINE, allowed, CHECK_IMPORTS],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and "imported" in done.stdout, done.stderr[-3000:]


@pytest.mark.slow
def test_the_dry_run_reports_every_part(tmp_path):
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.device_check", str(out), "--dry"],
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
