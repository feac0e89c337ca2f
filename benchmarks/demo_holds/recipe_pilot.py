"""(l) recipe pilot: which change to the demo's recipe buys Dice at a fixed number of steps.

The demo's hand-tuned settings at the spacing the plan takes on a 2-core machine without fast
bf16 (1.27 mm, 48^3 crops, widths 16/128, float32), trained for a fixed 600 iterations (about
what 10 minutes give on such a machine), so that a shared machine's speed does not move the
result; one seed. Each variant changes one thing. Every run's held-out right hemisphere is
then predicted twice: in one pass, and mirrored left-right (``seg predict --tta``: the
softmax averaged with that of the flipped input, the flip training used).

    python -m benchmarks.demo_holds.recipe_pilot WORK_DIR          # runs what is missing
    python -m benchmarks.demo_holds.recipe_pilot WORK_DIR --fold   # rows into results.json

Runs resume by variant: a variant whose row is in ``WORK_DIR/rows.jsonl`` is not run again.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import yaml

from benchmarks.budget_plan.study import _figures, _visprior, hand_tuned_config, write_task

ITERATIONS = 600
SEED = 1
SPACING_MM = 1.27
# variant -> the config keys it changes
VARIANTS = {
    "demo recipe": {},
    "no affine augmentation": {"affine_prob": 0.0},
    "lr 3e-3": {"lr": 3e-3},
    "batch Dice": {"batch_dice": True},
}
RESULTS = Path(__file__).with_name("results.json")
KEY = "recipe_pilot"  # the key in results.json["data"] (study.RECIPE_PILOT)


def run_variant(name: str, work: Path) -> dict:
    dataset = write_task("brain", work / "data")
    folder = work / name.replace(" ", "_")
    run_dir = folder / "run"
    config = hand_tuned_config("brain", dataset, run_dir, SEED, SPACING_MM, precision="32")
    config |= {"iterations": ITERATIONS, "val_every": 10 * ITERATIONS, **VARIANTS[name]}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    log = folder / "commands.log"
    _visprior(
        "seg", "train", str(dataset), "--no-plan", "--config", str(folder / "config.yaml"),
        "--output", str(run_dir), log_to=log,
    )  # fmt: skip
    row = {"variant": name, "seed": SEED, "changes": VARIANTS[name]}
    for prediction, extra in (("one pass", ()), ("mirrored", ("--tta",))):
        predictions = folder / f"predictions_{prediction.replace(' ', '_')}"
        started = time.perf_counter()
        _visprior(
            "seg", "predict", str(run_dir), str(dataset / "imagesTs"), "--output",
            str(predictions), "--force", *extra, log_to=log,
        )  # fmt: skip
        seconds = time.perf_counter() - started
        _visprior(
            "seg", "evaluate", str(predictions), str(dataset / "labelsTs"), "--dataset",
            str(dataset), "--output", str(folder / "evaluation"), "--force", log_to=log,
        )  # fmt: skip
        figures = _figures(folder, dataset, run_dir)
        row[prediction] = {
            "mean_dice": figures["mean_dice"],
            "dice": figures["dice"],
            "predict_seconds": seconds,
        }
    row |= {k: figures[k] for k in ("iterations", "step_seconds", "settings")}
    return row


def run(work: Path) -> None:
    for name, row in run_pending(work, VARIANTS, run_variant):
        print(name, row["one pass"]["mean_dice"], row["mirrored"]["mean_dice"], flush=True)


def run_pending(work: Path, variants, run_variant):
    """Run each variant not yet in ``work/rows.jsonl``, appending its row as it finishes (a
    stopped pilot resumes by variant); yields (name, row)."""
    rows_file = work / "rows.jsonl"
    done = {json.loads(line)["variant"] for line in _lines(rows_file)}
    for name in variants:
        if name in done:
            continue
        row = run_variant(name, work)
        with open(rows_file, "a") as out:
            out.write(json.dumps(row) + "\n")
        yield name, row


def fold(work: Path, results: Path = RESULTS) -> None:
    """The rows of ``work`` into the study's results file, beside its grids."""
    settings = {"iterations": ITERATIONS, "seed": SEED, "spacing_mm": SPACING_MM}
    fold_rows(work, results, KEY, settings, "python -m benchmarks.demo_holds.recipe_pilot WORK_DIR")


def fold_rows(work: Path, results: Path, key: str, settings: dict, command: str) -> None:
    """A pilot's rows (``work/rows.jsonl``) into ``results``' data under ``key``."""
    rows = [json.loads(line) for line in _lines(work / "rows.jsonl")]
    content = json.loads(results.read_text())
    content["data"][key] = {
        "settings": settings,
        "rows": rows,
        "command": command,
        "date": time.strftime("%Y-%m-%d"),
    }
    results.write_text(json.dumps(content, indent=1) + "\n")


def section(pilot: dict) -> list[str]:
    settings = pilot["settings"]
    lines = [
        f"Recipe pilot (`{pilot['command']}`, {pilot['date']}): the hand-tuned demo at "
        f"{settings['spacing_mm']:g} mm in float32, {settings['iterations']} iterations, seed "
        f"{settings['seed']}, one change each; the held-out hemisphere predicted in one pass "
        "and mirrored left-right (`--tta`). One seed: a screen, not a comparison.",
        "",
        "| variant | s/step | one pass: mean Dice | accumbens | mirrored: mean Dice | "
        "accumbens | mirrored - one pass | predict s (one pass, mirrored) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in pilot["rows"]:
        one, mirrored = r["one pass"], r.get("mirrored")
        cells = [
            r["variant"], f"{r['step_seconds']:.2f}", f"{one['mean_dice']:.3f}",
            f"{one['dice']['accumbens']:.3f}",
        ]  # fmt: skip
        if mirrored:
            cells += [
                f"{mirrored['mean_dice']:.3f}", f"{mirrored['dice']['accumbens']:.3f}",
                f"{mirrored['mean_dice'] - one['mean_dice']:+.3f}",
                f"{one['predict_seconds']:.0f}, {mirrored['predict_seconds']:.0f}"
                if one.get("predict_seconds") else "-",
            ]  # fmt: skip
        else:
            cells += ["-", "-", "-", "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _lines(path: Path) -> list[str]:
    return (
        [line for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path)
    parser.add_argument("--fold", action="store_true", help="write the rows into results.json")
    args = parser.parse_args()
    fold(args.work) if args.fold else run(args.work)


if __name__ == "__main__":
    main()
