"""(g2) Which channels to cut: the redundancy measure against standard pruning rules.

A ResNet50 CAM classifier (one channel, 3 classes, no gaze term) is trained from scratch on
radiographs rendered from the real CT (``visprior cxr synth --source ct --marker none``), at
a difficulty where it does not saturate. Then ``visprior simplify shrink`` cuts it by each
``--criterion`` through the same sizes (``--waypoints 500000 211000 --target-params 128000``,
rounds of at most 4x, every round kept: ``--auc-tolerance inf``), with the same fine-tuning
after every round. The sizes match, so the test AUC is what differs. Controls: the 128K
architectures of ``redundancy`` and ``magnitude`` trained again from fresh weights with the
full recipe, and (first seed) the measure left to its own threshold, to see where it stops.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
import warnings
from pathlib import Path

import torch

from benchmarks.ggcam.study import fmt_score, recipe_config
from benchmarks.simplify.study import train_widths_from_scratch

SIZES = [500_000, 211_000, 128_000]
SETTINGS_FULL = {
    "model": "ggcam_resnet50",
    "cases_per_class": 100,
    "size": 128,
    "difficulty": 0.5,
    "epochs": 30,
    "round_epochs": 8,
    "probes": 64,
    "sizes": SIZES,
    "max_step": 4.0,
    "seeds": [0, 1],
    "controls": ["redundancy", "magnitude"],
    "natural_rounds": 4,
}
SETTINGS_QUICK = {
    "model": "ggcam_resnet18",
    "cases_per_class": 8,
    "size": 64,
    "difficulty": 0.5,
    "epochs": 1,
    "round_epochs": 1,
    "probes": 8,
    "sizes": [4_000_000, 2_000_000],
    "max_step": 3.0,
    "seeds": [0],
    "controls": ["redundancy"],
    "natural_rounds": 1,
}


def render_set(settings: dict, workdir: Path) -> tuple[Path, float]:
    """The rendered set (seed 0 for every training seed) and its seconds per image."""
    import json

    from visprior.cxr.chest_ct import load_chest_phantom
    from visprior.cxr.ct_render import RenderSettings, write_ct_egd

    folder = workdir / "ct"
    render = RenderSettings(size=settings["size"], difficulty=settings["difficulty"], marker="none")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the loud "synthetic" notice
        write_ct_egd(folder, settings["cases_per_class"], 0, render, load_chest_phantom())
    return folder, json.loads((folder / "render.json").read_text())["seconds_per_image"]


def run_criteria(
    quick: bool, workdir: Path, log, seeds: list[int] | None = None, criteria=None
) -> dict:
    """Every criterion for every seed; returns the rows ``merge`` combines with earlier ones."""
    from visprior.cxr.train import train_cxr
    from visprior.simplify.criteria import CRITERIA
    from visprior.simplify.shrink import ShrinkSettings

    settings = dict(SETTINGS_QUICK if quick else SETTINGS_FULL)
    seeds = list(seeds) if seeds else settings["seeds"]
    criteria = list(criteria) if criteria else list(CRITERIA)
    dataset, seconds_per_image = render_set(settings, workdir)
    log(f"(g2) rendered {dataset} at {seconds_per_image:.2f} s per image")
    rows, natural = [], None
    for seed in seeds:
        config = recipe_config(settings, dataset, workdir / "cache", settings["model"], {})
        full = workdir / f"full_s{seed}"
        config = dataclasses.replace(
            config, use_gaze=False, output=str(full), seed=seed, device="cpu"
        )
        started = time.perf_counter()
        train_cxr(config)
        full_minutes = (time.perf_counter() - started) / 60
        log(f"(g2) seed {seed}: full network trained in {full_minutes:.1f} min")
        for criterion in criteria:
            shrink = ShrinkSettings(
                criterion=criterion,
                target_parameters=settings["sizes"][-1],
                waypoints=tuple(settings["sizes"][:-1]),
                max_step=settings["max_step"],
                max_rounds=12,
                epochs=settings["round_epochs"],
                probes=settings["probes"],
                auc_tolerance=math.inf,
                seed=seed,
                device="cpu",
            )
            rounds, record = _timed_shrink(full, workdir / f"{criterion}_s{seed}", shrink)
            row = {
                "seed": seed,
                "criterion": criterion,
                "full_minutes": full_minutes,
                **record,
                "stage_parameters": stage_parameters(rounds[-1].checkpoint),
            }
            if criterion == "redundancy" and seed == settings["seeds"][0]:
                row["stopping_rules"] = stopping_rules(
                    workdir / f"{criterion}_s{seed}", settings["sizes"][:-1], settings["probes"]
                )
            if criterion in settings["controls"]:
                output = workdir / f"fresh_{criterion}_s{seed}"
                row["fresh"] = train_widths_from_scratch(config, rounds[-1].checkpoint, output)
            rows.append(row)
            final = rounds[-1]
            log(
                f"(g2) seed {seed} {criterion}: {final.parameters:,} parameters, test AUC "
                f"{rounds[0].test_auc:.3f} -> {final.test_auc:.3f} ({row['minutes']:.1f} min)"
            )
        first = seed == settings["seeds"][0]
        if first and settings["natural_rounds"] and "redundancy" in criteria:
            own = ShrinkSettings(
                max_rounds=settings["natural_rounds"],
                epochs=settings["round_epochs"],
                probes=settings["probes"],
                seed=seed,
                device="cpu",
            )
            rounds, record = _timed_shrink(full, workdir / f"natural_s{seed}", own)
            natural = {"seed": seed, **record}
            log(f"(g2) the measure on its own stopped at {rounds[-1].parameters:,} parameters")
    return {
        "settings": settings,
        "threads": torch.get_num_threads(),
        "seconds_per_image": seconds_per_image,
        "rows": rows,
        "natural": natural,
    }


def _timed_shrink(run: Path, output: Path, settings) -> tuple[list, dict]:
    """``shrink_run``'s rounds, and its minutes and rounds as a results record."""
    from visprior.simplify.shrink import shrink_run

    started = time.perf_counter()
    rounds = shrink_run(run, output, settings)
    minutes = (time.perf_counter() - started) / 60
    return rounds, {"minutes": minutes, "rounds": [dataclasses.asdict(r) for r in rounds]}


