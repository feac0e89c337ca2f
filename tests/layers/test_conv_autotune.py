"""``algorithm="auto"`` measures the two paths near the rule's crossover and keeps the faster."""

from __future__ import annotations

import json
import time

import pytest
import torch

from tests.tolerances import assert_close_to_scale
from visprior.layers import conv_autotune, depthwise
from visprior.layers.conv_algorithm import choose_algorithm, conv_algorithm, estimated_cost_ratio
from visprior.layers.depthwise import depthwise_conv

# 13^3 at 12^3 for inference sits at the rule's crossover (cost ratio about 1); 21^3 at 48^3
# with a gradient is far on the FFT side (its direct backward takes minutes)
NEAR = ((12, 12, 12), 13, False)
FAR = ((48, 48, 48), 21, True)
RUN_PATH = depthwise._run_path  # the real paths, kept before any test patches them


@pytest.fixture(autouse=True)
def _fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(conv_autotune.CACHE_DIR_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv(conv_autotune.AUTOTUNE_ENV, "1")
    monkeypatch.delenv(conv_autotune.CACHE_ENV, raising=False)
    conv_autotune.clear_measurements()
    yield
    conv_autotune.clear_measurements()


class CountingRunner:
    """The real paths, counting the calls of each; ``delay`` slows a path down (seconds)."""

    def __init__(self, delay: dict[str, float] | None = None, fail: bool = False):
        self.calls = {"direct": 0, "fft": 0}
        self.delay = delay or {}
        self.fail = fail

    def __call__(self, algorithm, x, weight, bias):
        if self.fail:
            raise AssertionError("measured although it should not have")
        self.calls[algorithm] += 1
        time.sleep(self.delay.get(algorithm, 0.0))
        return RUN_PATH(algorithm, x, weight, bias)


def _case(spatial, k, channels=2, requires_grad=False):
    x = torch.randn(1, channels, *spatial, requires_grad=requires_grad)
    weight = torch.randn(channels, 1, *(k,) * len(spatial), requires_grad=requires_grad)
    return x, weight, torch.randn(channels)


def test_unset_a_gpu_measures_and_a_cpu_does_not_and_the_setting_wins(monkeypatch):
    cpu, gpu = torch.device("cpu"), torch.device("cuda")  # a device object needs no GPU
    monkeypatch.delenv(conv_autotune.AUTOTUNE_ENV)
    assert not conv_autotune.autotune_enabled(cpu) and conv_autotune.autotune_enabled(gpu)
    assert not conv_autotune.autotune_enabled()  # no device: as a CPU
    monkeypatch.setenv(conv_autotune.AUTOTUNE_ENV, "0")
    assert not conv_autotune.autotune_enabled(gpu)
    monkeypatch.setenv(conv_autotune.AUTOTUNE_ENV, "1")
    assert conv_autotune.autotune_enabled(cpu)


def test_the_two_cases_sit_where_their_names_say():
    assert 1 / conv_autotune.MARGIN < estimated_cost_ratio(*NEAR) < conv_autotune.MARGIN
    assert estimated_cost_ratio(*FAR) > 10 * conv_autotune.MARGIN


def test_a_case_is_measured_once_then_reused():
    x, weight, bias = _case(NEAR[0], NEAR[1])
    rule = choose_algorithm(*NEAR)
    other = "fft" if rule == "direct" else "direct"
    runner = CountingRunner()
    first = conv_autotune.measured_algorithm(x, weight, bias, False, runner)
    per_path = conv_autotune.WARMUP + conv_autotune.REPEATS
    # the rule's pick is timed in full; the other path may be abandoned early, if it is slow
    assert runner.calls[rule] == per_path and 1 <= runner.calls[other] <= per_path
    (record,) = conv_autotune.measurements().values()
    assert record["algorithm"] == first and record["rule"] == rule
    timed = {a: t for a, t in record["seconds"].items() if t is not None}
    assert first == min(timed, key=timed.get)
    # the same case again, and one with other values of the same shape: no new timing
    again = conv_autotune.measured_algorithm(x * 2, weight, bias, False, CountingRunner(fail=True))
    assert again == first


def test_the_key_separates_what_changes_the_winner():
    x, weight, _ = _case(NEAR[0], NEAR[1])
    base = conv_autotune.case_key(x, weight, False)
    assert conv_autotune.case_key(x, weight, True) != base
    assert conv_autotune.case_key(torch.cat([x, x]), weight, False) != base  # batch
    assert conv_autotune.case_key(x.double(), weight.double(), False) != base
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert "autocast=bfloat16" in conv_autotune.case_key(x, weight, False)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1 if threads > 1 else 2)
        assert conv_autotune.case_key(x, weight, False) != base
    finally:
        torch.set_num_threads(threads)
    # channels are bucketed: 3 and 4 share a key, 5 does not
    three, four, five = (torch.zeros(1, c, 12, 12, 12) for c in (3, 4, 5))
    keys = [conv_autotune.case_key(t, weight, False) for t in (three, four, five)]
    assert keys[0] == keys[1] != keys[2]


