"""(a)-(c) and the crossover: one 21^3 depth-wise conv, a training step of each network, and
sliding-window inference, each case timed in a fresh process; BFR against plain kernels with
their steps alternated in one process."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from benchmarks import networks
from benchmarks.report import log as _log
from benchmarks.report import target as _target
from benchmarks.speed import autotune_cost, crossover, large_kernel, step_ratio
from benchmarks.timing import measure_in_subprocess, measurement_row

TIMING_NOTE = (
    "Times are medians of the recorded repeats after one warm-up run, each case in a fresh "
    "process; peak MiB is the process's peak resident memory above its resident memory before "
    "the warm-up (model and inputs already built)."
)


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
            row[method] = measurement_row(m)
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
                row[f"{mode}_{method}"] = measurement_row(m)
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
            row[str(size)] = measurement_row(m)
            _log(f"(b) {label} @ {size}^3: {m.seconds:.2f} s")
        results["training"].append(row)

    results["bfr_overhead"] = run_bfr_overhead(quick, repeats)

    volume, roi = (96, 64) if quick else (160, 96)
    results["inference"] = {"volume": volume, "roi": roi, "rows": []}
    for label, name in networks.INFERENCE:
        m = measure_in_subprocess(
            networks.build_inference, name, volume, roi, quick, repeats=repeats
        )
        results["inference"]["rows"].append({"label": label, "name": name, **measurement_row(m)})
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
        rows.append({"size": size, **measurement_row(m)})
        _log(f"(b) BFR vs plain, alternated @ {size}^3: {m.parts and 'done' or m.error}")
    return rows


def run_kernel_cut(quick: bool, repeats: int) -> list[dict]:
    """The demo's step with depth-wise kernels cut to the taps that reach the input against
    full 21^3 kernels, alternated in one process (see build_kernel_cut_steps)."""
    rows = []
    for size in (32,) if quick else (48, 64):
        m = measure_in_subprocess(networks.build_kernel_cut_steps, size, quick, repeats=repeats)
        rows.append({"size": size, **measurement_row(m)})
        _log(f"(b) kernels cut vs full, alternated @ {size}^3: {m.parts and 'done' or m.error}")
    return rows


MALLOC_PAIRS = 5


def run_malloc(quick: bool, repeats: int) -> list[dict]:
    """The demo's step in fresh processes with glibc's own thresholds and with
    ``keep_freed_memory``, the two alternated :data:`MALLOC_PAIRS` times (the setting is
    per process, so the pairs stand in for alternating steps)."""
    size, pairs = (32, 1) if quick else (48, MALLOC_PAIRS)
    rows = []
    for pair in range(pairs):
        for tuned in (False, True):
            m = measure_in_subprocess(
                networks.build_malloc_step, tuned, size, quick, repeats=repeats
            )
            rows.append({"pair": pair, "tuned": tuned, "size": size, **measurement_row(m)})
            _log(f"(b) malloc pair {pair} {'tuned' if tuned else 'glibc'}: {m.seconds}")
    return rows


def malloc_table(rows: list[dict]) -> list[str]:
    """Per process pair: median step seconds and minor page faults a step, and the ratio."""
    lines = [
        "| pair | glibc step s | tuned step s | tuned / glibc | glibc faults a step "
        "| tuned faults a step |",
        "|---|---|---|---|---|---|",
    ]
    ratios = []
    for pair in sorted({r["pair"] for r in rows}):
        arms = {r["tuned"]: r for r in rows if r["pair"] == pair and r.get("parts")}
        if len(arms) < 2:
            continue
        glibc, tuned = (statistics.median(arms[t]["parts"]["tuned" if t else "glibc"])
                        for t in (False, True))  # fmt: skip
        faults = [statistics.median(arms[t]["parts"]["page_faults"]) for t in (False, True)]
        ratios.append(tuned / glibc)
        lines.append(
            f"| {pair} | {_fmt_s(glibc)} | {_fmt_s(tuned)} | {tuned / glibc:.3f} | "
            f"{faults[0]:,.0f} | {faults[1]:,.0f} |"
        )
    if ratios:
        lines += ["", f"Median tuned / glibc over {len(ratios)} pairs: "
                  f"{statistics.median(ratios):.3f}."]  # fmt: skip
    return lines


def kernel_cut_table(results: dict) -> list[str]:
    return alternated_table(results.get("kernel_cut", []), ("cut", "full"), "2 x {}^3")


def _s(row: dict | None) -> float:
    return float("nan") if not row or row.get("seconds") is None else row["seconds"]


def _fmt_s(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    if seconds < 1:
        return f"{seconds:.4f}"
    return f"{seconds:.2f}" if seconds < 100 else f"{seconds:.0f}"


def _fmt_x(ratio: float) -> str:
    return "-" if math.isnan(ratio) else f"{ratio:.1f}x"


def _fmt_mib(row: dict | None) -> str:
    value = float("nan") if not row or row.get("peak_mib") is None else row["peak_mib"]
    return "-" if math.isnan(value) else f"{value:.0f}"


def _ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else float("nan")


def large_kernel_table(results: dict) -> list[str]:
    lines = [
        "| stage | F.conv3d s | naive FFT s | visprior s | vs F.conv3d | vs naive FFT | "
        "peak MiB (conv3d / naive / visprior) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in results["large_kernel"]:
        direct, naive, ours = (_s(row[m]) for m in ("F.conv3d", "naive FFT", "visprior FFT"))
        mib = " / ".join(_fmt_mib(row[m]) for m in ("F.conv3d", "naive FFT", "visprior FFT"))
        lines.append(
            f"| {row['channels']} ch @ {row['size']}^3 | {_fmt_s(direct)} | {_fmt_s(naive)} | "
            f"{_fmt_s(ours)} | {_fmt_x(_ratio(direct, ours))} | {_fmt_x(_ratio(naive, ours))} | "
            f"{mib} |"
        )
    return lines


def crossover_table(results: dict) -> list[str]:
    lines = [
        "| k | stage | infer direct s | infer FFT s | auto (infer) | train direct s | "
        "train FFT s | auto (train) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in results["crossover"]:
        lines.append(
            f"| {row['k']}^3 | {row['channels']} ch @ {row['size']}^3 | "
            f"{_fmt_s(_s(row.get('infer_direct')))} | {_fmt_s(_s(row.get('infer_fft')))} | "
            f"{row['auto_infer']} | {_fmt_s(_s(row.get('train_direct')))} | "
            f"{_fmt_s(_s(row.get('train_fft')))} | {row['auto_train']} |"
        )
    return lines


def training_table(results: dict, sizes: list[str]) -> list[str]:
    direct = next(r for r in results["training"] if r["algorithm"] == "direct")
    header = "| network | " + " | ".join(f"step s @ {s}^3 | peak MiB @ {s}^3" for s in sizes)
    lines = [
        header + f" | vs F.conv3d @ {sizes[0]}^3 |",
        "|---|" + "---|---|" * len(sizes) + "---|",
    ]
    for row in results["training"]:
        cells = " | ".join(f"{_fmt_s(_s(row.get(s)))} | {_fmt_mib(row.get(s))}" for s in sizes)
        ratio = _ratio(_s(direct.get(sizes[0])), _s(row.get(sizes[0])))
        lines.append(f"| {row['label']} | {cells} | {_fmt_x(ratio)} |")
    return lines


def inference_table(results: dict) -> list[str]:
    rows = results["inference"]["rows"]
    ours = _s(rows[0])
    lines = ["| network | seconds | peak MiB | time / RepUX-Net |", "|---|---|---|---|"]
    for row in rows:
        lines.append(
            f"| {row['label']} | {_fmt_s(_s(row))} | {_fmt_mib(row)} | "
            f"{_fmt_x(_ratio(_s(row), ours))} |"
        )
    return lines


def targets(results: dict, sizes: list[str]) -> list[str]:
    out = []
    stages = {(r["channels"], r["size"]): r for r in results["large_kernel"]}
    first = results["large_kernel"][0]
    d0, n0, v0 = (_s(first[m]) for m in ("F.conv3d", "naive FFT", "visprior FFT"))
    label = f"{first['channels']} ch @ {first['size']}^3"
    out.append(
        _target(
            _ratio(d0, v0) >= 400, f"(a) >= 400x vs F.conv3d at {label}: {_fmt_x(_ratio(d0, v0))}"
        )
    )
    if (96, 24) in stages:
        r = stages[(96, 24)]
        ratio = _ratio(_s(r["F.conv3d"]), _s(r["visprior FFT"]))
        out.append(
            _target(ratio >= 150, f"(a) >= 150x vs F.conv3d at 96 ch @ 24^3: {_fmt_x(ratio)}")
        )
    out.append(
        _target(_ratio(n0, v0) >= 3, f"(a) >= 3x vs naive FFT at {label}: {_fmt_x(_ratio(n0, v0))}")
    )
    slowest = max(
        _s(r["visprior FFT"]) / min(_s(r["F.conv3d"]), _s(r["naive FFT"]))
        for r in results["large_kernel"]
    )
    out.append(
        _target(
            slowest <= 1.0,
            "(a) never slower than the better of the other two: "
            f"worst stage at {slowest:.2f}x of the better one's time",
        )
    )
    by_name = {(r["name"], r["algorithm"]): r for r in results["training"]}
    bfr = by_name[("repuxnet", "auto")]
    for size, over, how in _bfr_overheads(results, sizes):
        out.append(
            _target(
                over <= 0.05,
                f"(b) BFR step within 5% of plain 21^3 @ {size}^3: {over * 100:+.1f}% ({how})",
            )
        )
    direct = by_name[("repuxnet", "direct")]
    ratio = _ratio(_s(direct.get(sizes[0])), _s(bfr.get(sizes[0])))
    out.append(
        _target(
            ratio >= 20,
            f"(b) RepUX-Net step >= 20x faster than on F.conv3d @ {sizes[0]}^3: {_fmt_x(ratio)}",
        )
    )
    rows = {r["name"]: r for r in results["inference"]["rows"]}
    ratio = _ratio(_s(rows["uxnet"]), _s(rows["repuxnet"]))
    out.append(
        _target(
            ratio >= 1.0,
            f"(c) RepUX-Net inference no slower than 3D UX-Net: "
            f"UX-Net takes {ratio:.2f}x RepUX-Net's time",
        )
    )
    swin = _ratio(_s(rows["swinunetr"]), _s(rows["repuxnet"]))
    out.append(f"- reported: SwinUNETR takes {swin:.2f}x RepUX-Net's sliding-window time")
    return out


def _bfr_overheads(results: dict, sizes: list[str]) -> list[tuple[str, float, str]]:
    """BFR's extra step time over plain kernels: from the alternated runs where measured."""
    paired = {str(r["size"]): r for r in results.get("bfr_overhead", []) if r.get("parts")}
    by_name = {(r["name"], r["algorithm"]): r for r in results["training"]}
    bfr, plain = by_name[("repuxnet", "auto")], by_name[("repuxnet_plain", "auto")]
    out = []
    for size in sizes:
        if size in paired:
            parts = paired[size]["parts"]
            ratio = statistics.median(parts["repuxnet"]) / statistics.median(
                parts["repuxnet_plain"]
            )
            out.append((size, ratio - 1, "steps alternated in one process"))
        else:
            out.append((size, _ratio(_s(bfr.get(size)), _s(plain.get(size))) - 1, "separate runs"))
    return out