def stage_parameters(checkpoint: str) -> list[int]:
    """Parameters of each stage of a CAM classifier's backbone (its nn.Sequential children, in
    order; for a ResNet: layer1-4): where a criterion left the network's capacity."""
    from torch import nn

    from visprior.cxr.predict import load_classifier

    backbone = getattr(load_classifier(checkpoint).model, "backbone", None)
    if backbone is None:
        return []
    stages = [m for m in backbone.children() if isinstance(m, nn.Sequential)]
    return [sum(p.numel() for p in stage.parameters()) for stage in stages]


def stopping_rules(run: Path, start_sizes: list[int], probes: int) -> list[dict]:
    """What limits the measure's own cut: from the ``redundancy`` run's networks at each of
    ``start_sizes``, one cut by the measure's rule as it is (SSIM 0.95, the residual-stream
    majority, at most 50% of a group) and with one of the three lifted. No fine-tuning: the
    sizes say how far each rule lets one cut go."""
    import copy
    import json

    from visprior.cxr.predict import load_classifier
    from visprior.simplify.prune import parameter_count, prune_redundant
    from visprior.simplify.redundancy import measure_redundancy
    from visprior.simplify.shrink import _split_parts, probe_images

    summary = json.loads((run / "shrink.json").read_text())
    rows = []
    for size in start_sizes:
        chosen = next((r for r in summary["rounds"] if r["target"] == size), None)
        if chosen is None:
            continue
        folder = run / f"round_{chosen['round']}"
        classifier = load_classifier(folder)
        model = classifier.model.cpu().eval()
        train = _split_parts(folder, classifier.config)["train"]
        images = probe_images([c.image for c in train], probes, classifier.image_size)
        reports = {0.95: measure_redundancy(model, images, 0.95)}
        reports[0.9] = measure_redundancy(model, images, 0.9)
        variants = [
            ("as it is", 0.95, 0.5, True),
            ("no 50% cap", 0.95, 1.0, True),
            ("no stream rule (one writer's verdict is enough)", 0.95, 0.5, False),
            ("threshold SSIM 0.90", 0.9, 0.5, True),
        ]
        for name, threshold, cap, stream_rule in variants:
            trial = copy.deepcopy(model)
            cut = prune_redundant(
                trial, reports[threshold], images[:1], 4, max_cut=cap, stream_rule=stream_rule
            )
            rows.append(
                {
                    "start": chosen["parameters"],
                    "rule": name,
                    "after": parameter_count(trial),
                    "channels": cut["channels_removed"],
                    "blocks": cut["blocks_removed"],
                    "redundant_share": reports[threshold].redundant_parameters,
                }
            )
    return rows


