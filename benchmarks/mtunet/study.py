"""(f) MT-UNet against its single-task versions, on the synthetic gaze set.

The same UNet is trained three ways with the same split, seeds and epochs: both heads with
the uncertainty-weighted loss (MT-UNet), the saliency head alone (KL only) and the
classification head alone (cross-entropy only). The table reports medians over the seeds of
the test AUC and of each saliency score. The data is SYNTHETIC (``visprior cxr synth``).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from pathlib import Path

from benchmarks.ggcam.study import fmt_score, synthetic_config
from benchmarks.paired import difference_table, paired_difference

SETTINGS_FULL = {"cases_per_class": 50, "size": 128, "epochs": 12, "seeds": 3, "width": 16}
SETTINGS_QUICK = {"cases_per_class": 8, "size": 64, "epochs": 1, "seeds": 1, "width": 4}
VARIANTS = (
    ("MT-UNet (both tasks)", "both"),
    ("saliency only", "saliency"),
    ("classification only", "classification"),
)
SCORES = ("kl", "cc", "sim", "nss", "auc_judd")


def run_mtunet(quick: bool, workdir: Path) -> dict:
    """Train and evaluate the three variants over the seeds; return the figures."""
    from visprior.cxr.evaluate import evaluate_run
    from visprior.cxr.train import train_seeds

    settings = SETTINGS_QUICK if quick else SETTINGS_FULL
    base = synthetic_config(settings, workdir, "mtunet", {"feature_size": settings["width"]})
    rows = []
    for label, tasks in VARIANTS:
        output = workdir / tasks
        config = dataclasses.replace(base, tasks=tasks, output=str(output))
        started = time.perf_counter()
        train_seeds(config, settings["seeds"])
        seconds = time.perf_counter() - started
        runs = [
            evaluate_run(p.parent, "test", overlays=0) for p in sorted(output.glob("*/split.json"))
        ]
        row = {
            "label": label,
            "tasks": tasks,
            "auc": [r["auc"] for r in runs],
            "minutes": seconds / 60,
        }
        for score in SCORES:
            row[score] = [r["saliency"][score]["mean"] for r in runs]
        rows.append(row)
    return {"settings": settings, "rows": rows}


def _median(values: list[float]) -> float:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(finite) if finite else math.nan


def mtunet_section(results: dict) -> list[str]:
    """The Markdown section for RESULTS.md."""
    s = results["settings"]
    lines = [
        "## (f) MT-UNet vs its single-task versions (SYNTHETIC data)",
        "",
        f"`visprior cxr synth` set: {s['cases_per_class']} images per class, {s['size']} px, "
        f"split 70/10/20 per class; `mtunet` with widths {s['width']}..{16 * s['width']}, "
        f"{s['epochs']} epochs, Adam 1e-3 with the plateau schedule, {s['seeds']} seeds each. "
        "Medians over the seeds of the test AUC and of each saliency score's mean over the "
        "test images (KL lower is better, the others higher). A single-task model's other head "
        "gets no loss: its scores are shown as measured (the layers it shares with the "
        "trained head still change under it), not as chance.",
        "",
        "| variant | AUC | KL | CC | SIM | NSS | AUC-Judd | minutes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        scores = " | ".join(fmt_score(_median(row[name])) for name in ("auc", *SCORES))
        lines.append(f"| {row['label']} | {scores} | {row['minutes']:.1f} |")
    return lines + per_seed_lines(results["rows"], SCORES) + paired_lines(results["rows"])


SCORE_NAMES = {"kl": "KL", "cc": "CC", "sim": "SIM", "nss": "NSS", "auc_judd": "AUC-Judd"}


def per_seed_lines(rows: list[dict], scores: tuple[str, ...]) -> list[str]:
    """Each variant's test AUC and saliency scores seed by seed (in seed order), the figures
    the medians above summarise."""
    names = ("auc", *scores)
    if not rows or max(len(row["auc"]) for row in rows) < 2:
        return []
    header = " | ".join("AUC" if name == "auc" else SCORE_NAMES[name] for name in names)
    lines = [
        "",
        "Per seed, in seed order:",
        "",
        f"| variant | {header} |",
        "|---|" + "---|" * len(names),
    ]
    for row in rows:
        cells = " | ".join(" / ".join(fmt_score(v) for v in row[name]) for name in names)
        lines.append(f"| {row['label']} | {cells} |")
    return lines


def paired_lines(rows: list[dict]) -> list[str]:
    """The joint model minus each single-task model on that model's own task, paired by seed
    (the i-th figure of every row is seed i)."""
    by_tasks = {row["tasks"]: row for row in rows}
    joint = by_tasks.get("both")
    if joint is None:
        return []

    def seeds(values: list[float]) -> dict[int, float]:
        return dict(enumerate(values))

    compared = {}
    if "classification" in by_tasks:
        alone = by_tasks["classification"]
        compared["AUC, minus classification only"] = paired_difference(
            seeds(joint["auc"]), seeds(alone["auc"])
        )
    if "saliency" in by_tasks:
        alone = by_tasks["saliency"]
        for score, name in (("cc", "CC"), ("auc_judd", "AUC-Judd")):
            compared[f"{name}, minus saliency only"] = paired_difference(
                seeds(joint[score]), seeds(alone[score])
            )
    if not compared or min(result.n for result in compared.values()) < 2:
        return []
    return [
        "",
        "Paired by seed, the joint model minus each single-task model on that model's task: "
        "per-seed differences, their mean, the paired-t 95% interval, and the smallest true "
        "difference this many seeds would detect at 80% power given the spread seen.",
        "",
        *difference_table(compared, "score"),
    ]
