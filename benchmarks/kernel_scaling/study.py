"""(d2) Kernel scaling, the RepUX-Net paper's hypothesis: plain large depth-wise kernels stop
gaining (or lose) as the kernel grows, and Bayesian frequency re-parameterization fixes that.

``repuxnet_plain`` and ``repuxnet`` (BFR) at k in {7, 13, 21} run ``visprior demo`` at the
demo's widths and settings for an equal number of iterations (not time), each seed in a fresh
process. The demo's poly schedule then runs over the iterations.

A further kind, not the paper's recipe, tests why large kernels lag at a short budget: BFR at
k started by UpKern (``--init ... --upkern``) from a BFR k7 warm-up of the same seed, the two
runs splitting the iterations evenly (``--only kernel-scaling-upkern``).
"""

from __future__ import annotations

import statistics
from pathlib import Path

from benchmarks.demo_runs import finished_run, has_checkpoint, has_finished, run_network
from benchmarks.grid import Grid, Unit, run_grid
from benchmarks.paired import PairedDifference, difference_table, paired_difference

KINDS = [("plain", "repuxnet_plain"), ("BFR", "repuxnet")]
UPKERN = "BFR, UpKern"
ALL_KINDS = [kind for kind, _ in KINDS] + [UPKERN]
SETTINGS_FULL = {"kernels": (7, 13, 21), "seeds": (0, 1), "iterations": 200, "val_every": 50}
SETTINGS_QUICK = {"kernels": (3,), "seeds": (0,), "iterations": 2, "val_every": 2}
# the warm-up's kernel, and the kernels started from it (quick: the smallest that differ)
UPKERN_FULL = {"warmup_kernel": 7, "kernels": (21,)}
UPKERN_QUICK = {"warmup_kernel": 3, "kernels": (5,)}
KEY_FIELDS = ("kind", "k", "seed")


def _settings(quick: bool, seeds=None, kernels=None, default_kernels=None) -> dict:
    settings = dict(SETTINGS_QUICK if quick else SETTINGS_FULL)
    settings["seeds"] = tuple(seeds or settings["seeds"])
    settings["kernels"] = tuple(kernels or default_kernels or settings["kernels"])
    return settings


def _fixed(settings: dict) -> dict:
    """The settings every row of one grid shares."""
    return {"iterations": settings["iterations"], "val_every": settings["val_every"]}


def scaling_grid(quick: bool, seeds=None, kernels=None) -> Grid:
    """Every (kernel, kind, seed) unit; ``seeds`` / ``kernels`` restrict it."""
    settings = _settings(quick, seeds, kernels)
    units = [
        Unit({"kind": kind, "k": k, "seed": seed}, _scaling_unit(name, k, seed, settings), _started)
        for seed in settings["seeds"]
        for k in settings["kernels"]
        for kind, name in KINDS
    ]
    return Grid(units, _fixed(settings), KEY_FIELDS)


def _started(work: Path) -> bool:
    return has_checkpoint(work) or has_checkpoint(work / "warmup")


def _scaling_unit(name: str, k: int, seed: int, settings: dict):
    def run(work: Path, resume: bool) -> dict:
        options = ["--iterations", str(settings["iterations"]), "--kernel-size", str(k)]
        options += ["--seed", str(seed), "--val-every", str(settings["val_every"])]
        row = run_network(name, 0, work.parent, options, tag=work.name, resume=resume)
        if not row.get("error"):
            row["kernel_profile"] = trained_profile(Path(row["run_dir"]))
            row["initial_profile"] = initial_profile(name, k)
        return row

    return run


def upkern_grid(quick: bool, seeds=None, kernels=None) -> Grid:
    """BFR at each k started by UpKern from a BFR warm-up at the small kernel, per seed: the
    warm-up takes half of the iterations, the large kernel the rest. A row's iterations and
    training seconds count both runs."""
    upkern = UPKERN_QUICK if quick else UPKERN_FULL
    settings = _settings(quick, seeds, kernels, upkern["kernels"])
    small = upkern["warmup_kernel"]
    if any(k <= small for k in settings["kernels"]):
        raise ValueError(f"--kernels: UpKern starts from k={small}; give larger kernels")
    units = [
        Unit(
            {"kind": UPKERN, "k": k, "seed": seed},
            _upkern_unit(k, small, seed, settings),
            _started,
        )
        for seed in settings["seeds"]
        for k in settings["kernels"]
    ]
    return Grid(units, _fixed(settings), KEY_FIELDS)


