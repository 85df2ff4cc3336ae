"""Statistics a reader can quote: intervals over seeds and over test examples.

Every results table of the experiments reports, for a metric measured once per seed,
the mean with a 95% percentile-bootstrap confidence interval over the seeds and ``n``
(:func:`summarize`); an accuracy also gets the Wilson score interval over the test
examples (:func:`wilson_interval`). Host-side NumPy/SciPy, not traced.

With the 3-5 seeds a CPU affords, the percentile bootstrap is known to under-cover
(its interval is about ``sqrt((n - 1) / n)`` of the normal-theory one and ignores the
t quantile): read it as the spread the seeds showed, not as a guarantee.
"""

from __future__ import annotations

import math

import numpy as np

CONFIDENCE = 0.95
N_RESAMPLES = 10_000
SEED = 0  # the bootstrap's own generator: the same table every time


def _values(name: str, values) -> np.ndarray:
    a = np.asarray(values, np.float64).reshape(-1)
    if a.size == 0:
        raise ValueError(f"{name} must hold at least one value; got none.")
    return a


def _check_confidence(confidence: float) -> float:
    if not (isinstance(confidence, (int, float)) and 0.0 < confidence < 1.0):
        raise ValueError(f"confidence must lie in (0, 1); got {confidence!r}.")
    return float(confidence)


def bootstrap_ci(
    values,
    *,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
) -> tuple[float, float]:
    """The percentile-bootstrap confidence interval of the mean of ``values``.

    ``scipy.stats.bootstrap`` (``method="percentile"``) with its own fixed generator, so
    a table regenerates to the same digits. One value has no interval: ``(nan, nan)``.
    Values that are all equal give the degenerate ``(v, v)``. A non-finite value (a
    diverged seed) makes the interval ``(nan, nan)``: a mean over it means nothing.
    """
    a = _values("values", values)
    confidence = _check_confidence(confidence)
    if a.size < 2 or not np.all(np.isfinite(a)):
        return (math.nan, math.nan)
    if np.ptp(a) == 0.0:
        return (float(a[0]), float(a[0]))
    from scipy import stats

    res = stats.bootstrap(
        (a,),
        lambda x, axis: np.mean(x, axis=axis),
        confidence_level=confidence,
        n_resamples=n_resamples,
        method="percentile",
        vectorized=True,
        rng=np.random.default_rng(seed),
    )
    return (float(res.confidence_interval.low), float(res.confidence_interval.high))


def wilson_interval(
    accuracy: float, n: int, *, confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``accuracy`` measured on ``n``
    examples: the uncertainty from the finite test set (Wilson 1927).

    For a mean accuracy over seeds on one test set, it is the interval of that test set
    of ``n`` examples, not of ``n`` times the seeds: the seeds see the same examples.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be an int >= 1 (test examples); got {n!r}.")
    if not 0.0 <= accuracy <= 1.0:
        raise ValueError(f"accuracy must lie in [0, 1]; got {accuracy!r}.")
    confidence = _check_confidence(confidence)
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + confidence / 2))
    denom = 1.0 + z * z / n
    centre = (accuracy + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(accuracy * (1 - accuracy) / n + z * z / (4 * n * n))
    return (max(0.0, centre - half), min(1.0, centre + half))


def summarize(values, *, confidence: float = CONFIDENCE) -> dict:
    """``{"n", "mean", "std", "min", "max", "ci_low", "ci_high"}`` of per-seed values
    (``std``: the sample standard deviation, 0 for one seed)."""
    a = _values("values", values)
    low, high = bootstrap_ci(a, confidence=confidence)
    return {
        "n": int(a.size),
        "mean": float(a.mean()),
        "std": float(a.std(ddof=1)) if a.size > 1 else 0.0,
        "min": float(a.min()),
        "max": float(a.max()),
        "ci_low": low,
        "ci_high": high,
    }


def fmt_ci(stats: dict, digits: int = 3, scale: float = 1.0) -> str:
    """``"0.912 [0.905, 0.918]"``: the mean and its interval (``scale``: e.g. 100 for
    percent); ``"nan"`` where the mean is not finite; the mean alone where there is no
    interval (one seed)."""
    mean = stats["mean"] * scale
    if not math.isfinite(mean):
        return "nan"
    low, high = stats["ci_low"] * scale, stats["ci_high"] * scale
    if not (math.isfinite(low) and math.isfinite(high)):
        return f"{mean:.{digits}g}"
    return f"{mean:.{digits}g} [{low:.{digits}g}, {high:.{digits}g}]"