def merge(old: dict | None, new: dict) -> dict:
    """New rows replace earlier ones of the same seed and criterion; the rest stay."""
    if not old or old.get("settings", {}).get("sizes") != new["settings"]["sizes"]:
        return new
    fresh = {(r["seed"], r["criterion"]) for r in new["rows"]}
    rows = [r for r in old["rows"] if (r["seed"], r["criterion"]) not in fresh] + new["rows"]
    order = ["redundancy", "magnitude", "taylor", "uniform", "random"]
    rows.sort(key=lambda r: (r["seed"], order.index(r["criterion"])))
    # rendering is timed once per part; the fastest part ran with nothing else on the machine
    seconds = min(new["seconds_per_image"], old.get("seconds_per_image", math.inf))
    return {
        **new,
        "rows": rows,
        "natural": new["natural"] or old.get("natural"),
        "seconds_per_image": seconds,
    }


def _at_size(row: dict, size: int) -> dict | None:
    return next((r for r in row["rounds"] if r["target"] == size), None)


def _median(values: list[float]) -> float:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(values) if values else math.nan


def _spread(values: list[float]) -> str:
    return " / ".join(fmt_score(v) for v in values)


def criteria_section(results: dict) -> list[str]:
    """The Markdown section for RESULTS.md."""
    s = results["settings"]
    rows = results["rows"]
    seeds = sorted({r["seed"] for r in rows})
    criteria = list(dict.fromkeys(r["criterion"] for r in rows))
    full = {r["seed"]: r["rounds"][0] for r in rows}
    waypoints = (
        " --waypoints " + " ".join(str(x) for x in s["sizes"][:-1]) if s["sizes"][1:] else ""
    )
    lines = [
        "## (g2) Which channels to cut: the redundancy measure against standard pruning, at "
        "equal sizes (radiographs rendered from a real CT)",
        "",
        f"`visprior cxr synth --source ct --marker none --difficulty {s['difficulty']}`: "
        f"{s['cases_per_class']} images per class, {s['size']} px, split 70/10/20 per class "
        f"({results['seconds_per_image']:.2f} s per image to render). `{s['model']}` (1 "
        f"channel, 3 classes, no gaze term) trained from scratch for {s['epochs']} epochs "
        "(Adam 1e-3, plateau schedule), once per seed; then `visprior simplify shrink "
        f"--criterion C{waypoints} --target-params {s['sizes'][-1]} "
        f"--max-step {s['max_step']:g} --auc-tolerance inf "
        f"--epochs {s['round_epochs']}` for every criterion: the same rounds, sizes and "
        f"fine-tuning ({s['probes']} probes for the measure, 50% largest cut per group and "
        "round, 4 channels kept per group). The seed sets the full network's training, the "
        "fine-tuning and the random draw. Seeds: "
        f"{', '.join(str(x) for x in seeds)}. Test part: {round(0.2 * s['cases_per_class'])} "
        "images per class. "
        f"CPU times: median of 10 forward passes of one image, {results['threads']} threads.",
        "",
        "Full network: "
        + ", ".join(
            f"seed {seed}: {full[seed]['parameters']:,} parameters, test AUC "
            f"{fmt_score(full[seed]['test_auc'])} (validation {fmt_score(full[seed]['val_auc'])})"
            for seed in seeds
        )
        + ".",
        "",
        "| size | criterion | parameters (median) | MFLOPs / image | ms / image | test AUC "
        "per seed | median test AUC |",
        "|---|---|---|---|---|---|---|",
    ]
    for size in s["sizes"]:
        for criterion in criteria:
            cells = [_at_size(r, size) for r in rows if r["criterion"] == criterion]
            cells = [c for c in cells if c]
            if not cells:
                continue
            aucs = [c["test_auc"] for c in cells]
            lines.append(
                f"| {size:,} | {criterion} | {_median([c['parameters'] for c in cells]):,.0f} | "
                f"{_median([c['flops'] for c in cells]) / 1e6:,.1f} | "
                f"{_median([c['ms_per_image'] for c in cells]):.2f} | {_spread(aucs)} | "
                f"**{fmt_score(_median(aucs))}** |"
            )
    lines += _flops_ratio_lines(rows, s["sizes"], criteria)
    lines += _parts_lines(s["cases_per_class"])
    controls = [r for r in rows if r.get("fresh")]
    if controls:
        lines += [
            "",
            f"Fresh-weight control at {s['sizes'][-1]:,}: the architecture each criterion "
            f"reached, fresh weights, the full recipe ({s['epochs']} epochs).",
            "",
            "| criterion | parameters | test AUC, pruned + fine-tuned, per seed | test AUC, "
            "fresh weights, per seed |",
            "|---|---|---|---|",
        ]
        for criterion in dict.fromkeys(r["criterion"] for r in controls):
            mine = [r for r in controls if r["criterion"] == criterion]
            lines.append(
                f"| {criterion} | {_median([r['fresh']['parameters'] for r in mine]):,.0f} | "
                f"{_spread([r['rounds'][-1]['test_auc'] for r in mine])} | "
                f"{_spread([r['fresh']['test'] for r in mine])} |"
            )
    lines += _natural_lines(results)
    lines += _diagnosis_lines(rows)
    lines += _stopping_lines(rows)
    lines += _stage_lines(rows, s["sizes"][-1])
    return lines