def test_far_from_the_crossover_the_rule_decides_without_timing():
    x, weight, bias = _case((48, 48, 48), 21, channels=1, requires_grad=True)
    algorithm = conv_autotune.measured_algorithm(x, weight, bias, True, CountingRunner(fail=True))
    assert algorithm == choose_algorithm(*FAR) == "fft"
    assert conv_autotune.measurements() == {}


def test_a_slow_path_is_abandoned_once_it_took_twice_the_other_paths_time(monkeypatch):
    x, weight, bias = _case(NEAR[0], NEAR[1])
    rule = choose_algorithm(*NEAR)
    other = "fft" if rule == "direct" else "direct"
    calls = []
    seconds = {rule: 0.01, other: 0.03}  # 4 calls of the rule's: 0.04 s; the other's third call
    # brings it past 0.08 s

    def timed(algorithm, *args):
        calls.append(algorithm)
        return seconds[algorithm]

    monkeypatch.setattr(conv_autotune, "_time_call", timed)
    assert conv_autotune.measured_algorithm(x, weight, bias, False, CountingRunner()) == rule
    assert calls.count(rule) == 4 and calls.count(other) == 3
    (record,) = conv_autotune.measurements().values()
    assert record["seconds"] == {rule: 0.01, other: None}


def test_forcing_a_path_wins_over_the_measurement(monkeypatch):
    x, weight, bias = _case(NEAR[0], NEAR[1])
    # a measurement that picks fft (direct timed slow) ...
    times = {"direct": 1.0, "fft": 0.01}
    monkeypatch.setattr(conv_autotune, "_time_call", lambda algorithm, *args: times[algorithm])
    with torch.no_grad():
        assert depthwise_conv(x, weight, bias).shape == x.shape
    assert [r["algorithm"] for r in conv_autotune.measurements().values()] == ["fft"]
    # ... does not stop a forced direct path, globally or per call
    calls = CountingRunner()
    monkeypatch.setattr(depthwise, "_run_path", calls)
    with torch.no_grad(), conv_algorithm("direct"):
        depthwise_conv(x, weight, bias)
    depthwise_conv(x, weight, bias, algorithm="direct")
    assert calls.calls == {"direct": 2, "fft": 0}
    # while auto now takes the measured winner without timing again
    with torch.no_grad():
        depthwise_conv(x, weight, bias)
    assert calls.calls == {"direct": 2, "fft": 1}


def test_the_disk_cache_survives_a_restart():
    x, weight, bias = _case(NEAR[0], NEAR[1])
    first = conv_autotune.measured_algorithm(x, weight, bias, False, CountingRunner())
    path = conv_autotune.cache_file(x.device)
    saved = json.loads(path.read_text())
    assert saved["torch"] == torch.__version__ and len(saved["cases"]) == 1
    conv_autotune.clear_measurements()  # as a new process starts
    again = conv_autotune.measured_algorithm(x, weight, bias, False, CountingRunner(fail=True))
    assert again == first


def test_a_broken_cache_file_is_ignored_with_a_warning_and_rewritten():
    x, weight, bias = _case(NEAR[0], NEAR[1])
    path = conv_autotune.cache_file(x.device)
    path.parent.mkdir(parents=True)
    path.write_text('{"format": 1, "cases": {"k": {"algorithm": "winog')
    with pytest.warns(UserWarning, match=f"ignoring the conv-path cache {path}"):
        conv_autotune.measured_algorithm(x, weight, bias, False, CountingRunner())
    assert len(json.loads(path.read_text())["cases"]) == 1


