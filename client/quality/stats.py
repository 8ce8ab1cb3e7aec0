"""The statistics of the reports: confidence intervals, calibration and McNemar's test.

Pure numpy and the standard library, so the light client computes them
without SciPy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: z for a two-sided 95% interval.
Z95 = 1.959963984540054


def wilson_interval(successes: int, total: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95% by default).

    Unlike the normal approximation it stays inside [0, 1] and is honest near
    0 and 1, where a good classifier's accuracy lives.
    """
    if total <= 0:
        return (0.0, 1.0)
    p = successes / total
    z2 = z * z
    centre = (p + z2 / (2 * total)) / (1 + z2 / total)
    half = z * math.sqrt(p * (1 - p) / total + z2 / (4 * total * total)) / (1 + z2 / total)
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class CalibrationBin:
    """Predictions whose confidence fell in ``[lower, upper)`` (the last bin includes 1)."""

    lower: float
    upper: float
    count: int
    confidence: float  # mean confidence of the bin (0 when empty)
    accuracy: float  # fraction correct in the bin (0 when empty)


def calibration_bins(confidence: np.ndarray, correct: np.ndarray, num_bins: int = 10) -> list[CalibrationBin]:
    """Equal-width confidence bins over [0, 1], as in a reliability diagram."""
    confidence = np.clip(np.asarray(confidence, dtype=np.float64), 0.0, 1.0)
    correct = np.asarray(correct, dtype=bool)
    which = np.minimum((confidence * num_bins).astype(np.int64), num_bins - 1)
    counts = np.bincount(which, minlength=num_bins)
    conf_sum = np.bincount(which, weights=confidence, minlength=num_bins)
    right = np.bincount(which, weights=correct.astype(np.float64), minlength=num_bins)
    bins = []
    for b in range(num_bins):
        n = int(counts[b])
        bins.append(CalibrationBin(b / num_bins, (b + 1) / num_bins, n,
                                   float(conf_sum[b] / n) if n else 0.0, float(right[b] / n) if n else 0.0))
    return bins


def expected_calibration_error(bins: list[CalibrationBin]) -> float:
    """ECE: the bins' |accuracy - confidence|, weighted by their share of the predictions."""
    total = sum(b.count for b in bins)
    if not total:
        return 0.0
    return float(sum(b.count / total * abs(b.accuracy - b.confidence) for b in bins))


@dataclass(frozen=True)
class McNemarResult:
    """McNemar's test on paired predictions: ``only_a`` right only by A, ``only_b`` right only by B."""

    only_a: int
    only_b: int
    p_value: float  # two-sided exact binomial test of only_a vs only_b (1.0 when they never disagree)

    def significant(self, alpha: float = 0.05) -> bool:
        """Whether the difference is unlikely to be chance at level ``alpha``."""
        return self.p_value < alpha


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> McNemarResult:
    """McNemar's exact test of whether A and B differ in accuracy on the same examples.

    Only the discordant pairs count: under the null hypothesis each is
    equally likely to favour A or B, so the smaller count is a Binomial(n, 1/2)
    tail. Exact at every sample size (no continuity correction needed).
    """
    correct_a, correct_b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    only_a = int(np.count_nonzero(correct_a & ~correct_b))
    only_b = int(np.count_nonzero(correct_b & ~correct_a))
    return McNemarResult(only_a, only_b, binomial_two_sided(min(only_a, only_b), only_a + only_b))


def binomial_two_sided(k: int, n: int) -> float:
    """P(X <= k) + P(X >= n - k) for X ~ Binomial(n, 1/2), k <= n/2: the exact two-sided p-value."""
    if n == 0:
        return 1.0
    # Sum in log space: n can be tens of thousands, where 0.5**n underflows.
    log_half_n = -n * math.log(2.0)
    log_terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + log_half_n for i in range(k + 1)]
    top = max(log_terms)
    tail = math.exp(top) * sum(math.exp(t - top) for t in log_terms)
    return min(1.0, 2.0 * tail)
