"""``visprior simplify measure`` and ``visprior simplify shrink``.

``measure`` runs the redundancy measure on a trained network over probe images and writes the
table (``redundancy.json``, ``redundancy.csv``) and the figure (``redundancy.png``).

``shrink`` takes a trained CXR classifier run and repeats, round by round: measure on probes
from the run's training part, cut the redundant blocks and kernels, fine-tune the cut network
on the same training part (the run's own recipe, fewer epochs), score it. A round is kept when
its validation AUC stays within ``auc_tolerance`` of the original network's. A round cuts at
most ``max_cut`` of any layer's kernels (the most redundant), so the network shrinks in steps
it can recover from; a round that loses too much AUC is discarded and tried again from the
last kept network with half the cut, down to ``min_cut``. The loop stops there, when the
measure finds nothing left to cut, when the parameter target is met, or when the rounds run
out. The original and the final network are timed again at the end, taking turns, for the
speed-up.

With ``target_parameters`` the rounds follow a size schedule instead: equal factors of at most
``max_step`` from the network's size to the target, through every size in ``waypoints``, and
each round cuts to its size by ``criterion`` (:mod:`visprior.simplify.criteria`): the
measure's ranking (continued past its threshold), global L1 magnitude or Taylor importance,
one ratio for every layer, or the measure's counts with random channels. Every criterion then
shares the rounds, the fine-tuning and the coupled-group rules, so at each size only the
choice of channels differs; ``auc_tolerance = inf`` keeps every round, for comparisons at equal
size. Each round also records what the measure's own rule would have cut (``natural_cut``)
and the flagged channels its residual-stream rule and caps would have kept.

Each round is a full run folder (``round_<n>/``: checkpoints, curves, the round's redundancy
report) that ``cxr evaluate`` and ``cxr predict`` take like any other; ``shrink.json`` /
``shrink.csv`` give parameters, FLOPs, CPU time per image and validation / test AUC of every
round.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from visprior.checkpoint_io import load_checkpoint
from visprior.cxr.config import CXRTrainConfig
from visprior.cxr.data import read_egd_cxr
from visprior.cxr.dataset import load_cxr_dataset, load_image
from visprior.cxr.predict import collect_images, load_classifier
from visprior.cxr.train import train_cxr
from visprior.engine.checkpoint import find_checkpoint
from visprior.engine.distributed import barrier, init_distributed, is_main_process
from visprior.fileio import atomic_path, write_csv_rows
from visprior.metrics.classification import classification_metrics
from visprior.nets.build import build_model_from_checkpoint
from visprior.simplify.criteria import CRITERIA, cut_to_size, taylor_gradients
from visprior.simplify.plot import save_redundancy_png
from visprior.simplify.prune import (
    ModelCost,
    model_cost,
    paired_milliseconds,
    parameter_count,
    prune_redundant,
    reinitialise,
)
from visprior.simplify.redundancy import (
    DEFAULT_THRESHOLD,
    RedundancyReport,
    UnsupportedNetworkError,
    check_supported,
    measure_redundancy,
)

__all__ = [
    "RoundResult",
    "ShrinkSettings",
    "data_images",
    "format_rounds",
    "load_network",
    "measure_checkpoint",
    "probe_images",
    "round_sizes",
    "shrink_run",
    "write_report",
]


@dataclass
class ShrinkSettings:
    threshold: float = DEFAULT_THRESHOLD
    probes: int = 64
    min_channels: int = 4
    max_cut: float = 0.5  # largest share of a layer's kernels cut in one round
    min_cut: float = 0.125  # a round that loses AUC is retried with half the cut, down to this
    max_rounds: int = 8
    epochs: int = 12  # fine-tuning epochs per round
    reinit: bool = False  # train each cut network from fresh weights instead of the kept ones
    lr: float = 0.0  # 0: the run's own learning rate
    auc_tolerance: float = 0.01
    target_parameters: int = 0  # stop once at or under this; 0: no target
    # with a target: sizes every criterion passes through on the way, each hit exactly
    waypoints: tuple[int, ...] = ()
    max_step: float = 3.0  # with a target: largest factor by which one round shrinks the net
    criterion: str = "redundancy"  # which channels go: one of criteria.CRITERIA
    seed: int | None = None  # fine-tuning and the random criterion; None: the run's seed
    device: str = "auto"

    def check(self) -> None:
        """Raise ValueError naming the setting that cannot work."""
        if self.criterion not in CRITERIA:
            raise ValueError(
                f"unknown --criterion {self.criterion!r}; choose one of {', '.join(CRITERIA)}"
            )
        if self.criterion != "redundancy" and not self.target_parameters:
            raise ValueError(
                f"--criterion {self.criterion} has no stopping point of its own: give "
                "--target-params"
            )
        if self.waypoints and not self.target_parameters:
            raise ValueError("--waypoints need --target-params")
        sizes = [*self.waypoints, self.target_parameters]
        if any(b >= a for a, b in itertools.pairwise(sizes)) or min(sizes) < 0:
            raise ValueError(
                f"--waypoints must fall, each above --target-params; got {list(sizes)}"
            )
        if self.max_step <= 1:
            raise ValueError(f"--max-step must be over 1, got {self.max_step}")
        if not self.auc_tolerance >= 0:
            raise ValueError(
                f"--auc-tolerance must be >= 0 (inf: keep every round), got {self.auc_tolerance}"
            )


@dataclass
class RoundResult:
    round: int
    parameters: int
    flops: int
    ms_per_image: float
    val_auc: float
    test_auc: float
    blocks_removed: int
    channels_removed: int
    redundant_share: float  # of the convolution parameters, measured before the round's cut
    max_cut: float
    kept: bool
    checkpoint: str
    target: int = 0  # the round's size target (0: the measure's own cut)
    # the measure's own cut of this round's network (where the criterion measures): channels
    # it would cut, and flagged ones it would keep by the residual-stream rule / the caps
    natural_cut: int = 0
    stream_vetoed: int = 0
    capped: int = 0


def load_network(checkpoint: str | os.PathLike) -> tuple[nn.Module, dict[str, Any], Path]:
    """A visprior checkpoint's network on the CPU (eval mode), its checkpoint dict and path.

    Raises:
        UnsupportedNetworkError: a network outside 2-D CNNs; the message names the layer types.
    """
    path = find_checkpoint(checkpoint)
    state = load_checkpoint(path)
    model = build_model_from_checkpoint(state, source=str(path)).eval()
    name = state.get("model", {}).get("name", "network")
    check_supported(model, source=f"{path} ({name})")
    return model, state, path


def probe_images(paths: Sequence[str | os.PathLike], count: int, size: int) -> torch.Tensor:
    """``count`` images spread evenly over ``paths`` (in their order), as (N, 1, size, size)."""
    if not paths:
        raise ValueError("no probe images")
    return torch.stack([load_image(paths[i], size) for i in _spread(len(paths), count)])


def _spread(total: int, count: int) -> np.ndarray:
    """``count`` positions spread evenly over ``range(total)``, in order."""
    return np.unique(np.linspace(0, total - 1, min(count, total)).round().astype(int))


def data_images(data: str | os.PathLike) -> list[Path]:
    """The images of ``data``: an EGD-CXR-layout folder (its cases' images), or image files and
    folders of them."""
    folder = Path(data)
    if (folder / "master_sheet.csv").is_file():
        return [case.image for case in read_egd_cxr(folder).cases]
    return collect_images([folder])


def write_report(report: RedundancyReport, out_dir: str | os.PathLike) -> Path:
    """``redundancy.json`` (per kernel), ``redundancy.csv`` (per layer), ``redundancy.png``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "redundancy.json") as temporary:
        temporary.write_text(json.dumps(report.to_dict(), indent=1))
    rows = [
        {
            "layer": layer.name,
            "kernels": layer.kernels,
            "redundant": int(layer.redundant.sum()),
            "share": round(layer.share, 4),
            "median_score": round(float(np.median(layer.scores)), 4),
            "parameters": layer.parameters,
        }
        for layer in report.layers
    ]
    write_csv_rows(out_dir / "redundancy.csv", rows)
    return save_redundancy_png(report, out_dir / "redundancy.png")


