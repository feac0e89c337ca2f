"""(j) bfloat16 against float32 on this CPU: a paper-width RepUX-Net training step at 64^3, the
160^3 sliding window (96^3 windows), and the demo task's held-out Dice at equal training time.

bf16 runs through ``torch.autocast("cpu", torch.bfloat16)``, as ``--precision bf16`` does; the
large-kernel FFT path computes in float32 inside it. The two precisions of a measurement run
in separate fresh processes, one after the other.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks import demo_runs, networks

PRECISIONS = ("32", "bf16")
SEEDS_FULL = (0, 1)
SEEDS_QUICK = ()  # the demo runs elsewhere in quick mode; its rows are tested on known figures


def run(quick: bool, repeats: int, minutes: float, workdir: Path, log) -> dict:
    from benchmarks.timing import measure_in_subprocess

    size = 32 if quick else 64
    volume, roi = (64, 32) if quick else (160, 96)
    results: dict = {"size": size, "volume": volume, "roi": roi, "minutes": minutes}
    for precision in PRECISIONS:
        step = measure_in_subprocess(
            networks.build_training_step, "repuxnet", "auto", size, quick, precision,
            repeats=repeats,
        )  # fmt: skip
        window = measure_in_subprocess(
            networks.build_inference, "repuxnet", volume, roi, quick, precision, repeats=1
        )
        results[precision] = {
            "training_step": {"seconds": step.seconds, "peak_mib": step.peak_mib,
                              "error": step.error},
            "sliding_window": {"seconds": window.seconds, "peak_mib": window.peak_mib,
                               "error": window.error},
            "demo_seeds": {},
        }  # fmt: skip
        log(f"(j) {precision}: step {step.seconds:.2f} s, window {window.seconds:.1f} s")
    for seed in SEEDS_QUICK if quick else SEEDS_FULL:  # the precisions take turns, seed by seed
        for precision in PRECISIONS:
            options = ["--precision", precision, "--seed", str(seed)]
            demo = demo_runs.run_network(
                "repuxnet", minutes, workdir / f"{precision}-{seed}", options
            )
            results[precision]["demo_seeds"][str(seed)] = demo
            log(
                f"(j) {precision} seed {seed}: demo Dice "
                f"{demo.get('mean_foreground_dice', float('nan')):.3f} "
                f"({demo.get('iterations', 0)} iterations)"
            )
    return results


def precision_section(results: dict) -> list[str]:
    full, half = results["32"], results["bf16"]

    def seconds(row: dict, key: str) -> float:
        return row[key]["seconds"]

    def ratio(key: str) -> str:
        return f"{seconds(full, key) / seconds(half, key):.2f}x"

    size, volume, roi = results["size"], results["volume"], results["roi"]
    lines = [
        "## (j) bfloat16 against float32 on this CPU (RepUX-Net, paper widths)",
        "",
        "| measurement | float32 | bf16 autocast | float32 / bf16 |",
        "|---|---:|---:|---:|",
        f"| training step @ {size}^3, batch 1 (s) | {seconds(full, 'training_step'):.2f} | "
        f"{seconds(half, 'training_step'):.2f} | {ratio('training_step')} |",
        f"| sliding window {volume}^3, {roi}^3 windows (s) | "
        f"{seconds(full, 'sliding_window'):.1f} | {seconds(half, 'sliding_window'):.1f} | "
        f"{ratio('sliding_window')} |",
        f"| peak MiB, training step | {full['training_step']['peak_mib']:.0f} | "
        f"{half['training_step']['peak_mib']:.0f} | |",
    ]
    differences = []
    for seed in sorted(full["demo_seeds"], key=int):
        runs = [results[p]["demo_seeds"].get(seed, {}) for p in PRECISIONS]
        if any(run.get("mean_foreground_dice") is None for run in runs):
            continue
        dice = [run["mean_foreground_dice"] for run in runs]
        differences.append(dice[1] - dice[0])
        lines.append(
            f"| demo, {results['minutes']:g} min each, seed {seed}: held-out mean Dice "
            f"(iterations) | {dice[0]:.3f} ({runs[0]['iterations']}) | "
            f"{dice[1]:.3f} ({runs[1]['iterations']}) | {dice[1] - dice[0]:+.3f} Dice |"
        )
    if len(differences) > 1:
        lines.append(
            f"| demo: mean difference over {len(differences)} seeds (min .. max) | | | "
            f"{sum(differences) / len(differences):+.3f} ({min(differences):+.3f} .. "
            f"{max(differences):+.3f}) |"
        )
    return lines
