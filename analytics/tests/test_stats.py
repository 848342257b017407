"""The statistics behind the A/B results and the latency percentiles, checked against numbers
computed here by hand (math.erf and math.sqrt only: no scipy on this side)."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest

from analytics import stats
from analytics.models import HISTOGRAM_SIZE, LATENCY_BOUNDS_MS


def phi(x: float) -> float:
    """The standard normal CDF."""
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def phi_inverse(p: float) -> float:
    """Φ⁻¹ by bisection on math.erf."""
    lo, hi = -10.0, 10.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if phi(mid) < p else (lo, mid)
    return (lo + hi) / 2


# Variant a: 1000 sent, 100 opened; variant b: 1000 sent, 130 opened.
N_A, X_A, N_B, X_B = 1000, 100, 1000, 130


def test_the_z_test_matches_the_hand_computation():
    p_a, p_b = X_A / N_A, X_B / N_B  # 0.10, 0.13
    diff = p_b - p_a  # 0.03
    # The test: pooled rate under the null, its standard error, z, two-sided p.
    pooled = (X_A + X_B) / (N_A + N_B)  # 0.115
    se_pooled = math.sqrt(pooled * (1 - pooled) * (1 / N_A + 1 / N_B))  # 0.0142671
    z = diff / se_pooled  # 2.10274
    p_value = 2 * (1 - phi(abs(z)))  # 0.03549
    # The interval of the difference: unpooled standard error, z at 97.5 %.
    se = math.sqrt(p_a * (1 - p_a) / N_A + p_b * (1 - p_b) / N_B)  # 0.0142513
    z_975 = phi_inverse(0.975)  # 1.959964
    lo, hi = diff - z_975 * se, diff + z_975 * se  # [0.002068, 0.057932]
    assert round(z, 4) == 2.1027
    assert round(p_value, 4) == 0.0355
    assert (round(lo, 4), round(hi, 4)) == (0.0021, 0.0579)

    result = stats.two_proportion_ztest(X_B, N_B, X_A, N_A)
    assert result.z == pytest.approx(z, rel=1e-9)
    assert result.p_value == pytest.approx(p_value, rel=1e-7)
    assert result.diff == pytest.approx(diff)
    assert result.diff_ci == pytest.approx((lo, hi), rel=1e-7)

    ab = stats.ab_test([("a", N_A, X_A), ("b", N_B, X_B)], alpha=0.05)
    assert ab is not None
    assert ab["test"] == "two_proportion_z"
    assert ab["p_value"] == pytest.approx(p_value, rel=1e-7)
    assert ab["significant"] is True  # 0.0355 < 0.05
    assert ab["diff_between"] == ["b", "a"]
    assert ab["diff_ci"] == pytest.approx([lo, hi], rel=1e-7)
    assert ab["needed_per_variant"] is None  # already significant
    # At 1 % the same data is not significant, and the interval (99 %) now crosses zero.
    strict = stats.ab_test([("a", N_A, X_A), ("b", N_B, X_B)], alpha=0.01)
    assert strict is not None
    assert strict["significant"] is False
    z_995 = phi_inverse(0.995)
    assert strict["diff_ci"] == pytest.approx([diff - z_995 * se, diff + z_995 * se], rel=1e-7)
    assert strict["diff_ci"][0] < 0 < strict["diff_ci"][1]


def test_the_wilson_interval_matches_the_hand_computation():
    n, x = N_A, X_A
    p = x / n
    z = phi_inverse(0.975)
    denominator = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    assert stats.wilson_interval(x, n) == pytest.approx((centre - half, centre + half), rel=1e-7)
    assert (round(centre - half, 4), round(centre + half, 4)) == (0.0829, 0.1202)
    # Zero successes: the interval still has width, and stays inside [0, 1].
    lo, hi = stats.wilson_interval(0, 20)  # type: ignore[misc]
    assert lo == 0.0 and 0.1 < hi < 0.2
    assert stats.wilson_interval(0, 0) is None


def test_the_sample_still_needed_matches_the_hand_computation():
    p1, p2 = 0.10, 0.11
    z_a, z_b = phi_inverse(0.975), phi_inverse(0.80)
    p_bar = (p1 + p2) / 2
    n = z_a * math.sqrt(2 * p_bar * (1 - p_bar)) + z_b * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    n = math.ceil(n**2 / (p2 - p1) ** 2)
    assert n == 14_751
    assert stats.sample_size_two_proportions(p1, p2) == n

    # A test that is not significant says how many more it needs; equal rates need no number.
    ab = stats.ab_test([("a", 1000, 100), ("b", 1000, 110)])
    assert ab is not None and ab["significant"] is False
    assert ab["needed_per_variant"] == n
    same = stats.ab_test([("a", 1000, 100), ("b", 500, 50)])
    assert same is not None and same["diff"] == 0 and same["significant"] is False
    assert same["needed_per_variant"] is None


def test_three_variants_use_chi_squared_computed_by_hand():
    table = [("a", 1000, 100), ("b", 1000, 130), ("c", 1000, 90)]
    successes = sum(x for _, _, x in table)
    total = sum(n for _, n, _ in table)
    chi2 = 0.0
    for _, n, x in table:
        expected_yes = n * successes / total
        expected_no = n * (total - successes) / total
        chi2 += (x - expected_yes) ** 2 / expected_yes + (n - x - expected_no) ** 2 / expected_no
    # With two degrees of freedom the chi-squared survival function is exp(-x / 2).
    p_value = math.exp(-chi2 / 2)
    assert round(chi2, 3) == 9.095
    assert round(p_value, 4) == 0.0106

    ab = stats.ab_test(table)
    assert ab is not None
    assert ab["test"] == "chi_squared"
    assert ab["p_value"] == pytest.approx(p_value, rel=1e-7)
    assert ab["significant"] is True
    assert ab["diff_between"] == ["b", "c"]  # the highest rate against the lowest
    assert ab["diff"] == pytest.approx(0.04)
    assert [v["key"] for v in ab["variants"]] == ["a", "b", "c"]
    assert ab["variants"][1]["rate"] == 0.13
    assert ab["needed_per_variant"] is None


def test_three_variants_not_yet_significant_say_the_sample_that_gives_80_percent_power():
    from scipy.stats import chi2, ncx2  # noqa: PLC0415 - as the module under test does

    rates = [0.10, 0.11, 0.12]
    ab = stats.ab_test([(k, 1000, round(r * 1000)) for k, r in zip("abc", rates, strict=True)])
    assert ab is not None and ab["significant"] is False
    needed = ab["needed_per_variant"]
    # Cohen's w² for equal allocation, and the power of the chi-squared test at that size.
    p_bar = sum(rates) / 3
    w2 = sum((r - p_bar) ** 2 for r in rates) / (3 * p_bar * (1 - p_bar))

    def power(per_variant: int) -> float:
        return ncx2.sf(chi2.ppf(0.95, 2), 2, 3 * per_variant * w2)

    assert power(needed) >= 0.8 > power(needed - 1)


def test_a_variant_without_a_sample_is_left_out():
    assert stats.ab_test([("a", 1000, 100), ("b", 0, 0)]) is None
    assert stats.ab_test([("a", 1000, 100)]) is None
    # Nobody opened anything: no difference to see, and no error.
    ab = stats.ab_test([("a", 10, 0), ("b", 10, 0), ("c", 10, 0)])
    assert ab is not None and ab["p_value"] == 1.0 and ab["needed_per_variant"] is None


def hist(**buckets: int) -> list[int]:
    out = [0] * HISTOGRAM_SIZE
    for name, count in buckets.items():
        out[int(name[1:])] = count
    return out


def test_percentiles_interpolate_inside_the_bucket():
    assert LATENCY_BOUNDS_MS[:5] == (5, 10, 25, 50, 100)
    # 100 calls: 50 in (25, 50] ms, 40 in (50, 100], 10 in (100, 250].
    h = hist(b3=50, b4=40, b5=10)
    # p50: rank 50, the last of bucket 3 -> its upper bound.
    assert stats.percentile(h, 0.50) == pytest.approx(50.0)
    # p95: rank 95, 5 of the 10 in (100, 250] -> 100 + 150 * 5/10.
    assert stats.percentile(h, 0.95) == pytest.approx(175.0)
    # p99: rank 99, 9 of 10 -> 100 + 150 * 9/10.
    assert stats.percentile(h, 0.99) == pytest.approx(235.0)
    # p20: rank 20 of the 50 in (25, 50] -> 25 + 25 * 20/50.
    assert stats.percentile(h, 0.20) == pytest.approx(35.0)
    # The first bucket starts at 0.
    assert stats.percentile(hist(b0=4), 0.5) == pytest.approx(2.5)


def test_the_overflow_bucket_reports_its_lower_bound():
    h = hist(b0=90, b15=10)  # 10 calls above the last bound (an hour)
    assert stats.percentile(h, 0.99) == float(LATENCY_BOUNDS_MS[-1])
    assert stats.percentile(h, 0.50) == pytest.approx(5 * 50 / 90)


def test_an_empty_histogram_has_no_percentile():
    assert stats.percentile([0] * HISTOGRAM_SIZE, 0.5) is None


def test_the_web_process_does_not_import_scipy_until_a_report_asks():
    code = (
        "import django, sys; django.setup(); "
        "from django.urls import resolve; resolve('/api/v1/analytics/engagement'); "
        "import analytics.stats; print('scipy' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "communication.settings"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "False"
