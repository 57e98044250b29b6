"""The uncertainty of a leaderboard's numbers over test examples, and paired tests between two rows.

A certified accuracy is a share of test examples, so its interval is the exact binomial (Clopper-Pearson)
one on the count; an ACR is a mean over examples, so its interval is the normal approximation
(mean ± z·s/√n, s the sample standard deviation of correct × radius). Two rows are compared on the examples
both evaluated: at a radius with one model each, by McNemar's exact test (the discordant examples are
Binomial(b + c, ½) when the two are equally good) with the Bonett-Price adjusted Wald interval for the
difference of paired proportions; otherwise (ACR, or rows averaged over several models or reruns) by a paired
bootstrap over examples (percentile interval of the mean difference). Levels are two-sided, 95% by default.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy.stats import beta, norm
from statsmodels.stats.contingency_tables import mcnemar

LEVEL = 0.95
BOOTSTRAP_RESAMPLES = 2_000
BOOTSTRAP_SEED = 0
INTERVALS = {
    "level": LEVEL,
    "certified_accuracy": "Clopper-Pearson (exact binomial) on the count of certified test examples; for a row "
    "of several models, on their mean count",
    "acr": "normal approximation: mean ± z·s/√n over test examples (s: sample std of correct × radius); for a row "
    "of several models, their mean s (conservative)",
    "best": "a column's best row is marked only where a paired test on the examples it and the runner-up both "
    "evaluated rejects equality at 5%: McNemar's exact test for certified accuracy of single-model rows, else a "
    f"paired bootstrap ({BOOTSTRAP_RESAMPLES:,} resamples) of the mean difference; else both rows are marked tied",
}


def binomial_interval(successes: float, trials: int, level: float = LEVEL) -> tuple[float, float]:
    """Clopper-Pearson interval for a proportion: the Beta quantiles that invert the binomial tails.
    ``successes`` may be a mean count (a row of several models); 0 and ``trials`` give one-sided ends."""
    tail = (1 - level) / 2
    low = 0.0 if successes <= 0 else float(beta.ppf(tail, successes, trials - successes + 1))
    high = 1.0 if successes >= trials else float(beta.ppf(1 - tail, successes + 1, trials - successes))
    return low, high


def mean_interval(mean: float, mean_square: float, count: int, level: float = LEVEL) -> tuple[float, float]:
    """Normal-approximation interval for a mean over ``count`` examples from its first two moments."""
    if count < 2:
        return -math.inf, math.inf
    variance = max(mean_square - mean * mean, 0.0) * count / (count - 1)
    half = float(norm.ppf(1 - (1 - level) / 2)) * math.sqrt(variance / count)
    return float(mean) - half, float(mean) + half


def mcnemar_exact(only_first: int, only_second: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts: examples only the first row certified
    (b) and only the second (c)."""
    return float(mcnemar([[0, only_first], [only_second, 0]], exact=True).pvalue)


def paired_difference_interval(
    only_first: int, only_second: int, count: int, level: float = LEVEL
) -> tuple[float, float]:
    """Bonett-Price (2012) adjusted Wald interval for p_first - p_second from paired binary outcomes:
    discordant shares with one pseudo-count each, (b + 1)/(n + 2) and (c + 1)/(n + 2)."""
    first, second = (only_first + 1) / (count + 2), (only_second + 1) / (count + 2)
    difference = first - second
    half = float(norm.ppf(1 - (1 - level) / 2)) * math.sqrt((first + second - difference**2) / (count + 2))
    return max(difference - half, -1.0), min(difference + half, 1.0)


def paired_bootstrap_interval(
    differences: np.ndarray, level: float = LEVEL, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-example paired ``differences`` (examples resampled
    with replacement; a fixed seed, so a board renders the same twice)."""
    differences = np.asarray(differences, dtype=float)
    count = len(differences)
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    chunk = max(1, 2_000_000 // max(count, 1))
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        means[start : start + size] = differences[rng.integers(0, count, size=(size, count))].mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


@dataclasses.dataclass
class PairedComparison:
    """First minus second on the examples both evaluated. ``difference`` is a share (certified accuracy) or
    ℓ2 radius units (ACR); ``p_value`` is McNemar's exact one (None for a bootstrap); ``significant``:
    the test rejects equality at ``1 - level``."""

    test: str
    examples: int
    first: float
    second: float
    difference: float
    interval: tuple[float, float]
    p_value: float | None
    level: float
    only_first: int | None = None
    only_second: int | None = None

    @property
    def significant(self) -> bool:
        if self.p_value is not None:
            return self.p_value < 1 - self.level
        low, high = self.interval
        return low > 0 or high < 0


def compare_binary(first: np.ndarray, second: np.ndarray, level: float = LEVEL) -> PairedComparison:
    """Paired 0/1 outcomes (certified or not at one radius): McNemar's exact test, Bonett-Price interval."""
    first, second = np.asarray(first, dtype=bool), np.asarray(second, dtype=bool)
    only_first, only_second = int((first & ~second).sum()), int((second & ~first).sum())
    count = len(first)
    return PairedComparison(
        test="mcnemar_exact",
        examples=count,
        first=float(first.mean()),
        second=float(second.mean()),
        difference=(only_first - only_second) / count,
        interval=paired_difference_interval(only_first, only_second, count, level),
        p_value=mcnemar_exact(only_first, only_second),
        level=level,
        only_first=only_first,
        only_second=only_second,
    )


def compare_means(first: np.ndarray, second: np.ndarray, level: float = LEVEL) -> PairedComparison:
    """Paired per-example values (correct × radius, or a share over several models): paired bootstrap."""
    first, second = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    differences = first - second
    return PairedComparison(
        test="paired_bootstrap",
        examples=len(differences),
        first=float(first.mean()),
        second=float(second.mean()),
        difference=float(differences.mean()),
        interval=paired_bootstrap_interval(differences, level),
        p_value=None,
        level=level,
    )