def test_the_disk_cache_can_be_turned_off(monkeypatch):
    monkeypatch.setenv(conv_autotune.CACHE_ENV, "0")
    x, weight, bias = _case(NEAR[0], NEAR[1])
    assert conv_autotune.cache_file(x.device) is None
    conv_autotune.measured_algorithm(x, weight, bias, False, CountingRunner())
    assert len(conv_autotune.measurements()) == 1


@pytest.mark.parametrize(
    "condition",
    ["environment", "deterministic", "tracing", "scripting", "compiling", "onnx_export"],
)
def test_measuring_is_off(condition, monkeypatch):
    if condition == "environment":
        monkeypatch.setenv(conv_autotune.AUTOTUNE_ENV, "0")
    elif condition == "deterministic":
        monkeypatch.setattr(torch, "are_deterministic_algorithms_enabled", lambda: True)
    elif condition == "tracing":
        monkeypatch.setattr(torch.jit, "is_tracing", lambda: True)
    elif condition == "scripting":
        monkeypatch.setattr(torch.jit, "is_scripting", lambda: True)
    elif condition == "compiling":
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    else:
        monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: True)
    x, weight, bias = _case(NEAR[0], NEAR[1])
    algorithm = conv_autotune.measured_algorithm(x, weight, bias, False, CountingRunner(fail=True))
    assert algorithm == choose_algorithm(*NEAR)
    assert conv_autotune.measurements() == {}


def test_a_real_trace_does_not_measure():
    x, weight, bias = _case(NEAR[0], NEAR[1])
    conv = torch.nn.Module()
    conv.forward = lambda t: depthwise_conv(t, weight, bias)
    with torch.no_grad():
        torch.jit.trace(conv.forward, x, check_trace=False)
    assert conv_autotune.measurements() == {}


def test_the_deterministic_setting_is_seen():
    was = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(True, warn_only=True)  # what the config key sets
        assert not conv_autotune.autotune_enabled()
    finally:
        torch.use_deterministic_algorithms(was)
    assert conv_autotune.autotune_enabled() is not was


def test_measuring_leaves_the_callers_graph_and_gradients_alone():
    x, weight, bias = _case((6, 6, 6), 21, requires_grad=True)
    margin = conv_autotune.MARGIN
    assert 1 / margin < estimated_cost_ratio((6, 6, 6), 21, True) < margin
    y = depthwise_conv(x, weight, bias)  # measured here
    assert conv_autotune.measurements() and x.grad is None and weight.grad is None
    y.sum().backward()
    expected = torch.autograd.grad(
        depthwise_conv(x, weight, bias, algorithm="direct").sum(), (x, weight)
    )
    assert_close_to_scale(x.grad, expected[0])
    assert_close_to_scale(weight.grad, expected[1])


def test_the_paths_agree_in_float32_and_within_bf16_rounding_under_autocast():
    torch.manual_seed(0)
    x, weight, bias = _case((12, 12, 12), 13, channels=4)
    direct = depthwise_conv(x, weight, bias, algorithm="direct")
    fft = depthwise_conv(x, weight, bias, algorithm="fft")
    assert_close_to_scale(fft, direct, rtol=1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        direct_bf16 = depthwise_conv(x, weight, bias, algorithm="direct")
        fft_bf16 = depthwise_conv(x, weight, bias, algorithm="fft")
    # direct runs in bf16 (8 significant bits: inputs rounded by up to 2^-9 relative), FFT
    # in float32; their difference, relative to the output's scale, stays near bf16's epsilon
    error = (direct_bf16.float() - fft_bf16.float()).abs().max() / direct.abs().max()
    assert 1e-4 < error < 2**-6


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_a_gpu_the_case_names_it_and_the_measured_path_agrees_with_the_other():
    device = torch.device("cuda")
    x = torch.randn(2, 8, 6, 6, 6, device=device, requires_grad=True)
    weight = torch.randn(8, 1, 21, 21, 21, device=device, requires_grad=True)
    bias = torch.randn(8, device=device)
    assert 1 / conv_autotune.MARGIN < estimated_cost_ratio((6, 6, 6), 21, True) < 4
    y = depthwise_conv(x, weight, bias)  # near the crossover in training: measured
    (key,) = conv_autotune.measurements()
    assert key.startswith(f"cuda|{torch.cuda.get_device_name(device)}|")
    for algorithm in ("direct", "fft"):
        assert_close_to_scale(depthwise_conv(x, weight, bias, algorithm=algorithm), y)