def bfr_overhead_table(results: dict) -> list[str]:
    return alternated_table(results.get("bfr_overhead", []), ("repuxnet", "repuxnet_plain"))


def alternated_table(rows: list[dict], names: tuple[str, str], crop: str = "{}^3") -> list[str]:
    """Two alternated steps per crop size: medians, their ratio, and every timing."""
    first, second = ("BFR", "plain") if names[0] == "repuxnet" else names
    lines = [
        f"| crop{'s' if crop != '{}^3' else ''} | {first} step s | {second} step s | "
        f"{first} / {second} | all {first} s | all {second} s |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        parts = row.get("parts") or {}
        if not parts:
            continue
        a, b = parts[names[0]], parts[names[1]]
        ma, mb = statistics.median(a), statistics.median(b)
        lines.append(
            f"| {crop.format(row['size'])} | {_fmt_s(ma)} | {_fmt_s(mb)} | {ma / mb:.3f} | "
            f"{', '.join(f'{t:.2f}' for t in a)} | {', '.join(f'{t:.2f}' for t in b)} |"
        )
    return lines


def _speed_sections(results: dict, sizes: list[str]) -> list[str]:
    inference = results["inference"]
    return [
        "## (a) One 21^3 depth-wise conv, forward + backward",
        "",
        "Stages of RepUX-Net on a 96^3 crop, batch 1, fp32. Naive FFT: zero-pad to S + k - 1, "
        "`torch.fft.rfftn` / `irfftn`, autograd backward.",
        "",
        *large_kernel_table(results),
        "",
        "## (b) One training step (AdamW, cross entropy), batch 1, paper widths 48..384",
        "",
        *training_table(results, sizes),
        "",
        "BFR against plain 21^3 kernels with the two networks' steps alternated in one "
        "process, so that slow drifts of a shared machine hit both alike:",
        "",
        *bfr_overhead_table(results),
        "",
        "The demo's step (RepUX-Net 16/128, two crops, 10 classes, DiceCE, float32) with each "
        "depth-wise kernel cut to the taps that can reach its input (an axis of s voxels meets "
        "only the central 2s - 1 taps; the deepest stage of a 48^3 crop is 3^3) against the "
        "full 21^3 kernels, alternated in one process:",
        "",
        *kernel_cut_table(results),
        "",
        "The same step in fresh processes with glibc's own mmap and trim thresholds and with "
        "visprior's (`visprior.engine.cpu_memory.keep_freed_memory`, which every `visprior` "
        "command sets), the two alternated; step times are medians in each process:",
        "",
        *malloc_table(results.get("malloc", [])),
        "",
        f"## (c) Sliding-window inference of a {inference['volume']}^3 volume",
        "",
        f"ROI {inference['roi']}^3, overlap 0.25, gaussian blending, sw_batch_size 1; RepUX-Net "
        "fused for deployment. Warm-up: one ROI-sized forward.",
        "",
        *inference_table(results),
        "",
        '## Crossover: direct vs FFT (the data behind `algorithm="auto"`)',
        "",
        "One depth-wise conv, batch 1; train = forward + backward. The training time of "
        "F.conv3d at 21^3 is in table (a).",
        "",
        *crossover_table(results),
        "",
    ]


def write_plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    stages = [f"{r['channels']}ch@{r['size']}^3" for r in results["large_kernel"]]
    width = 0.27
    for i, method in enumerate(("F.conv3d", "naive FFT", "visprior FFT")):
        values = [_s(r[method]) for r in results["large_kernel"]]
        axes[0].bar([x + (i - 1) * width for x in range(len(stages))], values, width, label=method)
    axes[0].set_xticks(range(len(stages)), stages)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("seconds (log)")
    axes[0].set_title("(a) 21^3 depth-wise conv, fwd + bwd")
    axes[0].legend()

    sizes = sorted({k for r in results["training"] for k in r if k.isdigit()}, key=int)
    labels = [r["label"] for r in results["training"]]
    for i, size in enumerate(sizes):
        values = [_s(r.get(size)) for r in results["training"]]
        axes[1].barh([y + i * 0.4 for y in range(len(labels))], values, 0.4, label=f"{size}^3")
    axes[1].set_yticks([y + 0.2 for y in range(len(labels))], labels)
    axes[1].set_xscale("log")
    axes[1].set_xlabel("seconds per step (log)")
    axes[1].set_title("(b) training step")
    axes[1].legend()

    rows = results["inference"]["rows"]
    axes[2].bar([r["label"] for r in rows], [_s(r) for r in rows], color="tab:green")
    axes[2].set_ylabel("seconds")
    axes[2].set_title(f"(c) sliding window, {results['inference']['volume']}^3")
    axes[2].tick_params(axis="x", labelrotation=15)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def training_sizes(results: dict) -> list[str]:
    return sorted({k for r in results["training"] for k in r if k.isdigit()}, key=int)


def _alternated_sections(results: dict) -> list[str]:
    """The parts that run alone (``--only kernel-cut`` or ``malloc``), for a results file
    that holds no full speed run."""
    return [
        "## The demo's step, alternated",
        "",
        *kernel_cut_table(results),
        "",
        *malloc_table(results.get("malloc", [])),
    ]


def section(results: dict) -> list[str]:
    ratio_section = [
        *step_ratio.section(results.get("step_ratio") or {}),
        "",
        *autotune_cost.table(results.get("autotune_cost") or []),
    ]
    if "large_kernel" not in results:
        return [TIMING_NOTE, "", *ratio_section, "", *_alternated_sections(results)]
    sizes = training_sizes(results)
    return [
        TIMING_NOTE,
        "",
        "![results](figure.png)",
        "",
        "## Targets",
        "",
        *targets(results, sizes),
        "",
        *_speed_sections(results, sizes),
        "",
        *ratio_section,
    ]


def summary(results: dict) -> list[str]:
    ratio_targets = step_ratio.targets(results.get("step_ratio") or {})
    if "large_kernel" not in results:
        return ratio_targets
    return [*targets(results, training_sizes(results)), *ratio_targets]


def run_part(part: str, context) -> dict:
    """``speed``: every table; ``bfr-overhead``: the alternated BFR / plain steps alone;
    ``kernel-cut``: the alternated steps with cut and full depth-wise kernels alone;
    ``malloc``: the demo's step with glibc's thresholds and with visprior's, alternated;
    ``step-ratio``: RepUX-Net against 3D UX-Net, alternated, with a profiled step of each;
    ``autotune-cost``: a RepUX-Net run's first steps with the conv path measured and not."""
    args = context.args
    data = dict(context.store.data or {})
    if part == "speed":
        data.update(run_speed(args.quick, args.repeats))
    elif part == "kernel-cut":
        data["kernel_cut"] = run_kernel_cut(args.quick, args.repeats)
    elif part == "malloc":
        data["malloc"] = run_malloc(args.quick, args.repeats)
    elif part == "step-ratio":
        profiles = context.workdir / "profiles" if args.quick else step_ratio.PROFILES
        data["step_ratio"] = step_ratio.run(args.quick, args.repeats, profiles, _log)
    elif part == "autotune-cost":
        data["autotune_cost"] = autotune_cost.run(args.quick, _log)
    else:
        data["bfr_overhead"] = run_bfr_overhead(args.quick, args.repeats)
    return data


def write_figure(results: dict, path: Path) -> None:
    if "large_kernel" in results:
        write_plot(results, path)
