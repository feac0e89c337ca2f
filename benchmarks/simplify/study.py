"""(g) A ResNet50 CAM classifier shrunk by the kernel redundancy measure, on the synthetic set.

``ggcam_resnet50`` (one channel, 3 classes, no gaze term) is trained from scratch on the
synthetic set, then ``visprior simplify shrink`` cuts it round by round (measure, cut,
fine-tune) while its validation AUC stays within 0.01 of the full network's. The table gives
every round's parameters, FLOPs, CPU time per image and validation / test AUC. The data is
SYNTHETIC (``visprior cxr synth``).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from benchmarks.ggcam.study import fmt_score, synthetic_config

SETTINGS_FULL = {
    "cases_per_class": 100,
    "size": 128,
    "epochs": 30,
    "round_epochs": 20,
    "rounds": 8,
    "probes": 64,
    "target": 0,  # the measure's own cuts; (g2) drives every criterion to set sizes
}
SETTINGS_QUICK = {
    "cases_per_class": 8,
    "size": 64,
    "epochs": 1,
    "round_epochs": 1,
    "rounds": 1,
    "probes": 8,
    "target": 0,
}


def run_simplify(quick: bool, workdir: Path) -> dict:
    """Train the full network, shrink it; return every round's figures."""
    from visprior.cxr.train import train_cxr
    from visprior.simplify.shrink import ShrinkSettings, shrink_run

    settings = SETTINGS_QUICK if quick else SETTINGS_FULL
    config = synthetic_config(settings, workdir, "ggcam_resnet50", {})
    config = dataclasses.replace(config, use_gaze=False, output=str(workdir / "full"))
    started = time.perf_counter()
    train_cxr(config)
    full_minutes = (time.perf_counter() - started) / 60
    shrink = ShrinkSettings(
        probes=settings["probes"],
        max_rounds=settings["rounds"],
        epochs=settings["round_epochs"],
        target_parameters=settings["target"],
        device="cpu",
    )
    started = time.perf_counter()
    rounds = shrink_run(workdir / "full", workdir / "shrunk", shrink)
    shrink_minutes = (time.perf_counter() - started) / 60
    final = [r for r in rounds if r.kept][-1]
    return {
        "settings": settings,
        "threads": torch.get_num_threads(),
        "full_minutes": full_minutes,
        "shrink_minutes": shrink_minutes,
        "rounds": [dataclasses.asdict(r) for r in rounds],
        "scratch": train_widths_from_scratch(config, final.checkpoint, workdir / "scratch"),
    }


def train_widths_from_scratch(config, checkpoint: str, output: Path) -> dict:
    """The control: a cut network's architecture, fresh weights, the full recipe."""
    from visprior.cxr.evaluate import evaluate_run
    from visprior.cxr.predict import load_classifier
    from visprior.cxr.train import train_cxr
    from visprior.simplify.prune import reinitialise

    model = reinitialise(load_classifier(checkpoint).model, seed=config.seed)
    train_cxr(dataclasses.replace(config, output=str(output)), model=model)
    scores = {part: evaluate_run(output, part, overlays=0)["auc"] for part in ("val", "test")}
    return {"parameters": sum(p.numel() for p in model.parameters()), **scores}


def simplify_section(results: dict) -> list[str]:
    """The Markdown section for RESULTS.md."""
    s = results["settings"]
    rounds = results["rounds"]
    full = rounds[0]
    final = [r for r in rounds if r["kept"]][-1]
    lines = [
        "## (g) ResNet50 shrunk by kernel redundancy (SYNTHETIC data)",
        "",
        f"`visprior cxr synth` set: {s['cases_per_class']} images per class, {s['size']} px, "
        f"split 70/10/20 per class. `ggcam_resnet50` (1 channel, 3 classes, no gaze term) "
        f"trained from scratch for {s['epochs']} epochs (Adam 1e-3, plateau schedule; "
        f"{results['full_minutes']:.1f} min), then `visprior simplify shrink`: up to "
        f"{s['rounds']} rounds of measure ({s['probes']} probes, SSIM 0.95) / cut / "
        f"{s['round_epochs']} fine-tuning epochs, each kept while the validation AUC stays "
        f"within 0.01 of the full network's ({results['shrink_minutes']:.1f} min in all). "
        "CPU time: median of 10 forward passes of one image (the full and the kept network: "
        f"30, timed taking turns at the end), {results['threads']} threads. "
        "One seed.",
        "",
        "| round | parameters | MFLOPs / image | ms / image | val AUC | test AUC | blocks cut "
        "| kernels cut | kept |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rounds:
        lines.append(
            f"| {r['round']} | {r['parameters']:,} | {r['flops'] / 1e6:,.1f} | "
            f"{r['ms_per_image']:.2f} | {fmt_score(r['val_auc'])} | {fmt_score(r['test_auc'])} "
            f"| {r['blocks_removed']} | {r['channels_removed']} | {'yes' if r['kept'] else 'no'} |"
        )
    scratch = results.get("scratch")
    if scratch:
        lines.append(
            f"| control: round {final['round']}'s widths, fresh weights, {s['epochs']} epochs | "
            f"{scratch['parameters']:,} | | | {fmt_score(scratch['val'])} | "
            f"{fmt_score(scratch['test'])} | | | |"
        )
    removed = 1 - final["parameters"] / full["parameters"]
    lines += [
        "",
        f"Kept: round {final['round']}, **{final['parameters']:,} parameters "
        f"({removed:.2%} removed)**, {full['flops'] / max(final['flops'], 1):.0f}x fewer FLOPs, "
        f"**{full['ms_per_image'] / final['ms_per_image']:.1f}x faster** per image on this CPU; "
        f"test AUC {fmt_score(full['test_auc'])} -> **{fmt_score(final['test_auc'])}** "
        f"(validation {fmt_score(full['val_auc'])} -> {fmt_score(final['val_auc'])}).",
    ]
    shares = [r for r in rounds[1:] if r.get("redundant_share") is not None]
    if shares:
        lines += [
            "",
            "Redundant share of the convolution parameters, as the measure found it in the "
            "network each round started from: "
            + ", ".join(f"round {r['round']} {r['redundant_share']:.1%}" for r in shares)
            + ".",
        ]
    return lines
