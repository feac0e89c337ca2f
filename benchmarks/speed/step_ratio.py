"""RepUX-Net against 3D UX-Net at paper widths, float32 and bf16 autocast: training steps and
sliding-window inference with the two networks alternated in one process, and one profiled
training step of each, split by what its time went to.

The two networks share the UNETR-style decoder, so a gap between them lives in the encoder's
depth-wise convs. The split makes that an artifact: ``torch.profiler`` self times, each op
put in one category:

* depth-wise conv, FFT path: everything inside ``fft_conv.PROFILER_LABELS`` (forward and
  backward);
* depth-wise conv, direct: conv ops whose weight is ``(C, 1, k, k, k)`` on a C-channel input;
* other convs: every other conv op (the stem, the downsampling convs, the decoder);
* norms, optimizer (AdamW's step and zero_grad), and the rest.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import torch

from benchmarks.networks import (
    alternating,
    build_alternating_steps,
    build_inference,
    build_training_step,
)
from benchmarks.paired import paired_difference

NETWORKS = ("repuxnet", "uxnet")
LABELS = {"repuxnet": "RepUX-Net BFR 21^3", "uxnet": "3D UX-Net 7^3"}
PRECISIONS = ("32", "bf16")
PRECISION_LABELS = {"32": "float32", "bf16": "bf16 autocast"}
TRAINING_SIZE = {False: 64, True: 32}  # by quick
INFERENCE_SIZES = {False: (160, 96), True: (48, 32)}  # (volume, window)
INFERENCE_PAIRS = {False: 4, True: 1}
PROFILED_STEPS = {False: 3, True: 1}  # a category's figure is its median over these
PROFILES = Path(__file__).parent / "profiles"
STEP_TARGET = 1.05  # RepUX-Net's step at most this many times UX-Net's

CATEGORIES = (
    "depth-wise conv, FFT path",
    "depth-wise conv, direct",
    "other convs",
    "norms",
    "optimizer",
    "rest",
)
_CONV_OPS = {
    "aten::convolution",
    "aten::_convolution",
    "aten::conv3d",
    "aten::mkldnn_convolution",
    "aten::convolution_backward",
    "aten::slow_conv3d_forward",
    "aten::slow_conv3d_backward",
    "aten::_slow_conv2d_forward",
    "aten::slow_conv_dilated3d",
    "aten::_nnpack_spatial_convolution",
}


def build_alternating_inference(precision: str, volume: int, window: int, quick: bool):
    """Sliding-window inference of one volume by each network in turn (RepUX-Net fused);
    the warm-up runs one window through each."""
    runs = {name: build_inference(name, volume, window, quick, precision) for name in NETWORKS}

    def warmup():
        for _, warm in runs.values():
            warm()

    return alternating({name: infer for name, (infer, _) in runs.items()}), warmup


def _shape(shapes: list, index: int) -> list[int] | None:
    return shapes[index] if len(shapes) > index and isinstance(shapes[index], list) else None


def is_depthwise(name: str, input_shapes: list) -> bool:
    """A conv op on a ``(N, C, ...)`` input with a ``(C, 1, ...)`` weight, C > 1 (the stem's
    ``(48, 1, 7, 7, 7)`` weight meets a 1-channel input, so it is not one)."""
    x, weight = (1, 2) if name == "aten::convolution_backward" else (0, 1)
    x_shape, w_shape = _shape(input_shapes, x), _shape(input_shapes, weight)
    if not x_shape or not w_shape or len(x_shape) < 3 or len(w_shape) != len(x_shape):
        return False
    return w_shape[1] == 1 and w_shape[0] > 1 and x_shape[1] == w_shape[0]


def split_profile(events) -> dict[str, float]:
    """Seconds of self CPU time per :data:`CATEGORIES` entry, from ``profile.events()``."""
    from visprior.layers.fft_conv import PROFILER_LABELS

    seconds = dict.fromkeys(CATEGORIES, 0.0)
    for event in events:
        ancestors = []
        parent = event
        while parent is not None:
            ancestors.append(parent.name)
            parent = parent.cpu_parent
        if any(label in ancestors for label in PROFILER_LABELS):
            category = "depth-wise conv, FFT path"
        elif any(name.startswith("Optimizer.") for name in ancestors):
            category = "optimizer"
        elif event.name in _CONV_OPS:
            depthwise = is_depthwise(event.name, event.input_shapes or [])
            category = "depth-wise conv, direct" if depthwise else "other convs"
        elif "norm" in event.name:
            category = "norms"
        else:
            category = "rest"
        seconds[category] += event.self_cpu_time_total / 1e6
    return seconds


def build_profiled_training(precision: str, size: int, quick: bool, profile_dir: str):
    """Each network's step under ``torch.profiler``, once per call (after the warm-up step);
    each split goes into ``step.parts`` as ``"<network>:<category>"``, and the last call's op
    table into ``profile_dir``."""
    from torch.profiler import ProfilerActivity, profile

    steps = {
        name: build_training_step(name, "auto", size, quick, precision)[0] for name in NETWORKS
    }

    def step():
        for name, one in steps.items():
            with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
                one()
            for category, seconds in split_profile(prof.events()).items():
                step.parts.setdefault(f"{name}:{category}", []).append(seconds)
            table = prof.key_averages(group_by_input_shape=True).table(
                sort_by="self_cpu_time_total",
                row_limit=40,
                max_name_column_width=36,
                max_shapes_column_width=70,
            )
            path = Path(profile_dir) / f"step_{name}_{precision}_{size}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            header = (
                f"{LABELS[name]}, paper widths, {size}^3, batch 1, "
                f"{PRECISION_LABELS[precision]}: one training step, self CPU time by op and "
                f"input shapes (torch {torch.__version__}, {torch.get_num_threads()} threads)\n"
            )
            path.write_text(header + table + "\n")

    def warmup():
        for one in steps.values():
            one()

    step.parts = {}
    return step, warmup


def run(quick: bool, repeats: int, profile_dir: Path, log) -> dict:
    from benchmarks.timing import measure_in_subprocess, measurement_row

    size = TRAINING_SIZE[quick]
    volume, window = INFERENCE_SIZES[quick]
    rows = []
    for precision in PRECISIONS:
        row: dict = {"precision": precision, "size": size, "volume": volume, "window": window}
        m = measure_in_subprocess(
            build_alternating_steps, NETWORKS, size, quick, precision, repeats=repeats
        )
        row["training"] = measurement_row(m)
        log(f"step ratio {precision}: training {m.error or 'done'}")
        m = measure_in_subprocess(
            build_profiled_training,
            precision,
            size,
            quick,
            str(profile_dir),
            repeats=PROFILED_STEPS[quick],
        )
        row["profile"] = measurement_row(m)
        log(f"step ratio {precision}: profile {m.error or 'done'}")
        m = measure_in_subprocess(
            build_alternating_inference,
            precision,
            volume,
            window,
            quick,
            repeats=INFERENCE_PAIRS[quick],
        )
        row["inference"] = measurement_row(m)
        log(f"step ratio {precision}: inference {m.error or 'done'}")
        rows.append(row)
    return {"rows": rows}


def ratio(measurement: dict) -> dict | None:
    """RepUX-Net / UX-Net over the alternated pairs: the geometric mean ratio and its paired-t
    95% interval on log times."""
    parts = measurement.get("parts") or {}
    if not all(parts.get(name) for name in NETWORKS):
        return None
    pairs = dict(enumerate(zip(parts["repuxnet"], parts["uxnet"], strict=False)))
    result = paired_difference(
        {i: math.log(a) for i, (a, _) in pairs.items()},
        {i: math.log(b) for i, (_, b) in pairs.items()},
        higher_is_better=False,
    )
    verdict = {"better": "RepUX-Net faster", "worse": "RepUX-Net slower"}.get(
        result.verdict, result.verdict
    )
    return {
        "pairs": result.n,
        "ratio": math.exp(result.mean),
        "low": math.exp(result.low) if result.n > 1 else math.nan,
        "high": math.exp(result.high) if result.n > 1 else math.nan,
        "verdict": verdict,
        "repuxnet_s": statistics.median(parts["repuxnet"]),
        "uxnet_s": statistics.median(parts["uxnet"]),
    }


def _ratio_text(r: dict | None) -> str:
    if r is None:
        return "-"
    if r["pairs"] < 2:
        return f"{r['ratio']:.3f}x (1 pair: no interval)"
    return f"{r['ratio']:.3f}x [{r['low']:.3f}, {r['high']:.3f}], {r['verdict']}"


def targets(data: dict) -> list[str]:
    from benchmarks.report import target

    lines = []
    for row in data.get("rows", []):
        label = PRECISION_LABELS[row["precision"]]
        train = ratio(row["training"])
        if train is not None:
            lines.append(
                target(
                    train["ratio"] <= STEP_TARGET,
                    f"RepUX-Net's step <= {STEP_TARGET}x 3D UX-Net's @ {row['size']}^3, {label}: "
                    + _ratio_text(train),
                )
            )
        infer = ratio(row["inference"])
        if infer is not None:
            lines.append(
                target(
                    infer["ratio"] <= 1.0,
                    f"RepUX-Net's sliding window no slower than 3D UX-Net's @ {row['volume']}^3, "
                    f"{label}: " + _ratio_text(infer),
                )
            )
    return lines


def section(data: dict) -> list[str]:
    rows = data.get("rows", [])
    if not rows:
        return []
    lines = [
        "## RepUX-Net against 3D UX-Net, alternated in one process",
        "",
        "Paper widths (48..384), batch 1. Training: AdamW and cross entropy on one crop. "
        "Inference: sliding window, overlap 0.25, gaussian blending, RepUX-Net fused. "
        "Each precision runs in a fresh process; the two networks' runs alternate in it, and "
        "the ratio is the geometric mean over the pairs with a paired-t 95% interval on log "
        "times.",
        "",
        *targets(data),
        "",
        "| precision | measurement | RepUX-Net s | 3D UX-Net s | RepUX-Net / UX-Net |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        label = PRECISION_LABELS[row["precision"]]
        for key, what in (
            ("training", f"training step @ {row['size']}^3"),
            ("inference", f"sliding window {row['volume']}^3, {row['window']}^3 windows"),
        ):
            r = ratio(row[key])
            if r is None:
                lines.append(f"| {label} | {what} | - | - | {row[key].get('error') or '-'} |")
                continue
            lines.append(
                f"| {label} | {what} | {r['repuxnet_s']:.2f} | {r['uxnet_s']:.2f} | "
                f"{_ratio_text(r)} |"
            )
    lines += [
        "",
        "Profiled training steps of each (`torch.profiler`, self CPU seconds, the median of "
        "each category over the profiled steps; the op tables of the last one are in "
        "[profiles/](profiles/)):",
        "",
        "| precision | category | RepUX-Net s | 3D UX-Net s | difference s |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        parts = row["profile"].get("parts") or {}
        if not parts:
            continue
        label = PRECISION_LABELS[row["precision"]]
        totals = dict.fromkeys(NETWORKS, 0.0)
        for category in CATEGORIES:
            values = {n: statistics.median(parts.get(f"{n}:{category}") or [0.0]) for n in NETWORKS}
            for n in NETWORKS:
                totals[n] += values[n]
            lines.append(
                f"| {label} | {category} | {values['repuxnet']:.3f} | {values['uxnet']:.3f} | "
                f"{values['repuxnet'] - values['uxnet']:+.3f} |"
            )
        lines.append(
            f"| {label} | **all** | {totals['repuxnet']:.3f} | {totals['uxnet']:.3f} | "
            f"{totals['repuxnet'] - totals['uxnet']:+.3f} |"
        )
    return lines