def _upkern_unit(k: int, small: int, seed: int, settings: dict):
    common = ["--seed", str(seed), "--val-every", str(settings["val_every"])]
    warmup_iterations = settings["iterations"] // 2

    def stage(work: Path, tag: str, options: list[str]) -> dict:
        if has_finished(work / tag):
            return finished_run("repuxnet", work / tag)
        resume = has_checkpoint(work / tag)
        return run_network("repuxnet", 0, work, [*common, *options], tag=tag, resume=resume)

    def run(work: Path, resume: bool) -> dict:
        warmup = stage(
            work, "warmup", ["--iterations", str(warmup_iterations), "--kernel-size", str(small)]
        )
        if warmup.get("error"):
            return {
                "name": "repuxnet",
                "warmup_kernel": small,
                "error": f"the k{small} warm-up failed: {warmup['error']}",
            }
        init = Path(warmup["run_dir"]) / "checkpoints" / "best.pt"
        options = ["--iterations", str(settings["iterations"] - warmup_iterations)]
        options += ["--kernel-size", str(k), "--init", str(init), "--upkern"]
        row = stage(work, "upkern", options)
        if not row.get("error"):
            row["warmup"] = {
                key: warmup[key]
                for key in ("iterations", "training_seconds", "mean_foreground_dice", "curve")
            }
            row["iterations"] += warmup["iterations"]
            row["training_seconds"] += warmup["training_seconds"]
            row["kernel_profile"] = trained_profile(Path(row["run_dir"]))
            row["initial_profile"] = upkerned_profile(init, k)
        return {"warmup_kernel": small, **row}

    return run


def run_part(part: str, context) -> dict:
    """``kernel-scaling`` or ``kernel-scaling-upkern``, unit by unit into the results file."""
    args = context.args
    build = scaling_grid if part == "kernel-scaling" else upkern_grid
    grid = build(args.quick, args.seeds, args.kernels)
    return run_grid(grid, context.store, part, merge, context.log)


def grids(args) -> list[tuple[str, None, Grid]]:
    """(part, where in the data, grid) of both parts, for ``--status`` and the reports."""
    return [
        ("kernel-scaling", None, scaling_grid(args.quick, args.seeds, args.kernels)),
        ("kernel-scaling-upkern", None, upkern_grid(args.quick, args.seeds)),
    ]


def merge(earlier: dict | None, new: dict) -> dict:
    """``new``'s rows replace earlier rows of the same kind, k and seed at the same iteration
    count; another count replaces everything."""
    same = earlier and earlier["settings"]["iterations"] == new["settings"]["iterations"]
    if not same:
        return new
    rows = {(r["kind"], r["k"], r["seed"]): r for r in earlier["rows"]}
    rows.update({(r["kind"], r["k"], r["seed"]): r for r in new["rows"]})
    ordered = sorted(rows.values(), key=lambda r: (r["k"], ALL_KINDS.index(r["kind"]), r["seed"]))
    kernels = sorted({r["k"] for r in ordered})
    seeds = sorted({r["seed"] for r in ordered})
    return {"settings": {**new["settings"], "kernels": kernels, "seeds": seeds}, "rows": ordered}


def smallest_structure(rows: list[dict]) -> str | None:
    """The structure with the fewest reference voxels, as the demo reports them."""
    sizes = next((r["class_voxels"] for r in rows if r.get("class_voxels")), None)
    return min(sizes, key=sizes.get) if sizes else None


def mean_sd(values: list[float], digits: int = 3) -> str:
    """``mean ± sample sd`` of the seeds' values (the value alone for one seed, ``-`` for none)."""
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _good(rows: list[dict]) -> list[dict]:
    return [r for r in rows if not r.get("error")]


def scaling_table(scaling: dict) -> list[str]:
    rows = _good(scaling["rows"])
    if not rows:
        return ["(every run failed; see Failed cases)"]
    small = smallest_structure(rows)
    lines = [
        f"| k | kernel | seeds | parameters | s / iteration | mean Dice | {small} Dice |",
        "|---|---|---|---|---|---|---|",
    ]
    for k in scaling["settings"]["kernels"]:
        for kind in ALL_KINDS:
            cell = [r for r in rows if r["k"] == k and r["kind"] == kind]
            if not cell:
                continue
            per_iteration = statistics.median(r["training_seconds"] / r["iterations"] for r in cell)
            lines.append(
                f"| {k} | {kind} | {len(cell)} | {cell[0]['parameters'] / 1e6:.2f}M | "
                f"{per_iteration:.2f} | {mean_sd([r['mean_foreground_dice'] for r in cell])} | "
                f"{mean_sd([r['dice'][small] for r in cell])} |"
            )
    return lines


