"""The paired-seed statistics that every study's comparison goes through."""

from __future__ import annotations

import math
import random

import pytest
from benchmarks.paired import (
    NOT_SEPARATED,
    detectable_difference,
    difference_table,
    format_difference,
    paired_difference,
    t_quantile,
)


def test_t_for_five_seeds_is_the_tabled_value():
    assert t_quantile(5) == pytest.approx(2.776, abs=5e-4)
    assert t_quantile(3) == pytest.approx(4.303, abs=5e-4)


def test_interval_on_a_hand_computed_case():
    # differences 1..5: mean 3, sd sqrt(2.5), se sqrt(0.5), half width 2.776 * 0.7071 = 1.963
    arm = {s: 10.0 + s for s in range(1, 6)}
    baseline = {s: 10.0 for s in range(1, 6)}
    result = paired_difference(arm, baseline)
    assert result.differences == (1.0, 2.0, 3.0, 4.0, 5.0)
    assert result.mean == pytest.approx(3.0)
    assert result.low == pytest.approx(3.0 - 1.963, abs=1e-3)
    assert result.high == pytest.approx(3.0 + 1.963, abs=1e-3)
    assert result.verdict == "better"
    assert format_difference(result) == "+3.000 [+1.037, +4.963] (5 seeds), better"


def test_an_interval_that_holds_zero_is_not_separated():
    arm = {0: 0.90, 1: 0.85, 2: 0.88}
    baseline = {0: 0.88, 1: 0.87, 2: 0.87}
    result = paired_difference(arm, baseline)
    assert result.low < 0 < result.high
    assert result.verdict == NOT_SEPARATED


def test_lower_is_better_flips_the_verdict():
    arm = {0: 1.0, 1: 1.1, 2: 1.2}
    baseline = {0: 2.0, 1: 2.2, 2: 2.1}
    assert paired_difference(arm, baseline).verdict == "worse"
    assert paired_difference(arm, baseline, higher_is_better=False).verdict == "better"


def test_pairs_only_the_common_seeds_and_names_the_rest():
    result = paired_difference({0: 1.0, 1: 2.0, 4: 9.0}, {0: 0.5, 1: 1.0, 2: 7.0})
    assert result.seeds == (0, 1)
    assert result.unpaired == (2, 4)
    assert result.differences == (0.5, 1.0)


def test_one_pair_gives_no_interval_and_no_verdict():
    result = paired_difference({3: 0.9}, {3: 0.5})
    assert math.isnan(result.low) and math.isnan(result.high)
    assert result.verdict == NOT_SEPARATED
    assert format_difference(result) == "+0.400 (1 seed: no interval), not separated"


def test_no_common_seed_is_refused_with_both_seed_lists():
    with pytest.raises(ValueError, match=r"arm has \[0, 1\], baseline has \[2\]"):
        paired_difference({0: 1.0, 1: 1.0}, {2: 1.0})


def test_detectable_difference_is_found_eighty_percent_of_the_time():
    n, spread = 5, 1.0
    detectable = detectable_difference(spread, n)
    rng = random.Random(0)
    trials = 4000
    found = 0
    for _ in range(trials):
        arm = {s: detectable + rng.gauss(0.0, spread) for s in range(n)}
        found += paired_difference(arm, dict.fromkeys(range(n), 0.0)).verdict == "better"
    # binomial standard error at 0.8 over 4000 trials is 0.006
    assert found / trials == pytest.approx(0.8, abs=0.025)


def test_detectable_difference_scales_with_the_spread():
    assert detectable_difference(0.02, 5) == pytest.approx(2 * detectable_difference(0.01, 5))
    assert detectable_difference(0.01, 20) < detectable_difference(0.01, 5)
    assert math.isnan(detectable_difference(0.01, 1))


def test_table_rows_carry_every_field():
    result = paired_difference({0: 0.9, 1: 0.8}, {0: 0.85, 1: 0.82})
    lines = difference_table({"BFR - plain, k = 21": result}, "comparison")
    assert len(lines) == 3
    assert "0: +0.050, 1: -0.020" in lines[2]
    assert lines[2].endswith(f"| {NOT_SEPARATED} |")