def measure_checkpoint(
    checkpoint: str | os.PathLike,
    data: str | os.PathLike,
    output: str | os.PathLike | None = None,
    probes: int = ShrinkSettings.probes,
    threshold: float = DEFAULT_THRESHOLD,
    overwrite: bool = False,
) -> tuple[RedundancyReport, Path]:
    """``visprior simplify measure``: the redundancy of a trained CXR network's layers on
    ``probes`` images of ``data``, written to ``output`` (default ``<run>/redundancy``) by
    :func:`write_report`; returns the report and the folder."""
    model, state, path = load_network(checkpoint)
    if "image_size" not in state:
        raise ValueError(f"{path}: no image_size in this checkpoint; train it with visprior cxr")
    output = Path(output) if output is not None else path.parent.parent / "redundancy"
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise FileExistsError(
            f"{output} already holds a report; pass --force or another --output "
            "(nothing was overwritten)"
        )
    images = probe_images(data_images(data), probes, int(state["image_size"]))
    report = measure_redundancy(model, images, threshold)
    write_report(report, output)
    return report, output


def _refuse_used_folder(folder: Path, what: str) -> None:
    if folder.exists() and any(folder.iterdir()):
        raise FileExistsError(
            f"{folder} already holds files; choose another {what} (nothing was overwritten)"
        )


