"""Paired comparison of two arms by seed: the one statistics helper every study uses.

A seed fixes the data order and the crops, so the two arms of a pair differ only in the
method. The per-seed differences carry the comparison; their mean gets a paired-t interval,
and a row is called better or worse only where that interval excludes 0.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass

from scipy import optimize, stats

NOT_SEPARATED = "not separated"


@dataclass(frozen=True)
class PairedDifference:
    """``arm - baseline`` over the seeds both arms have."""

    seeds: tuple[int, ...]
    differences: tuple[float, ...]
    mean: float
    low: float  # paired-t interval; nan with fewer than two pairs
    high: float
    detectable: float  # the smallest true difference found at the stated power
    verdict: str  # "better", "worse" or "not separated"
    unpaired: tuple[int, ...]  # seeds that only one arm has: left out of the pairs

    @property
    def n(self) -> int:
        return len(self.differences)

    def as_dict(self) -> dict:
        return {
            "seeds": list(self.seeds),
            "differences": list(self.differences),
            "mean": self.mean,
            "low": self.low,
            "high": self.high,
            "detectable": self.detectable,
            "verdict": self.verdict,
            "unpaired": list(self.unpaired),
        }


def t_quantile(n: int, confidence: float = 0.95) -> float:
    """Two-sided Student t critical value for ``n`` pairs (2.776 for 5)."""
    return float(stats.t.ppf(0.5 + confidence / 2, n - 1))


def detectable_difference(
    spread: float, n: int, confidence: float = 0.95, power: float = 0.8
) -> float:
    """The true mean difference that a paired t test of ``n`` pairs finds with ``power``.

    ``spread`` is the standard deviation of the per-seed differences. Solved exactly with the
    noncentral t distribution rather than the normal approximation, which is optimistic at
    a handful of seeds.
    """
    if n < 2 or not math.isfinite(spread):
        return math.nan
    if spread == 0:
        return 0.0
    df = n - 1
    critical = t_quantile(n, confidence)

    def shortfall(noncentrality: float) -> float:
        # the wrong-sign tail is negligible here, and scipy returns nan for it far out
        wrong_sign = float(stats.nct.cdf(-critical, df, noncentrality))
        found = float(stats.nct.sf(critical, df, noncentrality))
        return found + (0.0 if math.isnan(wrong_sign) else wrong_sign) - power

    upper = 1.0  # widened until the power is reached; nct turns to nan far out
    while shortfall(upper) < 0:
        upper *= 2
    noncentrality = optimize.brentq(shortfall, 0.0, upper)
    return noncentrality * spread / math.sqrt(n)


def paired_difference(
    arm: Mapping[int, float],
    baseline: Mapping[int, float],
    higher_is_better: bool = True,
    confidence: float = 0.95,
    power: float = 0.8,
) -> PairedDifference:
    """Pair ``arm`` and ``baseline`` (seed -> score) and summarise ``arm - baseline``."""
    seeds = tuple(sorted(set(arm) & set(baseline)))
    if not seeds:
        raise ValueError(
            f"no seed in common: arm has {sorted(arm)}, baseline has {sorted(baseline)}"
        )
    unpaired = tuple(sorted(set(arm) ^ set(baseline)))
    differences = tuple(float(arm[s]) - float(baseline[s]) for s in seeds)
    mean = statistics.fmean(differences)
    n = len(differences)
    if n < 2:
        low = high = spread = math.nan
    else:
        spread = statistics.stdev(differences)
        half = t_quantile(n, confidence) * spread / math.sqrt(n)
        low, high = mean - half, mean + half
    if low > 0:
        verdict = "better" if higher_is_better else "worse"
    elif high < 0:
        verdict = "worse" if higher_is_better else "better"
    else:  # the interval holds 0, or there is no interval
        verdict = NOT_SEPARATED
    return PairedDifference(
        seeds=seeds,
        differences=differences,
        mean=mean,
        low=low,
        high=high,
        # with no spread at all the power calculation has nothing to scale by
        detectable=detectable_difference(spread, n, confidence, power) if spread else math.nan,
        verdict=verdict,
        unpaired=unpaired,
    )


def format_difference(result: PairedDifference, digits: int = 3) -> str:
    """``+0.011 [-0.020, +0.042] (5 seeds), not separated``."""
    mean = f"{result.mean:+.{digits}f}"
    if result.n < 2:
        return f"{mean} (1 seed: no interval), {result.verdict}"
    interval = f"[{result.low:+.{digits}f}, {result.high:+.{digits}f}]"
    return f"{mean} {interval} ({result.n} seeds), {result.verdict}"


def difference_table(rows: Mapping[str, PairedDifference], what: str, digits: int = 3) -> list[str]:
    """Markdown rows: per-seed differences, mean, interval, detectable size, verdict."""
    lines = [
        f"| {what} | per-seed differences | mean | 95% interval | detectable at 80% power | "
        "verdict |",
        "|---|---|---|---|---|---|",
    ]
    for label, result in rows.items():
        per_seed = ", ".join(
            f"{s}: {d:+.{digits}f}" for s, d in zip(result.seeds, result.differences, strict=True)
        )
        interval = "-" if result.n < 2 else f"[{result.low:+.{digits}f}, {result.high:+.{digits}f}]"
        detectable = "-" if math.isnan(result.detectable) else f"{result.detectable:.{digits}f}"
        lines.append(
            f"| {label} | {per_seed} | {result.mean:+.{digits}f} | {interval} | {detectable} | "
            f"{result.verdict} |"
        )
    return lines