def paired_differences(
    scaling: dict, kind: str = "BFR", baseline: str = "plain"
) -> list[tuple[int, PairedDifference, PairedDifference]]:
    """``kind`` minus ``baseline`` per k, paired by seed: (k, mean Dice, the smallest
    structure's Dice)."""
    rows = _good(scaling["rows"])
    small = smallest_structure(rows)
    out = []
    for k in scaling["settings"]["kernels"]:
        arm = {r["seed"]: r for r in rows if r["kind"] == kind and r["k"] == k}
        base = {r["seed"]: r for r in rows if r["kind"] == baseline and r["k"] == k}
        if not set(arm) & set(base):
            continue
        out.append(
            (
                k,
                paired_difference(
                    {s: r["mean_foreground_dice"] for s, r in arm.items()},
                    {s: r["mean_foreground_dice"] for s, r in base.items()},
                ),
                paired_difference(
                    {s: r["dice"][small] for s, r in arm.items()},
                    {s: r["dice"][small] for s, r in base.items()},
                ),
            )
        )
    return out


def scaling_section(scaling: dict) -> list[str]:
    settings = scaling["settings"]
    small = smallest_structure(_good(scaling["rows"]))
    lines = [
        f"## (d2) Kernel scaling at equal iterations: {settings['iterations']} each",
        "",
        "`visprior demo --model NAME --kernel-size K --iterations N --seed S` for plain and BFR "
        "RepUX-Net kernels (demo widths, feature size 16, 48^3 crops, AdamW 1e-3, poly schedule "
        f"over the iterations, validation every {settings['val_every']} iterations on the "
        "training hemisphere choosing the checkpoint), each in a fresh process; Dice on the "
        "held-out right hemisphere. Mean ± sample standard deviation over seeds "
        f"{', '.join(map(str, settings['seeds']))}; s / iteration is the median training time "
        "per step, validation excluded.",
        "",
        *scaling_table(scaling),
        "",
    ]
    for kind, baseline in (("BFR", "plain"), (UPKERN, "BFR")):
        differences = paired_differences(scaling, kind, baseline)
        if not differences:
            continue
        lines += [
            f"Paired by seed, {kind} minus {baseline}: the per-seed differences, their mean, "
            "the paired-t 95% interval, and the smallest true difference this many seeds "
            "would detect at 80% power given the spread seen; a row is better or worse only "
            "where its interval excludes 0.",
            "",
            *difference_table(
                {
                    f"k = {k}, {what}": result
                    for k, mean, smallest in differences
                    for what, result in (("mean Dice", mean), (f"{small} Dice", smallest))
                },
                "k, score",
            ),
            "",
        ]
    warmups = sorted({r["warmup_kernel"] for r in _good(scaling["rows"]) if r["kind"] == UPKERN})
    if warmups:
        lines += [
            f"{UPKERN} (not the paper's recipe): a BFR run at k = "
            f"{', '.join(map(str, warmups))} for half of the iterations, then BFR at k from its "
            "best checkpoint by `--init ... --upkern` for the other half, each with its own poly "
            "schedule; its iterations and s / iteration count both runs, and its kernel energy "
            "at init is that of the resampled warm-up kernels.",
            "",
        ]
    return [*lines, *profile_table(scaling), "![kernel scaling](figure.png)"]