@torch.no_grad()
def _macro_auc(model: nn.Module, images: torch.Tensor, labels: np.ndarray, classes) -> float:
    model.eval()
    probabilities = [model(batch)[0].float().softmax(1).numpy() for batch in images.split(16)]
    return float(classification_metrics(np.concatenate(probabilities), labels, classes)["auc"])


def shrink_run(
    run_dir: str | os.PathLike, output: str | os.PathLike, settings: ShrinkSettings
) -> list[RoundResult]:
    """Shrink the CXR classifier trained in ``run_dir``; rounds go to ``output/round_<n>``.

    Returns one :class:`RoundResult` per round, round 0 being the original network.

    Raises:
        FileExistsError: ``output`` already holds files.
        UnsupportedNetworkError: the run's network is not a 2-D CNN classifier.
    """
    run_dir, output = Path(run_dir), Path(output)
    settings.check()
    init_distributed(settings.device)  # under torchrun: join the job before anything else
    _refuse_used_folder(output, "output folder")
    barrier()  # every process has looked before the first one writes
    classifier = load_classifier(run_dir)
    if classifier.predicts_saliency:
        raise UnsupportedNetworkError(
            f"{classifier.source}: shrink takes CAM classifiers; MT-UNet is not supported"
        )
    model = classifier.model.cpu()
    check_supported(model, source=classifier.source)
    parts = _split_parts(run_dir, classifier.config)
    size = classifier.image_size
    probes = probe_images([c.image for c in parts["train"]], settings.probes, size)
    labels = [parts["train"][i].label for i in _spread(len(parts["train"]), settings.probes)]
    scored = {
        name: (
            probe_images([c.image for c in cases], len(cases), size),
            np.array([c.label for c in cases]),
        )
        for name, cases in parts.items()
        if name != "train"
    }
    seed = classifier.config.seed if settings.seed is None else settings.seed
    job = _ShrinkJob(
        run_dir,
        output,
        settings,
        dataclasses.replace(classifier.config, seed=seed),
        probes,
        torch.as_tensor(labels, dtype=torch.long),
        _RoundScorer(probes[:1], scored),
    )
    sizes = []
    if settings.target_parameters:
        sizes = round_sizes(parameter_count(model), settings)
        if len(sizes) > settings.max_rounds:
            raise ValueError(
                f"reaching {settings.target_parameters:,} parameters in steps of at most "
                f"{settings.max_step:g}x (--max-step) takes {len(sizes)} rounds; --rounds is "
                f"{settings.max_rounds}"
            )

    output.mkdir(parents=True, exist_ok=True)
    first = job.scorer.score(model, 0, _NO_CUT, 0.0, 0.0, classifier.source, classifier.classes)
    first.kept = True
    rounds = [first]
    original, baseline, max_cut = model, first.val_auc, settings.max_cut
    for number in range(1, settings.max_rounds + 1):
        kept_rounds = sum(r.kept for r in rounds) - 1
        target = sizes[min(kept_rounds, len(sizes) - 1)] if sizes else 0
        attempt = job.try_round(model, number, max_cut, classifier.classes, target)
        if attempt is None:  # nothing left to cut
            break
        outcome, trained = attempt
        outcome.kept = outcome.val_auc >= baseline - settings.auc_tolerance
        rounds.append(outcome)
        _save_rounds(rounds, output, settings)
        if outcome.kept:
            model = trained
            if settings.target_parameters and outcome.parameters <= settings.target_parameters:
                break
        else:
            max_cut /= 2  # too much at once: retry from the last kept network, more gently
            if max_cut < settings.min_cut:
                break
    final = [r for r in rounds if r.kept][-1]
    if final.round:  # the original and the final network timed again, taking turns
        rounds[0].ms_per_image, final.ms_per_image = (
            round(ms, 3) for ms in paired_milliseconds([original, model], probes[:1], repeats=30)
        )
    _save_rounds(rounds, output, settings)
    return rounds