def _flops_ratio_lines(rows: list[dict], sizes: list[int], criteria: list[str]) -> list[str]:
    """Each criterion's median FLOPs at a size over the fewest any criterion reached there."""
    parts = []
    for size in sizes:
        medians = {}
        for criterion in criteria:
            cells = [
                c for c in (_at_size(r, size) for r in rows if r["criterion"] == criterion) if c
            ]
            if cells:
                medians[criterion] = _median([c["flops"] for c in cells])
        if len(medians) < 2:
            continue
        fewest = min(medians, key=medians.get)
        ratios = ", ".join(f"{c} {f / medians[fewest]:.1f}x" for c, f in medians.items())
        parts.append(f"{size:,}: {ratios} (over {fewest})")
    if not parts:
        return []
    return ["", "FLOPs over the fewest at each size (median MFLOPs): " + "; ".join(parts) + "."]


def _parts_lines(cases_per_class: int, classes: int = 3) -> list[str]:
    """The split's part sizes, counted by the split the training runs use."""
    from types import SimpleNamespace

    from visprior.cxr.data import split_per_class

    cases = [SimpleNamespace(label=c) for c in range(classes) for _ in range(cases_per_class)]
    train, val, test = (len(part) for part in split_per_class(cases))
    return [
        "",
        f"Parts: {train} training films ({train // classes} per class), {val} validation, "
        f"{test} test.",
    ]


def _stage_lines(rows: list[dict], size: int) -> list[str]:
    found = [r for r in rows if r.get("stage_parameters")]
    if not found:
        return []
    stages = max(len(r["stage_parameters"]) for r in found)
    lines = [
        "",
        f"Where each criterion left the parameters at {size:,}: thousands per backbone stage "
        "(the ResNet's layer1-4; the rest is the stem and the CAM head).",
        "",
        "| criterion | seed | " + " | ".join(f"stage {i + 1}" for i in range(stages)) + " |",
        "|---|---|" + "---|" * stages,
    ]
    for r in found:
        cells = " | ".join(f"{p / 1e3:.0f}K" for p in r["stage_parameters"])
        lines.append(f"| {r['criterion']} | {r['seed']} | {cells} |")
    if stages >= 2:
        early = ", ".join(
            f"{r['criterion']} seed {r['seed']} {sum(r['stage_parameters'][:2]) / 1e3:.0f}K"
            for r in found
        )
        lines += ["", f"Stages 1 and 2 together: {early}."]
    return lines


def _stopping_lines(rows: list[dict]) -> list[str]:
    found = [r for r in rows if r.get("stopping_rules")]
    if not found:
        return []
    lines = [
        "",
        f"One cut by the measure's own rule from the `redundancy` run's networks (seed "
        f"{found[0]['seed']}), as it is and with one of its limits lifted; no fine-tuning.",
        "",
        "| network | rule | parameters after one cut | channels cut | redundant share of "
        "the convolution parameters |",
        "|---|---|---|---|---|",
    ]
    for r in found[0]["stopping_rules"]:
        lines.append(
            f"| {r['start']:,} | {r['rule']} | {r['after']:,} ({r['after'] / r['start']:.0%}) | "
            f"{r['channels']} | {r['redundant_share']:.1%} |"
        )
    return lines


