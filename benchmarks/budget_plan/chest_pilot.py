"""(k) chest recipe pilot: why the chest CT stays below 0.5 held-out Dice at 30 minutes.

The hand-tuned settings on the chest halves (widths 16/128, 48^3 crops, 2 mm, float32, the CT
window of study (k)), trained for a fixed 600 iterations so that a shared machine's speed does
not move the result; seed 0; each variant changes one thing. The held-out right half is
predicted mirrored left-right (``seg predict --tta``); the hand-tuned recipe also predicts the
training half itself, which tells underfitting (both low) from a failure to carry over to the
other side (training half high, held-out low).

    python -m benchmarks.budget_plan.chest_pilot WORK_DIR          # runs what is missing
    python -m benchmarks.budget_plan.chest_pilot WORK_DIR --fold   # rows into results.json

Runs resume by variant (``WORK_DIR/rows.jsonl``); a variant whose training finished is not
trained again.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import yaml

from benchmarks.budget_plan.study import _machine, _visprior, hand_tuned_config, write_task
from benchmarks.demo_holds.recipe_pilot import fold_rows, run_pending

ITERATIONS = 600
SEED = 0
SPACING_MM = 2.0
# variant -> the config keys it changes ("preprocessing" keys merge into the preprocessing)
VARIANTS = {
    "hand-tuned recipe": {},
    "nnU-Net CT z-score": {"preprocessing": "planned normalisation"},
    "lr 3e-3": {"lr": 3e-3},
    "batch Dice": {"batch_dice": True},
    # whether the network is what learns slowly: MONAI's UNet at its registered widths
    "MONAI UNet": {"model": "unet", "model_kwargs": {}},
    # how far it goes with the steps a CPU half-hour buys (a wall limit, not 600 iterations)
    "MONAI UNet 25 min": {
        "model": "unet",
        "model_kwargs": {},
        "iterations": 100_000,
        "time_limit_minutes": 25.0,
        "val_every": 1500,
    },  # fmt: skip
}
ALSO_TRAINING_CASE = ("hand-tuned recipe",)
RESULTS = Path(__file__).with_name("results.json")
KEY = "chest_pilot"  # the key in results.json["data"]


def _planned_normalisation(dataset: Path) -> dict:
    from visprior.data import load_dataset
    from visprior.seg.plan import extract_fingerprint, normalization

    data = load_dataset(dataset)
    schemes = normalization(extract_fingerprint(data), data.channel_names)
    return {"intensity": "planned", "channel_normalization": schemes}


def run_variant(name: str, work: Path) -> dict:
    dataset = write_task("chest", work / "data")
    folder = work / name.replace(" ", "_")
    run_dir = folder / "run"
    changes = dict(VARIANTS[name])
    config = hand_tuned_config("chest", dataset, run_dir, SEED, SPACING_MM, precision="32")
    if changes.pop("preprocessing", None):
        config["preprocessing"] |= _planned_normalisation(dataset)
    config |= {"iterations": ITERATIONS, "val_every": 10 * ITERATIONS, **changes}
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "commands.log"
    if not _trained(run_dir):
        (folder / "config.yaml").write_text(yaml.safe_dump(config))
        _visprior(
            "seg", "train", str(dataset), "--no-plan", "--config", str(folder / "config.yaml"),
            "--output", str(run_dir), log_to=log,
        )  # fmt: skip
    used = yaml.safe_load((folder / "config.yaml").read_text())
    row = {"variant": name, "seed": SEED, "changes": config_changes(used, name)}
    cases = [("held-out half", "imagesTs", "labelsTs", "test")]
    if name in ALSO_TRAINING_CASE:
        cases.append(("training half", "imagesTr", "labelsTr", "train"))
    for label, images, labels, slug in cases:
        predictions, evaluation = folder / f"pred_{slug}", folder / f"eval_{slug}"
        if not (evaluation / "summary.json").is_file():
            _visprior(
                "seg", "predict", str(run_dir), str(dataset / images), "--output",
                str(predictions), "--force", "--tta", log_to=log,
            )  # fmt: skip
            _visprior(
                "seg", "evaluate", str(predictions), str(dataset / labels), "--dataset",
                str(dataset), "--output", str(evaluation), "--force", log_to=log,
            )  # fmt: skip
        summary = json.loads((evaluation / "summary.json").read_text())
        row[label] = {
            "mean_dice": summary["mean_foreground_dice"],
            "dice": {c: v["dice"]["mean"] for c, v in summary["classes"].items()},
        }
    row |= _training_figures(run_dir)
    row["machine"] = _machine()
    return row


def config_changes(config: dict, name: str) -> dict:
    """What the variant changed, as its run's config holds it."""
    changes = dict(VARIANTS[name])
    if "preprocessing" in changes:
        pre = config["preprocessing"]
        changes["preprocessing"] = {k: pre[k] for k in ("intensity", "channel_normalization")}
    return changes