def round_sizes(start: int, settings: ShrinkSettings) -> list[int]:
    """Each round's size target on the way from ``start`` parameters to the target: equal
    factors of at most ``max_step`` between the waypoints, every waypoint hit exactly."""
    sizes, current = [], start
    for stop in [*settings.waypoints, settings.target_parameters]:
        if stop >= current:
            continue
        steps = math.ceil(math.log(current / stop) / math.log(settings.max_step) - 1e-9)
        sizes += [round(current * (stop / current) ** (i / steps)) for i in range(1, steps)]
        sizes.append(stop)
        current = stop
    return sizes


_NO_CUT = {"blocks_removed": 0, "channels_removed": 0}


def _split_parts(run_dir: Path, config: CXRTrainConfig) -> dict[str, list]:
    """The run's training, validation and test cases (the non-empty parts of its split)."""
    split = json.loads((run_dir / "split.json").read_text())
    by_id = {case.case_id: case for case in load_cxr_dataset(config).cases}
    missing = [i for ids in split.values() for i in ids if i not in by_id]
    if missing:
        raise ValueError(f"{config.dataset}: case(s) of {run_dir}'s split not found: {missing[:5]}")
    names = [name for name in ("train", "val", "test") if split[name]]
    return {name: [by_id[i] for i in split[name]] for name in names}


@dataclass
class _RoundScorer:
    """A round's cost (on one example image) and AUC on each scored part of the split."""

    example: torch.Tensor
    scored: dict[str, tuple[torch.Tensor, np.ndarray]]  # part -> (images, labels)

    def score(
        self,
        net: nn.Module,
        number: int,
        cut: dict[str, int],
        redundant_share: float,
        max_cut: float,
        checkpoint: str,
        classes: Sequence[str],
    ) -> RoundResult:
        cost: ModelCost = model_cost(net, self.example)
        aucs = {name: _macro_auc(net, *data, classes) for name, data in self.scored.items()}
        return RoundResult(
            number,
            cost.parameters,
            cost.flops,
            round(cost.milliseconds, 3),
            aucs.get("val", float("nan")),
            aucs.get("test", float("nan")),
            cut["blocks_removed"],
            cut["channels_removed"],
            redundant_share,
            max_cut,
            kept=False,
            checkpoint=checkpoint,
        )