def _natural_lines(results: dict) -> list[str]:
    natural = results.get("natural")
    if not natural:
        return []
    lines = [
        "",
        f"The measure on its own (seed {natural['seed']}; no target, its threshold SSIM 0.95, "
        "rounds kept while the validation AUC stays within 0.01, a lost round retried with half "
        f"the cut): {natural['minutes']:.1f} min.",
        "",
        "| round | parameters | val AUC | test AUC | redundant share | kernels cut | kept |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in natural["rounds"]:
        lines.append(
            f"| {r['round']} | {r['parameters']:,} | {fmt_score(r['val_auc'])} | "
            f"{fmt_score(r['test_auc'])} | {r['redundant_share']:.1%} | "
            f"{r['channels_removed']} | {'yes' if r['kept'] else 'no'} |"
        )
    cuts, start = [], natural["rounds"][0]
    for r in natural["rounds"][1:]:
        kept = "" if r["kept"] else " (not kept)"
        cuts.append(f"round {r['round']} {1 - r['parameters'] / start['parameters']:.1%}{kept}")
        if r["kept"]:
            start = r
    if cuts:
        lines += [
            "",
            "Share of the parameters each round cut from the last kept network: "
            + ", ".join(cuts)
            + ".",
        ]
    return lines


def _diagnosis_lines(rows: list[dict]) -> list[str]:
    """What the measure's own rule would cut in each round of the redundancy runs."""
    mine = [r for r in rows if r["criterion"] == "redundancy"]
    if not mine:
        return []
    lines = [
        "",
        "What stops the measure: in each round of the `redundancy` runs, the channels its own "
        "rule would cut from the network it was given, and the flagged channels it would keep "
        "by the residual-stream rule (flagged by a minority of a stream's writers) or by the "
        "caps (50% per round, 4 per group).",
        "",
        "| seed | round | size before the round | redundant share | channels it would cut | "
        "kept by the stream rule | kept by the caps |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in mine:
        rounds = row["rounds"]
        for before, r in zip(rounds, rounds[1:], strict=False):
            lines.append(
                f"| {row['seed']} | {r['round']} | {before['parameters']:,} | "
                f"{r['redundant_share']:.1%} | {r['natural_cut']} | {r['stream_vetoed']} | "
                f"{r['capped']} |"
            )
    return lines


def write_criteria_plot(results: dict, path: Path) -> Path:
    """Test AUC against parameters (log x), one line per criterion (medians over seeds, each
    seed a faint dot), the full network and the fresh-weight controls as markers."""
    from matplotlib import ticker
    from matplotlib.figure import Figure

    rows = results["rows"]
    figure = Figure(figsize=(7.5, 4.8), dpi=120)
    axes = figure.subplots()
    for criterion in dict.fromkeys(r["criterion"] for r in rows):
        mine = [r for r in rows if r["criterion"] == criterion]
        points = []
        for size in results["settings"]["sizes"]:
            cells = [c for c in (_at_size(r, size) for r in mine) if c]
            if cells:
                points.append((size, _median([c["test_auc"] for c in cells])))
        (line,) = axes.plot(*zip(*points, strict=True), marker="o", label=criterion)
        for r in mine:
            for size in results["settings"]["sizes"]:
                cell = _at_size(r, size)
                if cell:
                    axes.plot(size, cell["test_auc"], ".", color=line.get_color(), alpha=0.4)
            if r.get("fresh"):
                axes.plot(
                    r["fresh"]["parameters"],
                    r["fresh"]["test"],
                    "x",
                    color=line.get_color(),
                    markersize=9,
                )
    full = [r["rounds"][0] for r in rows]
    axes.axhline(
        _median([f["test_auc"] for f in full]),
        color="grey",
        linestyle="--",
        label=f"full network ({_median([f['parameters'] for f in full]) / 1e6:.1f}M)",
    )
    axes.set_xscale("log")
    sizes = results["settings"]["sizes"]
    axes.set_xticks(sizes, labels=[f"{size / 1e3:,.0f}K" for size in sizes])
    axes.xaxis.set_minor_locator(ticker.NullLocator())
    axes.set_xlabel("parameters")
    axes.set_ylabel("test AUC (macro)")
    axes.set_title("(g2) equal sizes, five criteria; x: fresh weights at the smallest size")
    axes.legend(fontsize=8)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    return path
