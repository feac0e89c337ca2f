"""What measuring the conv path (``VISPRIOR_CONV_AUTOTUNE=1``) costs a RepUX-Net training run,
and what it buys: the first steps of a fresh process with an empty cache, measuring and not.

A run's first step pays for every case measured; the steps after it show whether the
measured picks are faster than the size rule's. Each arm runs in its own fresh process
(the measurement's winners live in the process and in the cache directory, both fresh).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

import torch

STEPS = {False: 6, True: 3}  # steps a run times, by quick
# (label, widths, crops, crop edge): the demo's step, and the paper's widths at 64^3
CASES = {
    False: (
        ("demo: 16/128, 2 x 48^3", {"feature_size": 16, "hidden_size": 128}, 2, 48),
        ("paper widths, 1 x 64^3", {}, 1, 64),
    ),
    True: (("tiny: 8/32, 1 x 32^3", {"feature_size": 8, "hidden_size": 32}, 1, 32),),
}
PRECISIONS = ("32", "bf16")


def build_first_steps(
    measure: bool, widths: dict, crops: int, size: int, precision: str, steps: int
):
    """``steps`` RepUX-Net training steps (DiceCE, AdamW) timed one by one, from a fresh
    cache; ``step.parts``: ``"step"`` (each step's seconds) and, when measuring,
    ``"measured cases"`` and ``"picks unlike the rule"``."""
    from monai.losses import DiceCELoss

    import visprior
    from visprior.engine.precision import autocast
    from visprior.layers import conv_autotune
    from visprior.layers.conv_algorithm import set_conv_algorithm

    os.environ[conv_autotune.AUTOTUNE_ENV] = "1" if measure else "0"
    os.environ[conv_autotune.CACHE_DIR_ENV] = tempfile.mkdtemp(prefix="visprior-autotune-")
    conv_autotune.clear_measurements()
    set_conv_algorithm("auto")
    torch.manual_seed(0)
    classes = 5
    model = visprior.get_model("repuxnet", in_channels=1, out_channels=classes, **widths).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    image = torch.randn(crops, 1, size, size, size)
    label = torch.randint(0, classes, (crops, 1, size, size, size))
    device = torch.device("cpu")

    def one():
        optimizer.zero_grad(set_to_none=True)
        with autocast(precision, device):
            loss = loss_fn(model(image).float(), label)
        loss.backward()
        optimizer.step()

    def run():
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            one()
            times.append(time.perf_counter() - start)
        records = conv_autotune.measurements().values()
        # the timing harness keeps a part's last value: one value a part
        run.parts = {
            "first step": [times[0]],
            "later steps": [statistics.median(times[1:])],
            "measured cases": [float(len(records))],
            "picks unlike the rule": [float(sum(r["algorithm"] != r["rule"] for r in records))],
        }

    run.parts = {}
    return run, lambda: None  # no warm-up: the first step's cost is the point


def run(quick: bool, log) -> list[dict]:
    from benchmarks.timing import measure_in_subprocess, measurement_row

    rows = []
    for label, widths, crops, size in CASES[quick]:
        for precision in PRECISIONS:
            row = {"case": label, "precision": precision}
            for measure in (False, True):
                m = measure_in_subprocess(
                    build_first_steps,
                    measure,
                    widths,
                    crops,
                    size,
                    precision,
                    STEPS[quick],
                    repeats=1,
                )
                row["measured" if measure else "rule"] = measurement_row(m)
            rows.append(row)
            log(f"autotune cost {label} {precision} done")
    return rows


def _part(arm: dict, name: str) -> float | None:
    values = (arm.get("parts") or {}).get(name)
    return values[0] if values else None


def table(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    lines = [
        "## The one-off cost of measuring the conv path, on a RepUX-Net training run",
        "",
        "Fresh processes with empty caches, DiceCE and AdamW, 5 classes. 'Rule': "
        "`VISPRIOR_CONV_AUTOTUNE=0`, the size rule decides. 'Measured': "
        "`VISPRIOR_CONV_AUTOTUNE=1`. The first step's extra seconds are the cost; the later "
        "steps' medians show what the measured picks buy.",
        "",
        "| case | precision | first step s, rule | first step s, measured | one-off cost s | "
        "later steps s, rule | later steps s, measured | cases measured | picks unlike the "
        "rule |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        rule, measured = row["rule"], row["measured"]
        if _part(rule, "first step") is None or _part(measured, "first step") is None:
            error = (rule.get("error") or measured.get("error") or "-").strip().splitlines()[-1]
            lines.append(f"| {row['case']} | {row['precision']} | {error} |||||||")
            continue
        first_rule, first_measured = _part(rule, "first step"), _part(measured, "first step")
        precision = "float32" if row["precision"] == "32" else "bf16 autocast"
        lines.append(
            f"| {row['case']} | {precision} | {first_rule:.2f} | {first_measured:.2f} | "
            f"{first_measured - first_rule:+.2f} | {_part(rule, 'later steps'):.3f} | "
            f"{_part(measured, 'later steps'):.3f} | {_part(measured, 'measured cases'):.0f} | "
            f"{_part(measured, 'picks unlike the rule'):.0f} |"
        )
    return lines
