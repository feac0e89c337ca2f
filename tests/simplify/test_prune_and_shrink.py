"""Cutting networks by the measure, rebuilding them from checkpoints, and the CLI end to end."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from torch import nn

from tests.tolerances import assert_close_to_scale
from visprior.cli import main
from visprior.cxr.config import CXRTrainConfig
from visprior.cxr.evaluate import load_classifier
from visprior.cxr.synthetic import write_synthetic_egd
from visprior.cxr.train import train_cxr
from visprior.engine.checkpoint import save_checkpoint
from visprior.nets.registry import get_model
from visprior.simplify.prune import fit_to_state_dict, model_cost, prune_redundant
from visprior.simplify.redundancy import (
    BlockRedundancy,
    LayerRedundancy,
    RedundancyReport,
    UnsupportedNetworkError,
    measure_redundancy,
)
from visprior.simplify.shrink import load_network


def _flags(layer: str, count: int, redundant: list[int]) -> LayerRedundancy:
    flags = np.zeros(count, bool)
    flags[redundant] = True
    scores = np.where(flags, 0.99, 0.5)
    return LayerRedundancy(layer, scores, flags, np.zeros(count, bool), 0, (1, 1))


def test_cutting_unused_channels_of_the_last_stage_leaves_the_output_unchanged():
    """The CAM head loses the cut channels' weights and rescales by its new channel count:
    channels that feed nothing go without changing the output."""
    model = get_model("ggcam_resnet18", num_classes=3).eval()
    stream = ["backbone.7.0.conv2", "backbone.7.0.downsample.0", "backbone.7.1.conv2"]
    gone = list(range(0, 512, 2))
    with torch.no_grad():
        # the cut channels reach nothing: not the CAMs, not the next block's first conv
        model.head.weight[:, gone] = 0.0
        model.backbone[7][1].conv1.weight[:, gone] = 0.0
    report = RedundancyReport([_flags(name, 512, gone) for name in stream], [], 0.95, 4)
    images = torch.rand(2, 1, 64, 64)
    before = model(images)
    cut = prune_redundant(model, report, images[:1])
    after = model(images)
    assert cut == {"blocks_removed": 0, "channels_removed": 256, "stream_vetoed": 0, "capped": 0}
    assert model.head.weight.shape == (3, 256) and model.head.in_channels == 256
    assert model.backbone[7][1].conv2.out_channels == 256
    assert_close_to_scale(after.cams, before.cams, rtol=1e-4)  # values of about 1e-2
    assert_close_to_scale(after.logits, before.logits, rtol=1e-4)


def test_a_stream_channel_needs_a_majority_and_groups_keep_min_channels():
    model = get_model("ggcam_resnet18", num_classes=3).eval()
    stream = ["backbone.7.0.conv2", "backbone.7.0.downsample.0", "backbone.7.1.conv2"]
    # channels 0-99 flagged by one of three writers only; 100-509 by all three
    layers = [_flags(stream[0], 512, list(range(510)))]
    layers += [_flags(name, 512, list(range(100, 510))) for name in stream[1:]]
    report = RedundancyReport(layers, [], 0.95, 4)
    cut = prune_redundant(model, report, torch.rand(1, 1, 64, 64), min_channels=120)
    # majority: 410 channels redundant, but the group keeps 120 -> 392 cut
    assert model.backbone[7][1].conv2.out_channels == 120
    # the stream rule kept 100 channels, the minimum 18
    assert (cut["stream_vetoed"], cut["capped"]) == (100, 18)


def test_redundant_blocks_become_identity_and_the_checkpoint_rebuilds(tmp_path):
    model = get_model("ggcam_resnet18", num_classes=3).eval()
    report = RedundancyReport(
        [_flags("backbone.5.1.conv1", 128, list(range(100)))],
        [BlockRedundancy("backbone.6.1", 0.99, True, True, 0)],
        0.95,
        4,
    )
    prune_redundant(model, report, torch.rand(1, 1, 64, 64))
    assert isinstance(model.backbone[6][1], nn.Identity)
    assert model.backbone[5][1].conv1.out_channels == 28
    rebuilt = fit_to_state_dict(get_model("ggcam_resnet18", num_classes=3), model.state_dict())
    images = torch.rand(2, 1, 64, 64)
    torch.testing.assert_close(rebuilt.eval()(images).logits, model(images).logits)
    assert isinstance(rebuilt.backbone[6][1], nn.Identity)


def test_measure_and_cut_a_real_network_smaller():
    model = get_model("ggcam_resnet18", num_classes=3).eval()
    probes = torch.rand(8, 1, 64, 64)
    report = measure_redundancy(model, probes)
    before = model_cost(model, probes[:1], repeats=2)
    prune_redundant(model, report, probes[:1])
    after = model_cost(model, probes[:1], repeats=2)
    assert after.parameters < before.parameters and after.flops < before.flops
    assert model(probes).logits.shape == (8, 3)


def test_model_cost_counts_a_known_convolution():
    conv = nn.Conv2d(1, 4, 3, padding=1, bias=False)
    cost = model_cost(conv, torch.rand(1, 1, 8, 8), repeats=2)
    assert cost.parameters == 36
    assert cost.flops == 2 * 4 * 9 * 64  # a multiply and an add per weight and output pixel
    assert cost.milliseconds > 0


def test_a_segmentation_checkpoint_is_refused_with_its_layer_types(tmp_path):
    net = get_model("unet", in_channels=1, out_channels=2)
    path = save_checkpoint(
        tmp_path / "seg.pt",
        {
            "state_dict": net.state_dict(),
            "model": {"name": "unet", "kwargs": {"in_channels": 1, "out_channels": 2}},
        },
    )
    with pytest.raises(UnsupportedNetworkError, match=r"seg\.pt \(unet\).*Conv3d"):
        load_network(path)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shrink")
    with pytest.warns(UserWarning, match="SYNTHETIC"):
        data = write_synthetic_egd(folder / "egd", cases_per_class=8, size=64, seed=0)
    config = CXRTrainConfig(
        dataset=str(data),
        output=str(folder / "run"),
        model="ggcam_resnet18",
        image_size=64,
        epochs=2,
        batch_size=8,
        lr=1e-3,
        use_gaze=False,
    )
    train_cxr(config)
    return folder


@pytest.mark.slow
def test_cli_measure_then_shrink(trained_run, capsys):
    run, data = trained_run / "run", trained_run / "egd"
    assert main(["simplify", "measure", str(run), str(data), "--probes", "8"]) == 0
    printed = capsys.readouterr().out
    assert "backbone.7.1.conv2" in printed and "residual block" in printed
    report = json.loads((run / "redundancy" / "redundancy.json").read_text())
    assert report["probes"] == 8 and len(report["layers"]) == 20
    assert (run / "redundancy" / "redundancy.png").stat().st_size > 10_000
    # a second report would overwrite the first: refused
    assert main(["simplify", "measure", str(run), str(data)]) == 2
    assert "already holds a report" in capsys.readouterr().err

    out = trained_run / "small"
    args = ["simplify", "shrink", str(run), "-o", str(out), "--rounds", "2", "--epochs", "1"]
    assert main([*args, "--probes", "8", "--auc-tolerance", "1"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "shrink.json").read_text())
    rounds = summary["rounds"]
    assert rounds[0]["round"] == 0 and len(rounds) >= 2
    assert rounds[1]["parameters"] < rounds[0]["parameters"]
    assert summary["final"]["round"] == rounds[-1]["round"] and "final: round" in printed
    # a round is an ordinary run folder: the CXR commands load its cut network
    classifier = load_classifier(out / "round_1")
    assert sum(p.numel() for p in classifier.model.parameters()) == rounds[1]["parameters"]
    assert json.loads((out / "round_1" / "split.json").read_text()) == json.loads(
        (run / "split.json").read_text()
    )
    # the same output again is refused, and nothing in it changes
    before = (out / "shrink.json").read_bytes()
    assert main(args) == 2
    assert "already holds files" in capsys.readouterr().err
    assert (out / "shrink.json").read_bytes() == before


def test_a_round_that_loses_auc_is_dropped_and_retried_with_half_the_cut(
    trained_run, tmp_path, monkeypatch
):
    from visprior.simplify import shrink

    # validation and test AUC of round 0, then of rounds 1, 2 and 3
    scores = iter([0.9, 0.9, 0.5, 0.5, 0.9, 0.9, 0.5, 0.5])
    monkeypatch.setattr(shrink, "_macro_auc", lambda *args: next(scores))
    settings = shrink.ShrinkSettings(probes=8, max_rounds=3, epochs=1, auc_tolerance=0.01)
    rounds = shrink.shrink_run(trained_run / "run", tmp_path / "out", settings)
    assert [r.kept for r in rounds] == [True, False, True, False]
    assert [r.max_cut for r in rounds[1:]] == [0.5, 0.25, 0.25]
    # round 2 starts again from the original network, with a gentler cut than round 1
    assert rounds[2].channels_removed < rounds[1].channels_removed
    assert rounds[1].parameters < rounds[2].parameters < rounds[0].parameters
    summary = json.loads((tmp_path / "out" / "shrink.json").read_text())
    assert summary["final"]["round"] == 2 and 0 < summary["parameters_removed"] < 1


def test_fit_to_state_dict_reports_tensors_that_do_not_fit():
    model = get_model("ggcam_resnet18", num_classes=3)
    state = copy.deepcopy(model.state_dict())
    state["head.bias"] = torch.zeros(5)
    with pytest.raises(RuntimeError, match="head.bias"):
        fit_to_state_dict(model, state)


def test_reinitialise_gives_fresh_seeded_weights_at_the_cut_widths():
    from visprior.simplify.prune import reinitialise

    model = get_model("ggcam_resnet18", num_classes=3)
    report = RedundancyReport([_flags("backbone.4.0.conv1", 64, list(range(40)))], [], 0.95, 4)
    prune_redundant(model, report, torch.rand(1, 1, 64, 64))
    before = copy.deepcopy(model.state_dict())
    first = copy.deepcopy(reinitialise(model, seed=3).state_dict())
    second = reinitialise(model, seed=3).state_dict()
    assert first["backbone.4.0.conv1.weight"].shape == (24, 64, 3, 3)
    assert not torch.equal(first["backbone.4.0.conv1.weight"], before["backbone.4.0.conv1.weight"])
    for key in first:
        torch.testing.assert_close(first[key], second[key])


@pytest.mark.slow
def test_cli_shrink_to_a_size_by_another_criterion(trained_run, capsys):
    run = trained_run / "run"
    out = trained_run / "by_magnitude"
    args = ["simplify", "shrink", str(run), "-o", str(out), "--epochs", "1", "--probes", "8"]
    sizes = ["--target-params", "2000000", "--waypoints", "5000000", "--max-step", "2"]
    options = ["--criterion", "magnitude", "--auc-tolerance", "inf", "--seed", "5"]
    assert main([*args, *sizes, *options]) == 0
    summary = json.loads((out / "shrink.json").read_text())
    rounds = summary["rounds"]
    assert summary["settings"]["criterion"] == "magnitude"
    assert "seed: 5\n" in (out / "round_1" / "config.yaml").read_text()  # the fine-tuning's
    # 11.2M -> 5M -> 2M, each in two equal steps of at most 2x; each round at or just under
    start = rounds[0]["parameters"]
    expected = [round((start * 5e6) ** 0.5), 5_000_000, round((5e6 * 2e6) ** 0.5), 2_000_000]
    assert [r["target"] for r in rounds[1:]] == expected
    for r in rounds[1:]:
        assert 0.97 * r["target"] <= r["parameters"] <= r["target"]
    assert all(r["kept"] for r in rounds)
    last = load_classifier(out / f"round_{rounds[-1]['round']}")
    assert sum(p.numel() for p in last.model.parameters()) == rounds[-1]["parameters"]
    assert not (out / "round_1" / "redundancy").exists()  # magnitude measures nothing

    # a criterion without a size to reach, and a schedule longer than the rounds, are refused
    capsys.readouterr()
    assert main([*args, "--criterion", "uniform"]) == 2
    assert "--criterion uniform has no stopping point" in capsys.readouterr().err
    longer = trained_run / "longer"
    tiny = ["--target-params", "10000", "--rounds", "2"]
    assert main(["simplify", "shrink", str(run), "-o", str(longer), *tiny]) == 2
    assert "takes 7 rounds; --rounds is 2" in capsys.readouterr().err
    assert not longer.exists()
