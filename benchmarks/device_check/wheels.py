"""The wheel files the device check brings to a machine that has only Python and torch.

``python -m benchmarks.device_check.wheels DIR`` (``make device-wheels``) downloads them for
CPython 3.12 on x86-64 Linux, at the versions installed here, and checks that they stay within
:data:`MAX_BYTES`; :func:`add_wheels` unpacks those that the machine lacks and puts them on
``sys.path`` (a wheel is a zip of importable folders, so no pip is needed).
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

# what visprior's networks and the check import beyond torch: MONAI's blocks, einops' rearrange,
# numpy under both
PACKAGES = ("numpy", "monai", "einops")
MAX_BYTES = 64 * 2**20
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


def top_level_names(wheel: Path) -> list[str]:
    """The importable names a wheel holds: its ``top_level.txt``, else its root folders."""
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        listed = [n for n in names if n.endswith(".dist-info/top_level.txt")]
        if listed:
            return [line for line in archive.read(listed[0]).decode().split() if line]
    roots = {n.split("/", 1)[0] for n in names if "/" in n}
    return sorted(r for r in roots if not r.endswith((".dist-info", ".data", ".libs")))


def add_wheels(folder: Path, target: Path) -> list[str]:
    """Unpack into ``target`` each wheel in ``folder`` whose packages are not importable here,
    put ``target`` first on ``sys.path``, and return the wheels' file names that were added."""
    added = []
    for wheel in sorted(Path(folder).glob("*.whl")):
        names = top_level_names(wheel)
        if names and all(importlib.util.find_spec(name) is not None for name in names):
            continue
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(target)
        added.append(wheel.name)
    if added and str(target) not in sys.path:
        sys.path.insert(0, str(target))
        importlib.invalidate_caches()
    return added


def download(folder: Path, python_version: str = "3.12") -> list[Path]:
    """Fetch :data:`PACKAGES` at the versions installed here into ``folder``.

    Raises:
        ValueError: the wheels together exceed :data:`MAX_BYTES`.
    """
    folder.mkdir(parents=True, exist_ok=True)
    pins = [f"{name}=={metadata.version(name)}" for name in PACKAGES]
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
    command += ["--only-binary=:all:", "--python-version", python_version, "-d", str(folder)]
    for platform in PLATFORMS:
        command += ["--platform", platform]
    subprocess.run([*command, *pins], check=True)
    wheels = sorted(folder.glob("*.whl"))
    total = sum(w.stat().st_size for w in wheels)
    if total > MAX_BYTES:
        raise ValueError(
            f"the wheels in {folder} take {total / 2**20:.1f} MiB, over the "
            f"{MAX_BYTES / 2**20:.0f} MiB the device machine takes"
        )
    return wheels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.device_check.wheels")
    parser.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    wheels = download(args.folder)
    total = sum(w.stat().st_size for w in wheels) / 2**20
    print(f"{len(wheels)} wheels, {total:.1f} MiB, in {args.folder}: {[w.name for w in wheels]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