def write_scaling_plot(scaling: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _good(scaling["rows"])
    small = smallest_structure(rows)
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, (title, value) in zip(
        axes,
        [
            ("mean foreground Dice", lambda r: r["mean_foreground_dice"]),
            (f"{small} Dice", lambda r: r["dice"][small]),
        ],
        strict=True,
    ):
        for kind, colour, shift in zip(
            ALL_KINDS, ("tab:grey", "tab:blue", "tab:orange"), (-0.3, 0.3, 0.6), strict=True
        ):
            kernels = [
                k
                for k in scaling["settings"]["kernels"]
                if any(r["k"] == k and r["kind"] == kind for r in rows)
            ]
            if not kernels:
                continue
            cells = [[value(r) for r in rows if r["k"] == k and r["kind"] == kind] for k in kernels]
            means = [statistics.mean(c) for c in cells]
            axis.plot(kernels, means, "-o", color=colour, label=kind)
            for k, cell in zip(kernels, cells, strict=True):
                axis.scatter([k + shift] * len(cell), cell, color=colour, s=12, alpha=0.6)
        axis.set_xlabel("kernel size k")
        axis.set_xticks(list(scaling["settings"]["kernels"]))
        axis.set_title(title)
        axis.grid(alpha=0.3)
    axes[0].legend()
    figure.suptitle(
        f"RepUX-Net kernels, {scaling['settings']['iterations']} iterations "
        "(line: mean; dots: seeds)"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def trained_profile(run_dir: Path) -> dict:
    from visprior.checkpoint_io import load_checkpoint

    return kernel_profile(load_checkpoint(run_dir / "checkpoints" / "best.pt")["state_dict"])


def initial_profile(name: str, k: int) -> dict:
    """The same measure for a freshly initialised network at the demo's widths."""
    import visprior
    from visprior.seg.demo import DEMO_MODEL_SIZES

    kwargs = {**DEMO_MODEL_SIZES[name], "kernel_size": k}
    return kernel_profile(visprior.get_model(name, out_channels=10, **kwargs).state_dict())


def upkerned_profile(checkpoint: Path, k: int) -> dict:
    """The measure for the start UpKern gives a BFR k network from ``checkpoint``."""
    from visprior.checkpoint_io import load_checkpoint
    from visprior.nets.build import ModelSpec
    from visprior.nets.upkern import upkern_state_dict

    state = load_checkpoint(checkpoint)
    spec = ModelSpec.from_dict(state["model"])
    model = ModelSpec(spec.name, {**spec.kwargs, "kernel_size": k}).build()
    loaded, _ = upkern_state_dict(state["state_dict"], model.state_dict())
    model.load_state_dict(loaded, strict=False)
    return kernel_profile(model.state_dict())


def profile_table(scaling: dict) -> list[str]:
    """Share of the kernel energy outside the central 7^3, at initialisation and trained."""
    rows = [r for r in _good(scaling["rows"]) if r.get("kernel_profile") and r["k"] > 7]
    if not rows:
        return []
    lines = [
        "Share of the depth-wise kernels' energy (sum of squared taps of the kernel convolved "
        "with, W * M for BFR) outside their central 7^3 taps, mean over the 8 encoder layers, "
        "and mean |tap| on the outermost shell over the centre tap's:",
        "",
        "| k | kernel | outside 7^3 at init | outside 7^3 trained | edge / centre trained |",
        "|---|---|---|---|---|",
    ]
    for k in scaling["settings"]["kernels"]:
        for kind in ALL_KINDS:
            cell = [r for r in rows if r["k"] == k and r["kind"] == kind]
            if not cell:
                continue
            trained = [r["kernel_profile"]["outside_core"] for r in cell]
            ratio = [
                r["kernel_profile"]["mean_abs_by_shell"][-1]
                / r["kernel_profile"]["mean_abs_by_shell"][0]
                for r in cell
            ]
            lines.append(
                f"| {k} | {kind} | {cell[0]['initial_profile']['outside_core']:.3f} | "
                f"{mean_sd(trained)} | {mean_sd(ratio)} |"
            )
    return [*lines, ""]


def kernel_profile(state_dict: dict, core: int = 7) -> dict:
    """Where the trained depth-wise kernels keep their energy: the share of each kernel's
    squared sum outside its central ``core``^3 taps (mean over layers), and the mean |tap| by
    distance to the centre (Chebyshev shells, over every layer and channel), both for the
    kernels the network convolves with (W * M for BFR)."""
    import torch

    shares, shells = [], {}
    for key, weight in state_dict.items():
        if not key.endswith("dwconv.weight") or weight.ndim != 5:
            continue
        kernel = weight.double()
        frequency_map = state_dict.get(key[: -len("weight")] + "frequency_map")
        if frequency_map is not None:
            kernel = kernel * frequency_map.double()
        k = kernel.shape[-1]
        offsets = torch.arange(k) - k // 2
        grid = torch.meshgrid(offsets, offsets, offsets, indexing="ij")
        distance = torch.stack([g.abs() for g in grid]).amax(0)
        energy = kernel.square().sum(dim=(0, 1))
        shares.append(float(energy[distance > core // 2].sum() / energy.sum()))
        magnitude = kernel.abs().mean(dim=(0, 1))
        for d in range(k // 2 + 1):
            shells.setdefault(d, []).append(float(magnitude[distance == d].mean()))
    return {
        "core": core,
        "outside_core": statistics.mean(shares) if shares else None,
        "mean_abs_by_shell": [statistics.mean(shells[d]) for d in sorted(shells)],
    }


def summary(scaling: dict) -> list[str]:
    """The paired differences of mean Dice, BFR minus plain and UpKern minus BFR."""
    compared = {
        f"k = {k}, {kind} minus {baseline}": mean
        for kind, baseline in (("BFR", "plain"), (UPKERN, "BFR"))
        for k, mean, _ in paired_differences(scaling, kind, baseline)
    }
    return difference_table(compared, "mean Dice") if compared else []
