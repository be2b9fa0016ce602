"""Control charts as small pure functions over numpy arrays; storage and MQTT stay outside.

Definitions and default constants follow the NIST/SEMATECH e-Handbook of Statistical Methods
(https://www.itl.nist.gov/div898/handbook/), section cited beside each one.

The charted statistic is a standardised ``z`` per subgroup: 0 at the baseline rate, 1 per
standard deviation. For a p-chart with few expected rejects per subgroup (2 % of 200 parts is
4) the normal approximation behind ``p +- 3 sqrt(p(1-p)/n)`` (e-Handbook 6.3.3.2) is poor: the
upper 3-sigma limit is crossed by chance once in ~123 subgroups, not ~370. ``binomial_z`` maps
each count to the normal quantile of its exact binomial mid-p cumulative probability (a
"Q statistic"), so 3 sigma keeps the 0.135 % tail it has on a normal statistic, the limits
follow the subgroup size, and the run rules, EWMA and CUSUM all read the same ``z``.

Example::

    z = binomial_z(rejects, parts, p0=0.02)
    fired = run_rules(z, DEFAULT_RULES)          # {"we1_beyond_3s": bool array, ...}
    e, lim = ewma(z); s_hi, s_lo = cusum(z)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist

import numpy as np

_N01 = NormalDist()

# e-Handbook 6.3.2 (What are variables control charts?): control limits at 3 sigma.
SIGMA_LIMIT = 3.0
# e-Handbook 6.3.2.4 (EWMA control charts): EWMA_t = lambda*Y_t + (1-lambda)*EWMA_{t-1}, limits
# +-L*s*sqrt(lambda/(2-lambda)*(1-(1-lambda)^(2t))); lambda between 0.2 and 0.3 is usual. With
# lambda 0.2 and L 3 the in-control ARL is ~560 and a 1-sigma shift is found in ~10 subgroups.
EWMA_LAMBDA = 0.2
EWMA_L = 3.0
# e-Handbook 6.3.2.3 (Cusum control charts): tabular CUSUM with reference value k = delta/2 for a
# shift of delta sigmas to detect, and decision interval h (4 or 5 sigma are usual). Our 2 % -> 3 %
# at 200 parts is a shift of ~1 sigma: k 0.5; h 5 gives an in-control ARL of ~465 (one-sided ~930).
CUSUM_K = 0.5
CUSUM_H = 5.0

# The Western Electric rules (e-Handbook 6.3.2, "WECO rules") and the Nelson rules (Nelson,
# J. Quality Technology 16(4), 1984) that go beyond them.
RULES = {
    "we1_beyond_3s": "one point beyond 3 sigma",
    "we2_2of3_beyond_2s": "two of three points beyond 2 sigma, same side",
    "we3_4of5_beyond_1s": "four of five points beyond 1 sigma, same side",
    "we4_8_same_side": "eight points in a row on one side of the centre line",
    "n3_6_trend": "six points in a row steadily increasing or decreasing",
    "n4_14_alternating": "fourteen points in a row alternating up and down",
    "n7_15_within_1s": "fifteen points in a row within 1 sigma (stratification)",
    "n8_8_outside_1s": "eight points in a row beyond 1 sigma, either side (mixture)",
}
# The default set: Western Electric rules 1-3 on the upper side (a reject rate going up). With
# np = 4 the counts are discrete: "8 on one side" alone false-alarms every ~210 subgroups, so it
# is opt-in. Measured by `inspector spc bench` (docs/bench-spc.json): rules 1-3 ~530 subgroups,
# with EWMA and CUSUM ~400; each rule's own figure is there too.
DEFAULT_RULES = ("we1_beyond_3s", "we2_2of3_beyond_2s", "we3_4of5_beyond_1s")


@lru_cache(maxsize=256)
def _z_table(n: int, p0: float) -> np.ndarray:
    """z for every count 0..n of a binomial(n, p0): normal quantile of the mid-p CDF."""
    if n <= 0:
        return np.zeros(1)
    k = np.arange(n + 1, dtype=float)
    logfact = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, n + 1, dtype=float)))])
    p0 = min(max(p0, 1e-12), 1 - 1e-12)
    logpmf = logfact[n] - logfact - logfact[::-1] + k * math.log(p0) + (n - k) * math.log1p(-p0)
    pmf = np.exp(logpmf - logpmf.max())
    pmf /= pmf.sum()
    mid = np.cumsum(pmf) - pmf / 2
    mid = np.clip(mid, 1e-15, 1 - 1e-15)
    table = np.array([_N01.inv_cdf(float(m)) for m in mid])
    table.setflags(write=False)
    return table


def binomial_z(x: np.ndarray, n: np.ndarray, p0: float) -> np.ndarray:
    """Standardised statistic of ``x`` rejects out of ``n`` parts against baseline rate ``p0``.

    >>> binomial_z(np.array([4, 12]), np.array([200, 200]), 0.02).round(2)
    array([0.08, 3.22])
    """
    x = np.asarray(x, dtype=int)
    n = np.broadcast_to(np.asarray(n, dtype=int), x.shape)
    out = np.zeros(x.shape, dtype=float)
    for size in np.unique(n):
        sel = n == size
        out[sel] = _z_table(int(size), float(p0))[np.clip(x[sel], 0, size)]
    return out


def p_limits(p0: float, n: np.ndarray, sigmas: float = SIGMA_LIMIT) -> tuple[np.ndarray, ...]:
    """Classic p-chart limits per subgroup (e-Handbook 6.3.3.2): centre, lower, upper."""
    n = np.maximum(np.asarray(n, dtype=float), 1.0)
    s = np.sqrt(p0 * (1 - p0) / n)
    return np.full(n.shape, p0), np.maximum(p0 - sigmas * s, 0.0), np.minimum(p0 + sigmas * s, 1.0)


def p_probability_limits(p0: float, n: np.ndarray, sigmas: float = SIGMA_LIMIT) -> np.ndarray:
    """The upper limit in rate that ``binomial_z`` crosses at ``sigmas``: the smallest
    fraction of rejects whose z exceeds it, per subgroup (for drawing)."""
    n = np.asarray(n, dtype=int)
    out = np.ones(n.shape, dtype=float)
    for size in np.unique(n):
        table = _z_table(int(size), p0)
        above = np.nonzero(table > sigmas)[0]
        out[n == size] = above[0] / size if len(above) and size else 1.0
    return out


def baseline_rate(x: np.ndarray, n: np.ndarray, floor_parts: float = 0.5) -> float:
    """p-bar of a baseline period (e-Handbook 6.3.3.2): total rejects over total parts, never
    below ``floor_parts`` of a part (a clean baseline still leaves a chart that can fire)."""
    total = float(np.sum(n))
    if total <= 0:
        raise ValueError("the baseline has no parts")
    return max(float(np.sum(x)), floor_parts) / total


def u_chart(c: np.ndarray, n: np.ndarray, u0: float, sigmas: float = SIGMA_LIMIT):
    """u-chart for defects per part (e-Handbook 6.3.3.1): u, lower and upper limits,
    ``u0 +- 3 sqrt(u0 / n)``."""
    n = np.maximum(np.asarray(n, dtype=float), 1.0)
    u = np.asarray(c, dtype=float) / n
    s = np.sqrt(u0 / n)
    return u, np.maximum(u0 - sigmas * s, 0.0), u0 + sigmas * s


def ewma(z: np.ndarray, lam: float = EWMA_LAMBDA, L: float = EWMA_L):  # noqa: N803
    """EWMA of a standardised statistic (target 0, sigma 1) and its limit per point
    (e-Handbook 6.3.2.4); the chart signals where ``abs(e) > limit`` (or ``e > limit``)."""
    z = np.asarray(z, dtype=float)
    e = np.empty_like(z)
    acc = 0.0
    for i, v in enumerate(z):
        acc = lam * v + (1 - lam) * acc
        e[i] = acc
    t = np.arange(1, len(z) + 1)
    limit = L * np.sqrt(lam / (2 - lam) * (1 - (1 - lam) ** (2 * t)))
    return e, limit


def cusum(z: np.ndarray, k: float = CUSUM_K):
    """Tabular CUSUM of a standardised statistic (e-Handbook 6.3.2.3): upper and lower sums,
    ``S_hi = max(0, S_hi + z - k)``, ``S_lo = max(0, S_lo - z - k)``; signal above ``h``."""
    z = np.asarray(z, dtype=float)
    hi = np.empty_like(z)
    lo = np.empty_like(z)
    a = b = 0.0
    for i, v in enumerate(z):
        a = max(0.0, a + v - k)
        b = max(0.0, b - v - k)
        hi[i], lo[i] = a, b
    return hi, lo


def _windows(flags: np.ndarray, width: int) -> np.ndarray:
    """Number of True in the window of ``width`` ending at each index (0 before it is full)."""
    c = np.concatenate([[0], np.cumsum(flags.astype(int))])
    out = np.zeros(len(flags), dtype=int)
    if len(flags) >= width:
        out[width - 1 :] = c[width:] - c[:-width]
    return out


def _runs(flags: np.ndarray) -> np.ndarray:
    """Length of the run of True ending at each index."""
    flags = np.asarray(flags, dtype=bool)
    idx = np.arange(len(flags))
    last_false = np.maximum.accumulate(np.where(flags, -1, idx)) if len(flags) else idx
    return idx - last_false


def run_rules(z: np.ndarray, rules=tuple(RULES), side: str = "both") -> dict[str, np.ndarray]:
    """For each rule, a bool array: True at each subgroup that completes the rule's pattern.

    ``side``: ``both``, or ``upper`` (only patterns above the centre line count; a quality
    chart of a reject rate cares about the rate going up). Zone rules (2 of 3, 4 of 5) fire
    at a point that is itself one of the pattern's points, so one pattern is one signal.
    """
    z = np.asarray(z, dtype=float)
    up_ok, down_ok = True, side == "both"
    out = {}
    for rule in rules:
        if rule == "we1_beyond_3s":
            f = (z > SIGMA_LIMIT) & up_ok | (z < -SIGMA_LIMIT) & down_ok
        elif rule in ("we2_2of3_beyond_2s", "we3_4of5_beyond_1s"):
            lim, need, width = (2.0, 2, 3) if rule.startswith("we2") else (1.0, 4, 5)
            hi, lo = z > lim, z < -lim
            f = (hi & (_windows(hi, width) >= need)) & up_ok
            f |= (lo & (_windows(lo, width) >= need)) & down_ok
        elif rule == "we4_8_same_side":
            f = (_runs(z > 0) >= 8) & up_ok | (_runs(z < 0) >= 8) & down_ok
        elif rule == "n3_6_trend":
            d = np.diff(z, prepend=np.nan)
            f = (_runs(d > 0) >= 5) & up_ok | (_runs(d < 0) >= 5) & down_ok
        elif rule == "n4_14_alternating":
            d = np.diff(z)
            alt = np.concatenate([[False, False], np.sign(d[1:]) * np.sign(d[:-1]) < 0])
            f = _runs(alt) >= 12
        elif rule == "n7_15_within_1s":
            f = _runs(np.abs(z) < 1.0) >= 15
        elif rule == "n8_8_outside_1s":
            f = _runs(np.abs(z) > 1.0) >= 8
        else:
            raise ValueError(f"unknown rule {rule!r} (known: {', '.join(RULES)})")
        out[rule] = np.asarray(f, dtype=bool)
    return out


def rule_span(rule: str) -> int:
    """How many subgroups a rule looks at (the subgroups an alarm names)."""
    return {
        "we1_beyond_3s": 1,
        "we2_2of3_beyond_2s": 3,
        "we3_4of5_beyond_1s": 5,
        "we4_8_same_side": 8,
        "n3_6_trend": 6,
        "n4_14_alternating": 14,
        "n7_15_within_1s": 15,
        "n8_8_outside_1s": 8,
    }[rule]


@dataclass(frozen=True)
class Signals:
    """Every chart's verdict per subgroup for one series."""

    z: np.ndarray
    rules: dict[str, np.ndarray]
    ewma: np.ndarray
    ewma_limit: np.ndarray
    cusum_hi: np.ndarray
    cusum_lo: np.ndarray

    def out_of_control(
        self, cusum_h: float = CUSUM_H, side: str = "upper"
    ) -> dict[str, np.ndarray]:
        """Per chart (each rule, ``ewma``, ``cusum``): True where that chart signals."""
        out = dict(self.rules)
        e_hi = self.ewma > self.ewma_limit
        e_lo = self.ewma < -self.ewma_limit
        out["ewma"] = e_hi | (e_lo if side == "both" else False)
        out["cusum"] = (self.cusum_hi > cusum_h) | (
            (self.cusum_lo > cusum_h) if side == "both" else False
        )
        return out


def evaluate(
    z: np.ndarray,
    rules=DEFAULT_RULES,
    side: str = "upper",
    lam: float = EWMA_LAMBDA,
    L: float = EWMA_L,  # noqa: N803
    k: float = CUSUM_K,
) -> Signals:
    """Run every chart over one series of standardised subgroup statistics."""
    e, lim = ewma(z, lam, L)
    hi, lo = cusum(z, k)
    return Signals(np.asarray(z, float), run_rules(z, rules, side), e, lim, hi, lo)
