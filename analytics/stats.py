"""The statistics the reports use: A/B tests between variants' rates, their confidence intervals,
the sample still needed, and percentiles read from the latency histograms.

- Two variants: the two-proportion z-test. The test uses the pooled standard error (under the
  null hypothesis both rates are one rate); the confidence interval of the difference uses the
  unpooled one (the rates are not assumed equal there).
- More than two: Pearson's chi-squared test of independence on the variants by (success, failure)
  table (``scipy.stats.chi2_contingency``, without continuity correction).
- Each variant's rate: the Wilson score interval, which stays inside [0, 1] and behaves on small
  samples where the normal interval does not.
- Sample needed per variant for 80 % power at the observed rates (two-sided): the usual normal
  approximation for two variants; for more, the noncentral chi-squared with Cohen's effect size w
  under equal allocation. None when the result is already significant, or when the rates are
  equal (no sample size detects a difference of zero).

scipy is imported inside the functions: the web process only pays for it when a report asks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from analytics.models import LATENCY_BOUNDS_MS

POWER = 0.8


def _norm() -> Any:
    from scipy.stats import norm  # type: ignore[import-untyped]  # noqa: PLC0415 - lazy; no stubs

    return norm


def z_critical(alpha: float) -> float:
    """The two-sided critical value of the standard normal at level ``alpha``."""
    return float(_norm().ppf(1 - alpha / 2))


def wilson_interval(successes: int, n: int, *, alpha: float = 0.05) -> tuple[float, float] | None:
    """The Wilson score interval of a rate at confidence ``1 - alpha``; None without a sample."""
    if n <= 0:
        return None
    z = z_critical(alpha)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class ZTest:
    z: float
    p_value: float
    diff: float  # rate 1 - rate 2
    diff_ci: tuple[float, float]


def two_proportion_ztest(x1: int, n1: int, x2: int, n2: int, *, alpha: float = 0.05) -> ZTest:
    """Two-sided z-test of ``x1/n1`` against ``x2/n2`` (both ``n`` positive)."""
    p1, p2 = x1 / n1, x2 / n2
    diff = p1 - p2
    pooled = (x1 + x2) / (n1 + n2)
    se_pooled = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    se = math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    # Both rates 0 (or both 1): no evidence of any difference.
    z = diff / se_pooled if se_pooled > 0 else 0.0
    p_value = float(2 * _norm().sf(abs(z)))
    half = z_critical(alpha) * se
    return ZTest(z=z, p_value=min(1.0, p_value), diff=diff, diff_ci=(diff - half, diff + half))


def chi_squared_test(table: Sequence[tuple[int, int]]) -> tuple[float, float, int]:
    """Pearson's chi-squared on rows of (successes, failures): ``(statistic, p_value, dof)``.

    A table whose successes (or failures) are all zero shows no difference: p = 1.
    """
    from scipy.stats import chi2_contingency  # noqa: PLC0415 - lazy; no stubs

    dof = len(table) - 1
    if sum(s for s, _ in table) == 0 or sum(f for _, f in table) == 0:
        return 0.0, 1.0, dof
    result = chi2_contingency([list(row) for row in table], correction=False)
    return float(result.statistic), float(result.pvalue), int(result.dof)


def sample_size_two_proportions(
    p1: float, p2: float, *, alpha: float = 0.05, power: float = POWER
) -> int | None:
    """Per variant, for a two-sided test at ``alpha`` to detect ``p1`` vs ``p2`` with ``power``;
    None when the rates are equal."""
    if p1 == p2:
        return None
    norm = _norm()
    z_a = float(norm.ppf(1 - alpha / 2))
    z_b = float(norm.ppf(power))
    p_bar = (p1 + p2) / 2
    numerator = z_a * math.sqrt(2 * p_bar * (1 - p_bar)) + z_b * math.sqrt(
        p1 * (1 - p1) + p2 * (1 - p2)
    )
    return math.ceil(numerator**2 / (p1 - p2) ** 2)


def sample_size_chi_squared(
    rates: Sequence[float], *, alpha: float = 0.05, power: float = POWER
) -> int | None:
    """Per variant (equal allocation), for the chi-squared test at ``alpha`` to detect the
    differences between ``rates`` with ``power``; None when all rates are equal."""
    from scipy.optimize import brentq  # type: ignore[import-untyped]  # noqa: PLC0415 - lazy; no stubs
    from scipy.stats import chi2, ncx2  # noqa: PLC0415 - lazy; no stubs

    k = len(rates)
    p_bar = sum(rates) / k
    if p_bar in (0.0, 1.0) or all(r == rates[0] for r in rates):
        return None
    # Cohen's w² for a k-by-2 table with equal rows: sum over rows of (p_i - p̄)² / (k p̄ (1 - p̄)).
    w2 = sum((r - p_bar) ** 2 for r in rates) / (k * p_bar * (1 - p_bar))
    critical = chi2.ppf(1 - alpha, k - 1)
    # The noncentrality N·w² that gives the power, found on a bracket wide enough for any power
    # below 1; then the total sample N, split equally.
    lam = brentq(lambda x: ncx2.sf(critical, k - 1, x) - power, 1e-9, 1e4)
    return math.ceil(lam / w2 / k)


def ab_test(
    variants: Sequence[tuple[str, int, int]], *, alpha: float = 0.05
) -> dict[str, Any] | None:
    """The A/B result of ``(key, sent, successes)`` rows: None with fewer than two variants
    that have a sample.

    ``diff_between`` names the variants whose difference ``diff_ci`` bounds: the highest rate
    minus the lowest (for two variants, one minus the other).
    """
    rows = [(key, n, min(max(x, 0), n)) for key, n, x in variants if n > 0]
    if len(rows) < 2:
        return None
    best = max(rows, key=lambda r: (r[2] / r[1], r[0]))
    worst = min(rows, key=lambda r: (r[2] / r[1], r[0]))
    if best is worst:  # every rate equal: any two (in key order) bound a difference of zero
        best, worst = sorted(rows)[1], sorted(rows)[0]
    ztest = two_proportion_ztest(best[2], best[1], worst[2], worst[1], alpha=alpha)
    if len(rows) == 2:
        test, p_value = "two_proportion_z", ztest.p_value
    else:
        test = "chi_squared"
        _, p_value, _ = chi_squared_test([(x, n - x) for _, n, x in rows])
    significant = p_value < alpha
    needed: int | None = None
    if not significant:
        if len(rows) == 2:
            needed = sample_size_two_proportions(
                best[2] / best[1], worst[2] / worst[1], alpha=alpha
            )
        else:
            needed = sample_size_chi_squared([x / n for _, n, x in rows], alpha=alpha)
    return {
        "test": test,
        "alpha": alpha,
        "p_value": p_value,
        "significant": significant,
        "diff": ztest.diff,
        "diff_between": [best[0], worst[0]],
        "diff_ci": list(ztest.diff_ci),
        "needed_per_variant": needed,
        "variants": [
            {
                "key": key,
                "sent": n,
                "successes": x,
                "rate": x / n,
                "ci": list(wilson_interval(x, n, alpha=alpha) or (0.0, 0.0)),
            }
            for key, n, x in sorted(rows)
        ],
    }


def percentile(
    hist: Sequence[int], q: float, bounds: Sequence[float] = LATENCY_BOUNDS_MS
) -> float | None:
    """The ``q`` quantile (0..1) of a histogram whose bucket ``i`` counts values up to
    ``bounds[i]`` (the first from 0, the last everything above the last bound).

    Linear interpolation inside the bucket that holds the rank; in the overflow bucket, which
    has no upper bound, its lower bound. None for an empty histogram.
    """
    total = sum(hist)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for i, count in enumerate(hist):
        if count <= 0:
            continue
        if seen + count >= rank:
            lower = float(bounds[i - 1]) if i > 0 else 0.0
            if i >= len(bounds):
                return lower
            return lower + (float(bounds[i]) - lower) * (rank - seen) / count
        seen += count
    return float(bounds[-1])  # pragma: no cover - rank <= total always ends the loop
