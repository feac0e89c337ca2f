"""Study (b)'s RepUX-Net / UX-Net step ratio: the profile split and the paired ratio, on
hand-made cases whose answer is known."""

from __future__ import annotations

import math

import pytest
import torch
from benchmarks.speed import autotune_cost, step_ratio
from torch.profiler import ProfilerActivity, profile

from visprior.layers.depthwise import depthwise_conv


@pytest.mark.parametrize(
    ("name", "shapes", "expected"),
    [
        # forward: (input, weight, bias)
        ("aten::mkldnn_convolution", [[1, 48, 32, 32, 32], [48, 1, 7, 7, 7], [48]], True),
        # the stem: a 48 x 1 x 7^3 weight on a 1-channel input is a dense conv
        ("aten::mkldnn_convolution", [[1, 1, 64, 64, 64], [48, 1, 7, 7, 7], [48]], False),
        ("aten::mkldnn_convolution", [[1, 48, 32, 32, 32], [48, 48, 3, 3, 3], []], False),
        # backward: (grad_output, input, weight, ...)
        (
            "aten::convolution_backward",
            [[1, 96, 8, 8, 8], [1, 96, 8, 8, 8], [96, 1, 15, 15, 15]],
            True,
        ),
        (
            "aten::convolution_backward",
            [[1, 48, 8, 8, 8], [1, 96, 8, 8, 8], [48, 96, 1, 1, 1]],
            False,
        ),
        ("aten::convolution_backward", [], False),  # no shapes recorded
    ],
)
def test_depthwise_convs_are_told_by_their_weight_and_input(name, shapes, expected):
    assert step_ratio.is_depthwise(name, shapes) is expected


def test_the_split_puts_each_path_in_its_category_and_loses_no_time():
    torch.manual_seed(0)
    x = torch.randn(1, 4, 12, 12, 12, requires_grad=True)
    depthwise = torch.randn(4, 1, 5, 5, 5, requires_grad=True)
    dense = torch.randn(4, 4, 3, 3, 3, requires_grad=True)
    norm = torch.nn.InstanceNorm3d(4)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        y = depthwise_conv(x, depthwise, None, algorithm="fft")
        y = depthwise_conv(y, depthwise, None, algorithm="direct")
        y = torch.nn.functional.conv3d(y, dense, padding=1)
        norm(y).square().sum().backward()
    split = step_ratio.split_profile(prof.events())
    assert set(split) == set(step_ratio.CATEGORIES)
    for category in (
        "depth-wise conv, FFT path",
        "depth-wise conv, direct",
        "other convs",
        "norms",
    ):
        assert split[category] > 0, category
    assert split["optimizer"] == 0
    total = sum(event.self_cpu_time_total for event in prof.events()) / 1e6
    assert sum(split.values()) == pytest.approx(total, rel=1e-9)


def test_without_the_fft_path_its_category_stays_empty():
    x = torch.randn(1, 4, 6, 6, 6, requires_grad=True)
    weight = torch.randn(4, 1, 3, 3, 3, requires_grad=True)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        depthwise_conv(x, weight, None, algorithm="direct").sum().backward()
    split = step_ratio.split_profile(prof.events())
    assert split["depth-wise conv, FFT path"] == 0 and split["depth-wise conv, direct"] > 0


def test_the_ratio_is_the_geometric_mean_over_pairs_with_an_interval_on_log_times():
    # per pair 2x, 2x and 0.5x: geometric mean 2^(1/3), and the interval holds 1
    result = step_ratio.ratio({"parts": {"repuxnet": [2.0, 4.0, 1.0], "uxnet": [1.0, 2.0, 2.0]}})
    assert result["pairs"] == 3
    assert result["ratio"] == pytest.approx(2 ** (1 / 3), rel=1e-12)
    assert result["low"] < 1 < result["high"]
    assert result["verdict"] == "not separated"
    assert result["repuxnet_s"] == 2.0 and result["uxnet_s"] == 2.0


def test_a_steady_gap_is_called_and_a_missing_network_gives_no_ratio():
    slower = step_ratio.ratio({"parts": {"repuxnet": [1.1, 2.2, 3.3], "uxnet": [1.0, 2.0, 3.0]}})
    assert slower["ratio"] == pytest.approx(1.1) and slower["verdict"] == "RepUX-Net slower"
    one = step_ratio.ratio({"parts": {"repuxnet": [1.0], "uxnet": [2.0]}})
    assert one["ratio"] == pytest.approx(0.5) and math.isnan(one["low"])
    assert step_ratio.ratio({"parts": {"repuxnet": [1.0]}}) is None
    assert step_ratio.ratio({"error": "Traceback ..."}) is None


def _die_of_a_signal():
    """A builder whose process dies as a segfaulting kernel would kill it."""
    import os
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


def test_a_measuring_process_that_dies_gives_an_error_row_instead_of_a_hang():
    from benchmarks.timing import measure_in_subprocess

    measured = measure_in_subprocess(_die_of_a_signal, repeats=1)
    assert math.isnan(measured.seconds)
    assert measured.error == "the measuring process died (exit code -9)"


def test_the_one_off_cost_is_the_first_steps_difference():
    def arm(first, later, cases):
        parts = {
            "first step": [first],
            "later steps": [later],
            "measured cases": [cases],
            "picks unlike the rule": [1.0 if cases else 0.0],
        }
        return {"parts": parts, "error": None}

    row = {
        "case": "demo",
        "precision": "bf16",
        "rule": arm(1.5, 0.5, 0),
        "measured": arm(4.0, 0.45, 3),
    }
    (line,) = [x for x in autotune_cost.table([row]) if x.startswith("| demo")]
    assert line == "| demo | bf16 autocast | 1.50 | 4.00 | +2.50 | 0.500 | 0.450 | 3 | 1 |"
    broken = {**row, "measured": {"parts": {}, "error": "Traceback ...\nValueError: tiny"}}
    (line,) = [x for x in autotune_cost.table([broken]) if x.startswith("| demo")]
    assert "ValueError: tiny" in line and "Traceback" not in line
