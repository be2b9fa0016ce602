"""Exact binomial (Clopper-Pearson) bounds on a rate seen as ``k`` events in ``n`` trials.

A threshold's escape rate is ``k`` defective parts passed out of ``n`` defective parts; its
false-reject rate ``k`` good parts failed out of ``n`` good ones. The true rate on the line
is unknown; Clopper-Pearson bounds hold it with at least the asked confidence whatever it
is (they invert the binomial test, no normal approximation), so they are honest for the
small counts of a validation set::

    upper(0, 150)        # 0.0198: no escape among 150 defective parts promises <= 2 %
    interval(3, 100)     # (0.0062, 0.0852), two-sided 95 %

A bound on the *true* rate is not a bound on the rate *measured* on a finite set of new
parts: that one also carries the new set's own sampling noise. ``predicted_upper`` bounds
it, exactly and after the selection ``max_escape_rate`` makes::

    predicted_upper(4, 500, 2000)   # 0.019: the escape rate measured on 2,000 new defects

Quantiles come from ``scipy.stats.beta`` when scipy is installed, else from the binomial
distribution function by bisection (exact to ~1e-12; the tests hold both to known values).
"""

from __future__ import annotations

import math

import numpy as np

try:  # scipy comes with scikit-image (the train extra); the fallback needs nothing
    from scipy.special import gammaln as _gammaln
    from scipy.stats import beta as _beta
except ImportError:  # pragma: no cover - exercised by the tests through _beta_ppf_exact
    _beta = _gammaln = None

METHOD = "clopper-pearson"


def _binom_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed in log space (no overflow for large n)."""
    if k < 0:
        return 0.0
    if k >= n or p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    lp, lq = math.log(p), math.log1p(-p)
    base = math.lgamma(n + 1)
    logs = [
        base - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq
        for i in range(k + 1)
    ]
    top = max(logs)
    return min(1.0, math.exp(top) * math.fsum(math.exp(v - top) for v in logs))


def _beta_ppf_exact(q: float, a: int, b: int) -> float:
    """The q-quantile of Beta(a, b) for whole a, b >= 1, by bisection on the identity
    I_p(a, b) = P(Binomial(a + b - 1, p) >= a)."""
    n, lo, hi = a + b - 1, 0.0, 1.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if 1.0 - _binom_cdf(a - 1, n, mid) < q:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-15:
            break
    return (lo + hi) / 2


def beta_ppf(q: float, a: int, b: int) -> float:
    if _beta is not None:
        return float(_beta.ppf(q, a, b))
    return _beta_ppf_exact(q, a, b)


def _check(k: int, n: int, confidence: float) -> None:
    if not (0 <= k <= n):
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def upper(k: int, n: int, confidence: float = 0.95) -> float | None:
    """One-sided upper bound: the true rate is at most this with ``confidence``
    (None without trials: nothing is known)."""
    _check(k, n, confidence)
    if n == 0:
        return None
    if k == n:
        return 1.0
    if k == 0:  # closed form, exact in floating point
        return 1.0 - (1.0 - confidence) ** (1.0 / n)
    return beta_ppf(confidence, k + 1, n - k)


def interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """Two-sided interval holding the true rate with ``confidence`` (None without trials)."""
    _check(k, n, confidence)
    if n == 0:
        return None
    alpha = 1.0 - confidence
    lo = 0.0 if k == 0 else beta_ppf(alpha / 2, k, n - k + 1)
    hi = 1.0 if k == n else beta_ppf(1 - alpha / 2, k + 1, n - k)
    return lo, hi


def largest_k(n: int, rate: float, confidence: float = 0.95) -> int | None:
    """The most events among ``n`` whose upper bound still holds ``rate`` (None: not even
    zero events do; the set is too small to promise it)."""
    if n == 0 or upper(0, n, confidence) > rate:
        return None
    lo, hi = 0, n  # upper() grows with k: the last k with upper(k) <= rate
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if upper(mid, n, confidence) <= rate:
            lo = mid
        else:
            hi = mid - 1
    return lo


def trials_needed(rate: float, confidence: float = 0.95) -> int | None:
    """The fewest trials that can promise ``rate`` (with no event among them); None for a
    rate of 0, which no finite set promises."""
    if rate <= 0.0:
        return None
    if rate >= 1.0:
        return 1
    n = max(1, math.ceil(math.log(1.0 - confidence) / math.log1p(-rate)))
    while upper(0, n, confidence) > rate:  # guard the rounding of the closed form
        n += 1
    while n > 1 and upper(0, n - 1, confidence) <= rate:
        n -= 1
    return n


def rate_block(k: int, n: int, confidence: float = 0.95) -> dict:
    """``{"k", "n", "rate", "upper", "interval"}``: a rate with its counts and bounds, as the
    manifest and the reports carry it (rate and bounds None when n is 0)."""
    iv = interval(k, n, confidence)
    return {
        "k": int(k),
        "n": int(n),
        "rate": k / n if n else None,
        "upper": upper(k, n, confidence),
        "interval": list(iv) if iv is not None else None,
    }


def predicted_upper(k: int, n: int, m: int, confidence: float = 0.95) -> float | None:
    """Upper prediction bound on the rate that will be *measured* on ``m`` new trials, for a
    threshold with ``k`` events among ``n`` that lies below the (k + 1)-th lowest of the
    ``n`` scores (as ``thresholds.choose`` sets it). The count among the new trials below
    the (k + 1)-th lowest of n exchangeable scores follows Beta-Binomial(m, k + 1, n - k)
    whatever the scores' distribution, so the bound is exact after the selection of the
    threshold and holds the new set's sampling noise too; with m -> infinity it becomes
    ``upper(k, n)``. None without trials (old or new)."""
    _check(k, n, confidence)
    if n == 0 or m <= 0:
        return None
    if k == n:
        return 1.0
    return float(np.searchsorted(prediction_cdf(k, n, m), confidence - 1e-12) / m)


def prediction_cdf(k: int, n: int, m: int) -> np.ndarray:
    """P(at most x of ``m`` new trials below the threshold), x = 0..m, for a threshold just
    below the (k + 1)-th lowest of ``n`` scores: the Beta-Binomial(m, k + 1, n - k)
    distribution function (see ``predicted_upper``); k < n, m >= 1."""
    a, b = k + 1, n - k
    x = np.arange(m + 1, dtype=np.float64)
    lg = _lgamma
    log_pmf = (
        lg(m + 1)
        - lg(x + 1)
        - lg(m - x + 1)
        + lg(x + a)
        + lg(m - x + b)
        - lg(m + a + b)
        - (lg(a) + lg(b) - lg(a + b))
    )
    cdf = np.cumsum(np.exp(log_pmf - log_pmf.max()))
    return cdf / cdf[-1]


def _lgamma(x):
    x = np.asarray(x, np.float64)
    if _gammaln is not None:
        return _gammaln(x)
    return np.vectorize(math.lgamma, otypes=[np.float64])(x)
