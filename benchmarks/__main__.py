"""Run every benchmark in one go and write ``benchmarks/RESULTS.md`` and ``results.png``.

python -m benchmarks           # the full run (about 45 minutes on 2 cores)
python -m benchmarks --quick   # small sizes, a smoke test (CI runs it)
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from benchmarks import crossover, large_kernel, networks
from benchmarks.report import write_plot, write_report
from benchmarks.timing import measure_in_subprocess


def _row(measurement) -> dict:
    return {
        "seconds": measurement.seconds,
        "repeats": measurement.repeats,
        "peak_mib": measurement.peak_mib,
        "all_seconds": measurement.all_seconds,
        "error": measurement.error,
    }


def _log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def run(quick: bool, repeats: int) -> dict:
    results: dict = {"quick": quick, "repeats": repeats, "machine": machine_description()}

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

    volume, roi = (96, 64) if quick else (160, 96)
    results["inference"] = {"volume": volume, "roi": roi, "rows": []}
    for label, name in networks.INFERENCE:
        m = measure_in_subprocess(
            networks.build_inference, name, volume, roi, quick, repeats=repeats
        )
        results["inference"]["rows"].append({"label": label, "name": name, **_row(m)})
        _log(f"(c) {label} sliding window {volume}^3: {m.seconds:.2f} s")
    return results


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


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats after warm-up")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).parent,
        help="folder for RESULTS.md, results.json and results.png",
    )
    args = parser.parse_args()
    results = run(args.quick, args.repeats)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    write_plot(results, args.out / "results.png")
    write_report(results, args.out / "RESULTS.md")
    print(f"wrote {args.out / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
