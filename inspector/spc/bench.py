"""``inspector spc bench``: the figures of the SPC service, measured by simulation and by load.

- in-control average run length (ARL) to a false alarm of each run rule, of the default set,
  of EWMA and CUSUM, on a simulated 2 % reject rate in subgroups of 200 parts;
- detection delay of a sustained shift to 3 % (EWMA, CUSUM, rules);
- ingest rate into the embedded store and the process's memory over a long run.
"""

from __future__ import annotations

import logging
import resource
from pathlib import Path

import numpy as np

from . import charts

log = logging.getLogger(__name__)


def _rss_mb() -> float:
    """Resident memory now, in MiB (Linux /proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rules_run_lengths(z: np.ndarray, rules, side: str = "upper") -> np.ndarray:
    """Run lengths between signals of ``rules`` on one long series, restarting the rules
    after each signal (a pattern counts only when it lies wholly after the last signal)."""
    flags = charts.run_rules(z, rules, side)
    spans = {r: charts.rule_span(r) for r in rules}
    candidates = sorted({int(i) for r in rules for i in np.nonzero(flags[r])[0]})
    out, last = [], -1
    for i in candidates:
        if any(flags[r][i] and i - spans[r] + 1 > last for r in rules):
            out.append(i - last)
            last = i
    return np.asarray(out, dtype=float)


def _rules_now(hist: np.ndarray, rules) -> np.ndarray:
    """Whether each replicate's latest subgroup completes an upper-side pattern of ``rules``
    (the Western Electric rules, vectorised across replicates; ``hist``: reps x last points)."""
    z = hist[:, -1]
    sig = np.zeros(len(z), dtype=bool)
    for r in rules:
        if r == "we1_beyond_3s":
            sig |= z > charts.SIGMA_LIMIT
        elif r in ("we2_2of3_beyond_2s", "we3_4of5_beyond_1s"):
            lim, need, width = (2.0, 2, 3) if r.startswith("we2") else (1.0, 4, 5)
            sig |= (z > lim) & ((hist[:, -width:] > lim).sum(axis=1) >= need)
        elif r == "we4_8_same_side":
            sig |= (hist.shape[1] >= 8) & (hist[:, -8:] > 0).all(axis=1)
        else:
            raise ValueError(f"{r}: not simulated across replicates")
    return sig


def first_signals(
    p_after: float,
    kinds,
    *,
    n: int = 200,
    p0: float = 0.02,
    reps: int = 2000,
    horizon: int = 40_000,
    shift_at: int = 0,
    seed: int = 0,
    rules=charts.DEFAULT_RULES,
) -> np.ndarray:
    """Subgroups to the first signal of any chart in ``kinds`` (``rules``, ``ewma``,
    ``cusum``) per replicate, all charts starting fresh, for a process at ``p0`` that moves
    to ``p_after`` after ``shift_at`` subgroups. Counted from the shift; NaN for a replicate
    that signalled before it (or never, within ``horizon``)."""
    rng = np.random.default_rng(seed)
    table = charts._z_table(n, p0)
    lam, L, k, h = charts.EWMA_LAMBDA, charts.EWMA_L, charts.CUSUM_K, charts.CUSUM_H
    e = np.zeros(reps)
    s = np.zeros(reps)
    hist = np.zeros((reps, 0))
    first = np.full(reps, np.nan)
    done = np.zeros(reps, dtype=bool)
    for t in range(horizon):
        z = table[rng.binomial(n, p_after if t >= shift_at else p0, reps)]
        sig = np.zeros(reps, dtype=bool)
        if "ewma" in kinds:
            e = lam * z + (1 - lam) * e
            sig |= e > L * np.sqrt(lam / (2 - lam) * (1 - (1 - lam) ** (2 * (t + 1))))
        if "cusum" in kinds:
            s = np.maximum(0.0, s + z - k)
            sig |= s > h
        if "rules" in kinds:
            hist = np.concatenate([hist[:, -7:], z[:, None]], axis=1)
            sig |= _rules_now(hist, rules)
        new = sig & ~done
        first[new] = t + 1 - shift_at
        done |= sig
        if done.all():
            break
    first[first <= 0] = np.nan
    return first


def measure_arl(
    n: int = 200, p0: float = 0.02, subgroups: int = 2_000_000, seed: int = 1, reps: int = 4000
) -> dict:
    rng = np.random.default_rng(seed)
    z = charts.binomial_z(rng.binomial(n, p0, subgroups), np.full(subgroups, n), p0)
    per_rule = {}
    for rule in charts.RULES:
        rl = rules_run_lengths(z, (rule,))
        per_rule[rule] = round(float(rl.mean()), 1) if len(rl) else None
    default = rules_run_lengths(z, charts.DEFAULT_RULES)
    out = {
        "per_rule_upper_side": per_rule,
        "default_rules": list(charts.DEFAULT_RULES),
        "default_rules_arl": round(float(default.mean()), 1),
        "subgroups_simulated": subgroups,
    }
    for name, kinds in (
        ("ewma", ("ewma",)),
        ("cusum", ("cusum",)),
        ("all_charts", ("rules", "ewma", "cusum")),
    ):
        rl = first_signals(p0, kinds, n=n, p0=p0, reps=reps, seed=seed + len(name))
        out[f"{name}_arl"] = round(float(np.nanmean(rl)), 1)
    out["replicates"] = reps
    return out