def _trained(run_dir: Path) -> bool:
    last = run_dir / "checkpoints" / "last.pt"
    if not last.is_file():
        return False
    from visprior.checkpoint_io import load_checkpoint

    return int(load_checkpoint(last)["iteration"]) >= ITERATIONS


def _training_figures(run_dir: Path) -> dict:
    from visprior.checkpoint_io import load_checkpoint

    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    iterations = int(state["iteration"])
    figures = {"iterations": iterations, "step_seconds": state["training_seconds"] / iterations}
    # the last validation: on the training half (fold -1), one pass, no mirroring
    with open(run_dir / "metrics.csv") as table:
        validated = [r for r in csv.DictReader(table) if r.get("val_mean_dice")]
    if validated:
        figures["training_half_validation"] = float(validated[-1]["val_mean_dice"])
    return figures


def run(work: Path) -> None:
    for name, row in run_pending(work, VARIANTS, run_variant):
        print(name, row["held-out half"]["mean_dice"], flush=True)


def fold(work: Path, results: Path = RESULTS) -> None:
    """The rows of ``work`` into the study's results file, beside its grids."""
    settings = {"iterations": ITERATIONS, "seed": SEED, "spacing_mm": SPACING_MM}
    fold_rows(work, results, KEY, settings, "python -m benchmarks.budget_plan.chest_pilot WORK_DIR")


def section(pilot: dict) -> list[str]:
    settings = pilot["settings"]
    classes = list(pilot["rows"][0]["held-out half"]["dice"])
    lines = [
        f"Chest recipe pilot (`{pilot['command']}`, {pilot['date']}): the hand-tuned chest "
        f"settings at {settings['spacing_mm']:g} mm in float32, {settings['iterations']} "
        f"iterations, seed {settings['seed']}, one change each; predicted mirrored left-right. "
        "One seed: a screen, not a comparison.",
        "",
        "| variant | case | machine | steps | s/step | mean Dice | " + " | ".join(classes) + " |",
        "|---|---|---|---|---|---|" + "---|" * len(classes),
    ]
    for r in pilot["rows"]:
        for case in ("held-out half", "training half"):
            if case not in r:
                continue
            dice = r[case]["dice"]
            cells = [r["variant"], case, r.get("machine", ""), str(r["iterations"])]
            cells += [f"{r['step_seconds']:.2f}", f"{r[case]['mean_dice']:.3f}"]
            lines.append("| " + " | ".join(cells + [f"{dice[c]:.3f}" for c in classes]) + " |")
    validated = [r for r in pilot["rows"] if "training_half_validation" in r]
    if validated:
        lines += [
            "",
            "The last validation of a run, on its training half (one pass, not mirrored): "
            + "; ".join(f"{r['variant']} {r['training_half_validation']:.3f}" for r in validated)
            + ".",
        ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path)
    parser.add_argument("--fold", action="store_true", help="write the rows into results.json")
    args = parser.parse_args()
    fold(args.work) if args.fold else run(args.work)


if __name__ == "__main__":
    main()