@dataclass
class _ShrinkJob:
    """What every round of one shrink shares: where it reads and writes, how it trains."""

    run_dir: Path
    output: Path
    settings: ShrinkSettings
    config: CXRTrainConfig
    probes: torch.Tensor
    probe_labels: torch.Tensor
    scorer: _RoundScorer

    def try_round(
        self, model: nn.Module, number: int, max_cut: float, classes: Sequence[str], target: int
    ) -> tuple[RoundResult, nn.Module] | None:
        """Cut a copy of ``model`` (to ``target`` parameters by the criterion, or by the
        measure's own verdict where ``target`` is 0), fine-tune it in ``round_<number>/`` and
        score it; ``None`` when nothing is left to cut. Whether it is kept is the caller's."""
        folder = self.output / f"round_{number}"
        settings, example = self.settings, self.scorer.example
        report = None
        if settings.criterion in ("redundancy", "random"):
            report = measure_redundancy(model, self.probes, settings.threshold)  # same everywhere
            if is_main_process():
                write_report(report, folder / "redundancy")
        candidate = copy.deepcopy(model)
        natural = dict(_NO_CUT)
        if report is not None:
            measured = copy.deepcopy(model) if target else candidate
            natural = prune_redundant(
                measured, report, example, settings.min_channels, max_cut=max_cut
            )
        cut = natural
        if target:
            if settings.criterion == "taylor":
                taylor_gradients(candidate, self.probes, self.probe_labels)
            done = cut_to_size(
                candidate,
                settings.criterion,
                target,
                example,
                report=report,
                min_channels=settings.min_channels,
                max_cut=max_cut,
                seed=self.config.seed + number,
            )
            cut = {"blocks_removed": done.blocks_removed, "channels_removed": done.channels_removed}
        if not cut["blocks_removed"] and not cut["channels_removed"]:
            if is_main_process():
                shutil.rmtree(folder, ignore_errors=True)
            return None
        if settings.reinit:
            reinitialise(candidate, seed=self.config.seed)
        if is_main_process():
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy(self.run_dir / "split.json", folder / "split.json")
        barrier()
        round_config = dataclasses.replace(
            self.config,
            output=str(folder),
            epochs=self.settings.epochs,
            lr=self.settings.lr or self.config.lr,
            cache_dir=self.config.cache_dir or str(self.run_dir / "cache"),
            device=self.settings.device,
            weights="",
        )
        train_cxr(round_config, model=candidate)
        trained = load_classifier(folder).model.cpu()
        checkpoint = str(folder / "checkpoints" / "best.pt")
        share = report.redundant_parameters if report is not None else 0.0
        result = self.scorer.score(trained, number, cut, share, max_cut, checkpoint, classes)
        result.target = target
        result.natural_cut = natural["channels_removed"] + natural["blocks_removed"]
        result.stream_vetoed = natural.get("stream_vetoed", 0)
        result.capped = natural.get("capped", 0)
        return result, trained


def _outcome(rounds: Sequence[RoundResult]) -> tuple[RoundResult, float, float]:
    """The last kept round, the share of parameters it removed and its speed-up."""
    final = [r for r in rounds if r.kept][-1]
    removed = 1 - final.parameters / rounds[0].parameters
    return final, removed, rounds[0].ms_per_image / final.ms_per_image


def _save_rounds(rounds: list[RoundResult], output: Path, settings: ShrinkSettings) -> None:
    if not is_main_process():
        return
    final, removed, speedup = _outcome(rounds)
    summary = {
        "settings": dataclasses.asdict(settings),
        "rounds": [dataclasses.asdict(r) for r in rounds],
        "final": dataclasses.asdict(final),
        "parameters_removed": removed,
        "speedup": speedup,
    }
    with atomic_path(output / "shrink.json") as temporary:
        temporary.write_text(json.dumps(summary, indent=1))
    write_csv_rows(output / "shrink.csv", [dataclasses.asdict(r) for r in rounds])


def format_rounds(rounds: Sequence[RoundResult]) -> str:
    lines = [
        "round  parameters        MFLOPs  ms/image  val AUC  test AUC  blocks cut  kernels cut"
        "  kept",
    ]
    for r in rounds:
        lines.append(
            f"{r.round:5d}  {r.parameters:10d}  {r.flops / 1e6:12.1f}  {r.ms_per_image:8.2f}  "
            f"{r.val_auc:7.3f}  {r.test_auc:8.3f}  {r.blocks_removed:10d}  "
            f"{r.channels_removed:11d}  {'yes' if r.kept else 'no'}"
        )
    final, removed, speedup = _outcome(rounds)
    lines.append(
        f"final: round {final.round}, {removed:.2%} of the parameters removed, {speedup:.1f}x "
        f"faster on this CPU; test AUC {rounds[0].test_auc:.3f} -> {final.test_auc:.3f} "
        f"({final.checkpoint})"
    )
    return "\n".join(lines)
