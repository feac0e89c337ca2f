"""Run every benchmark in one go and write ``benchmarks/RESULTS.md`` and ``results.png``.

python -m benchmarks                  # everything (about 2 hours on 2 cores)
python -m benchmarks --only speed     # (a)-(c) and the crossover (about 45 minutes)
python -m benchmarks --only quality   # (d) equal training time on the brain task (about 55)
python -m benchmarks --only kernel-scaling  # (d2) plain vs BFR at k 7/13/21, equal iterations (60)
python -m benchmarks --only kernel-scaling-upkern  # (d2) BFR k21 by UpKern from a k7 warm-up (11)
python -m benchmarks --only peers     # (d3) six networks, 5 minutes each, 2 seeds (about 80)
python -m benchmarks --only mednext-speed  # (b2) MedNeXt-S steps, MONAI vs visprior convs (5)
python -m benchmarks --only ggcam     # (e) GG-CAM vs no gaze on the synthetic set (about 15)
python -m benchmarks --only mtunet    # (f) MT-UNet vs single-task UNets, synthetic (about 10)
python -m benchmarks --only gaze-ct   # (e2) + (f2) on radiographs rendered from a real CT
python -m benchmarks --only ggcam-ct  # (e2) alone: gaze under a shortcut (--rhos 0.9 1.0)
python -m benchmarks --only mtunet-ct # (f2) alone
python -m benchmarks --only simplify  # (g) ResNet50 shrunk by kernel redundancy (about 30)
python -m benchmarks --only simplify-criteria --seeds 0  # (g2) five cutting rules, one seed
python -m benchmarks --only large-volume  # (h) a whole 512 x 512 x 300 CT predicted on the CPU
python -m benchmarks --only planning  # (i) fingerprint cost, plans beside nnU-Net's (about 15)
python -m benchmarks --only precision # (j) bf16 vs float32 on this CPU (about 20)
python -m benchmarks --quick          # small sizes, a smoke test (CI runs it)

``--only`` keeps the other part's figures from an earlier run's results.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from benchmarks import (
    brain,
    crossover,
    gaze_ct,
    ggcam,
    kernel_scaling,
    large_kernel,
    large_volume,
    mednext_speed,
    mtunet,
    networks,
    peers,
    planning,
    precision,
    simplify,
    simplify_criteria,
)
from benchmarks.report import write_plot, write_report
from benchmarks.timing import isolate, measure_in_subprocess


def _row(measurement) -> dict:
    return {
        "seconds": measurement.seconds,
        "repeats": measurement.repeats,
        "peak_mib": measurement.peak_mib,
        "all_seconds": measurement.all_seconds,
        "error": measurement.error,
        "parts": measurement.parts,
    }


def _log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def run_speed(quick: bool, repeats: int) -> dict:
    results: dict = {}

    stages = large_kernel.STAGES_QUICK if quick else large_kernel.STAGES_FULL
    results["large_kernel"] = []
    for channels, size in stages:
        row = {"channels": channels, "size": size}
        for method in large_kernel.METHODS:
            m = measure_in_subprocess(
                large_kernel.build_case, method, channels, size, repeats=repeats
            )
            row[method] = _row(m)
            _log(f"(a) {method} {channels} ch @ {size}^3: {m.seconds:.3f} s")
        results["large_kernel"].append(row)

    results["crossover"] = []
    for k, channels, size in crossover.CASES_QUICK if quick else crossover.CASES_FULL:
        row = {"k": k, "channels": channels, "size": size}
        for training in (False, True):
            mode = "train" if training else "infer"
            row[f"auto_{mode}"] = crossover.auto_choice(k, size, training)
            for method in ("direct", "fft"):
                if training and method == "direct" and k == large_kernel.KERNEL:
                    continue  # the same measurement as table (a)
                m = measure_in_subprocess(
                    crossover.build_case, method, training, k, channels, size, repeats=repeats
                )
                row[f"{mode}_{method}"] = _row(m)
        _log(f"crossover k={k} {channels} ch @ {size}^3 done")
        results["crossover"].append(row)

    sizes = (32, 64) if quick else (64, 96)
    results["training"] = []
    for label, name, algorithm in networks.TRAINING:
        row = {"label": label, "name": name, "algorithm": algorithm}
        for size in sizes:
            if algorithm == "direct" and size != sizes[0]:
                continue  # F.conv3d only at the smaller crop: minutes per step
            if size < networks.MIN_TRAINING_SIZE.get(name, 0):
                continue
            m = measure_in_subprocess(
                networks.build_training_step, name, algorithm, size, quick, repeats=repeats
            )
            row[str(size)] = _row(m)
            _log(f"(b) {label} @ {size}^3: {m.seconds:.2f} s")
        results["training"].append(row)

    results["bfr_overhead"] = run_bfr_overhead(quick, repeats)

    volume, roi = (96, 64) if quick else (160, 96)
    results["inference"] = {"volume": volume, "roi": roi, "rows": []}
    for label, name in networks.INFERENCE:
        m = measure_in_subprocess(
            networks.build_inference, name, volume, roi, quick, repeats=repeats
        )
        results["inference"]["rows"].append({"label": label, "name": name, **_row(m)})
        _log(f"(c) {label} sliding window {volume}^3: {m.seconds:.2f} s")
    return results


def run_bfr_overhead(quick: bool, repeats: int) -> list[dict]:
    """BFR vs plain 21^3 kernels, steps alternated in one process (see build_alternating_steps)."""
    rows = []
    for size in (32, 64) if quick else (64, 96):
        m = measure_in_subprocess(
            networks.build_alternating_steps,
            ("repuxnet", "repuxnet_plain"),
            size,
            quick,
            repeats=repeats,
        )
        rows.append({"size": size, **_row(m)})
        _log(f"(b) BFR vs plain, alternated @ {size}^3: {m.parts and 'done' or m.error}")
    return rows


def run_mednext_speed(quick: bool, repeats: int) -> list[dict]:
    """(b2) MedNeXt-S training steps with MONAI's and with visprior's depth-wise convs."""
    rows = []
    size = 32 if quick else 48
    for k in mednext_speed.KERNELS_QUICK if quick else mednext_speed.KERNELS_FULL:
        row = {"k": k, "size": size}
        for variant in mednext_speed.VARIANTS:
            m = measure_in_subprocess(mednext_speed.build_step, variant, k, size, repeats=repeats)
            row[variant] = _row(m)
            _log(f"(b2) MedNeXt-S k{k} {variant}: {m.seconds:.2f} s")
        rows.append(row)
    return rows


def machine_description() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
    }


def run_large_volume(quick: bool) -> dict:
    settings = large_volume.SETTINGS_QUICK if quick else large_volume.SETTINGS_FULL
    rows = []
    with tempfile.TemporaryDirectory(prefix="visprior-ct-") as folder:
        large_volume.write_inputs(Path(folder), settings["shape"], settings["roi"])
        for buffer, probabilities in large_volume.CASES:
            m = measure_in_subprocess(
                large_volume.build_case, folder, buffer, probabilities, repeats=1
            )
            rows.append({"buffer": buffer, "probabilities": probabilities, **_row(m)})
            _log(
                f"(h) {buffer}, probabilities {probabilities}: {m.seconds:.1f} s, "
                f"peak {m.peak_mib:.0f} MiB"
            )
    return {**settings, "rows": rows}


def run_gaze_ct(args, results: dict) -> None:
    """(e2) and (f2) on one rendered set per rho; new rows replace those of the same cell."""
    with tempfile.TemporaryDirectory(prefix="visprior-gaze-ct-") as workdir:
        settings = gaze_ct.SETTINGS_QUICK if args.quick else gaze_ct.SETTINGS_FULL
        if args.rhos:
            settings = {**settings, "rhos": tuple(args.rhos)}
        sets = gaze_ct.RenderedSets(settings, Path(workdir))
        if args.only != "mtunet-ct":
            figure = args.out / "gaze_ct.png"
            new = gaze_ct.run_ggcam_ct(settings, Path(workdir), _log, sets, figure)
            results["ggcam_ct"] = gaze_ct.merge(results.get("ggcam_ct"), new)
            _log("(e2) done")
        if args.only != "ggcam-ct":
            new = gaze_ct.run_mtunet_ct(settings, Path(workdir), _log, sets)
            results["mtunet_ct"] = gaze_ct.merge(results.get("mtunet_ct"), new)
            _log("(f2) done")


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats after warm-up")
    parser.add_argument(
        "--only",
        choices=(
            "speed",
            "quality",
            "kernel-scaling",
            "kernel-scaling-upkern",
            "peers",
            "bfr-overhead",
            "mednext-speed",
            "ggcam",
            "mtunet",
            "gaze-ct",
            "ggcam-ct",
            "mtunet-ct",
            "simplify",
            "simplify-criteria",
            "large-volume",
            "planning",
            "precision",
        ),
        help="run one part",
    )
    parser.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        metavar="SEED",
        help="(d2), (d3), (g2) only these seeds; their rows replace earlier ones",
    )
    parser.add_argument(
        "--criteria",
        nargs="+",
        metavar="NAME",
        help="(g2) only these criteria; their rows replace earlier ones",
    )
    parser.add_argument(
        "--kernels",
        nargs="+",
        type=int,
        metavar="K",
        help="(d2) only these kernel sizes (the UpKern part: the kernels started from k7); "
        "their rows replace earlier ones",
    )
    parser.add_argument(
        "--rhos",
        nargs="+",
        type=float,
        metavar="RHO",
        help="(e2) only these shortcut strengths; their rows replace earlier ones",
    )
    parser.add_argument(
        "--minutes",
        type=float,
        help="training budget per network in (d) (default 10) and (d3) (default 5), and per "
        "precision in (j) (default 5)",
    )
    parser.add_argument(
        "--models",
        nargs="+",
        metavar="NAME",
        help="(d), (d3) only these networks; their rows replace earlier ones of the same minutes",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).parent,
        help="folder for RESULTS.md, results.json and results.png",
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    isolate(not args.quick)
    results_file = args.out / "results.json"
    results: dict = {}
    if args.only and results_file.is_file():
        results = json.loads(results_file.read_text())
    results.update(quick=args.quick, machine=machine_description())
    if args.only not in (
        "quality",
        "kernel-scaling",
        "kernel-scaling-upkern",
        "peers",
        "ggcam",
        "mtunet",
        "gaze-ct",
        "ggcam-ct",
        "mtunet-ct",
        "simplify",
        "simplify-criteria",
        "large-volume",
        "planning",
    ):  # these train, or run once: no repeats to record
        results["repeats"] = args.repeats
    if args.only in (None, "speed"):
        results.update(run_speed(args.quick, args.repeats))
    if args.only == "bfr-overhead":
        results["bfr_overhead"] = run_bfr_overhead(args.quick, args.repeats)
    if args.only in (None, "mednext-speed"):
        results["mednext_speed"] = run_mednext_speed(args.quick, args.repeats)
    if args.only in (None, "quality"):
        minutes = args.minutes or (0.05 if args.quick else 10.0)
        with tempfile.TemporaryDirectory(prefix="visprior-bench-") as workdir:
            new = brain.run(minutes, args.quick, Path(workdir), _log, args.models)
        results["brain"] = brain.merge(results.get("brain"), new)
    scaling_parts = {
        "kernel-scaling": kernel_scaling.run_scaling,
        "kernel-scaling-upkern": kernel_scaling.run_upkern,
    }
    for part, run_part in scaling_parts.items():
        if args.only not in (None, part):
            continue
        with tempfile.TemporaryDirectory(prefix="visprior-scaling-") as workdir:
            new = run_part(args.quick, Path(workdir), _log, args.seeds, args.kernels)
        results["kernel_scaling"] = kernel_scaling.merge(results.get("kernel_scaling"), new)
        kernel_scaling.write_scaling_plot(
            results["kernel_scaling"], args.out / "kernel_scaling.png"
        )
        _log(f"(d2) {part} done")
    if args.only in (None, "peers"):
        with tempfile.TemporaryDirectory(prefix="visprior-peers-") as workdir:
            new = peers.run_peers(
                args.quick, Path(workdir), _log, args.seeds, args.models, args.minutes
            )
        results["peers"] = peers.merge(results.get("peers"), new)
        _log("(d3) done")
    if args.only in (None, "ggcam"):
        with tempfile.TemporaryDirectory(prefix="visprior-ggcam-") as workdir:
            results["ggcam"] = ggcam.run_ggcam(args.quick, Path(workdir))
        _log("(e) GG-CAM done")
    if args.only in (None, "mtunet"):
        with tempfile.TemporaryDirectory(prefix="visprior-mtunet-") as workdir:
            results["mtunet"] = mtunet.run_mtunet(args.quick, Path(workdir))
        _log("(f) MT-UNet done")
    if args.only in (None, "gaze-ct", "ggcam-ct", "mtunet-ct"):
        run_gaze_ct(args, results)
    if args.only in (None, "simplify"):
        with tempfile.TemporaryDirectory(prefix="visprior-simplify-") as workdir:
            results["simplify"] = simplify.run_simplify(args.quick, Path(workdir))
        _log("(g) simplify done")
    if args.only in (None, "simplify-criteria"):
        with tempfile.TemporaryDirectory(prefix="visprior-criteria-") as workdir:
            new = simplify_criteria.run_criteria(
                args.quick, Path(workdir), _log, args.seeds, args.criteria
            )
        results["simplify_criteria"] = simplify_criteria.merge(
            results.get("simplify_criteria"), new
        )
        simplify_criteria.write_criteria_plot(
            results["simplify_criteria"], args.out / "simplify_criteria.png"
        )
        _log("(g2) done")
    if args.only in (None, "large-volume"):
        results["large_volume"] = run_large_volume(args.quick)
    if args.only in (None, "planning"):
        with tempfile.TemporaryDirectory(prefix="visprior-plan-") as workdir:
            results["planning"] = planning.run(args.quick, Path(workdir), _log)
    if args.only in (None, "precision"):
        minutes = args.minutes or (0.05 if args.quick else 5.0)
        with tempfile.TemporaryDirectory(prefix="visprior-precision-") as workdir:
            results["precision"] = precision.run(
                args.quick, args.repeats, minutes, Path(workdir), _log
            )
    results_file.write_text(json.dumps(results, indent=1))
    if "large_kernel" in results:
        write_plot(results, args.out / "results.png")
    write_report(results, args.out / "RESULTS.md")
    print(f"wrote {args.out / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
