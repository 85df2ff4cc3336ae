"""rnnjax.stats against independent routes: the bootstrap against the exact bootstrap
distribution (every one of the n^n resamples enumerated), the Wilson interval against
the root of its defining equation found by bisection."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from rnnjax import stats


def exact_percentile_interval(values, confidence=0.95):
    """The percentile interval of the exact bootstrap distribution of the mean: all n^n
    equally likely resamples, the quantiles of their means read off the inverse of
    their distribution function (the distribution is discrete: with n = 3 the smallest
    mean alone carries 1/27 of it, more than the 2.5% tail)."""
    a = np.asarray(values, np.float64)
    n = a.size
    means = np.array([a[list(idx)].mean() for idx in itertools.product(range(n), repeat=n)])
    alpha = (1 - confidence) / 2
    return (
        np.quantile(means, alpha, method="inverted_cdf"),
        np.quantile(means, 1 - alpha, method="inverted_cdf"),
    )


@pytest.mark.parametrize("n", [3, 4, 5, 6])
def test_bootstrap_matches_the_exact_bootstrap(n):
    rng = np.random.default_rng(n)
    values = rng.normal(0.9, 0.03, n)
    low, high = stats.bootstrap_ci(values)
    want_low, want_high = exact_percentile_interval(values)
    # 10,000 Monte Carlo resamples: the quantiles agree to a few percent of the spread.
    tol = 0.05 * np.ptp(values)
    assert abs(low - want_low) < tol and abs(high - want_high) < tol, (low, high)
    assert low < values.mean() < high
    # Its own generator: the same interval every call.
    assert stats.bootstrap_ci(values) == (low, high)


def test_bootstrap_edge_cases():
    assert all(math.isnan(v) for v in stats.bootstrap_ci([0.5]))
    assert stats.bootstrap_ci([0.25, 0.25, 0.25]) == (0.25, 0.25)
    assert all(math.isnan(v) for v in stats.bootstrap_ci([0.1, float("nan"), 0.3]))
    with pytest.raises(ValueError, match="values must hold at least one value"):
        stats.bootstrap_ci([])
    with pytest.raises(ValueError, match=r"confidence must lie in \(0, 1\); got 95"):
        stats.bootstrap_ci([1.0, 2.0], confidence=95)


def wilson_by_bisection(p_hat, n, z):
    """The two p with |p_hat - p| = z sqrt(p (1 - p) / n), found by bisection on each
    side of p_hat: the Wilson interval's definition, not its closed form."""

    def f(p):
        return (p_hat - p) ** 2 - z * z * p * (1 - p) / n

    def root(lo, hi):
        for _ in range(200):
            mid = (lo + hi) / 2
            if (f(lo) > 0) == (f(mid) > 0):
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2

    low = 0.0 if p_hat == 0 else root(0.0, p_hat)
    high = 1.0 if p_hat == 1 else root(p_hat, 1.0)
    return low, high


@pytest.mark.parametrize(("p", "n"), [(0.9088, 1000), (0.5, 37), (0.03, 200), (0.0, 50), (1.0, 9)])
def test_wilson_matches_its_definition(p, n):
    z = 1.959963984540054  # the normal's 97.5% quantile
    got = stats.wilson_interval(p, n)
    want = wilson_by_bisection(p, n, z)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert got[0] <= p <= got[1]


def test_wilson_errors():
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        stats.wilson_interval(0.5, 0)
    with pytest.raises(ValueError, match=r"accuracy must lie in \[0, 1\]; got 1.5"):
        stats.wilson_interval(1.5, 10)


def test_summarize_and_format():
    s = stats.summarize([0.91, 0.9, 0.93, 0.88, 0.92])
    assert s["n"] == 5 and s["mean"] == pytest.approx(0.908)
    assert s["std"] == pytest.approx(np.std([0.91, 0.9, 0.93, 0.88, 0.92], ddof=1))
    assert (s["min"], s["max"]) == (0.88, 0.93)
    assert s["ci_low"] < s["mean"] < s["ci_high"]
    text = stats.fmt_ci(s, 3, scale=100)
    assert text == f"90.8 [{s['ci_low'] * 100:.3g}, {s['ci_high'] * 100:.3g}]"
    assert stats.fmt_ci(stats.summarize([0.4]), 3) == "0.4"
    assert stats.summarize([0.4])["std"] == 0.0
