"""Choose the operating threshold on validation scores by a named policy, and say how sure
that choice is.

- ``max_escape_rate: x`` (the default, x = 2 %): the most lenient threshold whose
  Clopper-Pearson *upper* bound on the escape rate (defective parts passed / defective
  parts) holds x at ``confidence``; lenient so that as few good parts as possible are
  rejected. A validation set too small to promise x (with no escape among n defective
  parts the bound is 1 - (1 - c)^(1/n), so 2 % at 95 % needs 149) falls back to the
  strictest sensible threshold, the most lenient one that lets no validation defect
  pass, and says so: ``promise.held`` false, how many more defective images it needs,
  and a ``warning`` that the run's log, ``train`` and the manifest carry;
  The choice is a fixed-sequence test from strict to lenient, so it keeps its promise
  *after* the selection: the chosen threshold lies below the (k + 1)-th lowest
  validation defect score (k the escapes allowed), whose true escape rate is
  Beta(k + 1, n - k) distributed whatever the scores, and ``bounds.upper(k, n)`` is that
  distribution's ``confidence`` quantile: P(true escape rate <= the reported upper bound
  <= x) >= ``confidence`` exactly (no winner's curse from picking the most lenient).
  A rate *measured* on m new defective parts also carries their sampling noise: compare
  it with ``bounds.predicted_upper(k, n, m)``, not with the bound on the true rate;
- ``max_false_reject_rate: y``: the mirror image: the lowest threshold (the one that
  catches the most defects) whose upper bound on the false-reject rate (good parts
  rejected / good parts) holds y; too few good validation parts to promise y (1 % at 95 %
  needs 299) fall back to the lowest threshold that rejects none of them, with the same
  ``promise`` and ``warning``;
- ``max_f1``: the threshold with the best F1 for the defect class.

Whatever the policy, the result carries its ``confidence``: the escape and false-reject
rates at the threshold with their counts (k of n) and exact bounds (``bounds``), a
compact trade-off ``curve`` (~20 points) for ``train`` and the workbench, and an
``uncertain_band`` below the threshold (scores there fail as ``uncertain``: reject and
review) whose width validation chose: the narrowest band whose escape upper bound holds
the stricter ``band.escape_rate``, within ``band.max_review_rate`` of good parts sent to
review (the whole review budget when the set cannot promise the stricter rate).

A part fails when its defect score is >= the threshold. A validation set without both
good and defective images is an error: no threshold can be chosen honestly from it.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from .. import TrainingError
from . import bounds
from .metrics import binary_at
from .thresholdtext import a_or_an, pct

CURVE_POINTS = 20
log = logging.getLogger(__name__)


def choose(
    truth: np.ndarray,
    score: np.ndarray,
    policy: str,
    value: float = 0.0,
    *,
    confidence: float = 0.95,
    band=None,
) -> dict:
    """``{"value", "policy", "target", "metrics", "confidence", "promise", "warning",
    "curve", "uncertain_band"}`` for the manifest. ``band``: the uncertain band's goal
    (``escape_rate``, ``max_review_rate`` attributes, e.g. ``ThresholdConfig.band``); None
    or a review rate of 0: no band."""
    truth = np.asarray(truth, bool)
    score = np.asarray(score, np.float64)
    n_def, n_good = int(truth.sum()), int((~truth).sum())
    if not n_def or not n_good:
        missing = "defective" if not n_def else "good"
        raise TrainingError(
            f"the validation set has no {missing} images ({n_good} good, {n_def} defective): "
            "a threshold cannot be chosen; add labelled images of both kinds or give a split "
            "whose val/ holds both"
        )
    candidates = np.unique(np.r_[score, np.nextafter(score.max(), np.inf)])
    # counts of the decision score >= t, for every candidate t at once
    s_def = np.sort(score[truth])
    s_good = np.sort(score[~truth])
    escaped = np.searchsorted(s_def, candidates, side="left")  # defects below t: they pass
    caught = n_def - escaped
    rejected_good = n_good - np.searchsorted(s_good, candidates, side="left")
    if policy == "max_f1":
        f1 = 2 * caught / np.maximum(caught + n_def + rejected_good, 1)
        best = np.flatnonzero(f1 == f1.max())
        i = best[len(best) // 2]  # the middle of a plateau is the most robust choice
    elif policy == "max_escape_rate":
        k_max = bounds.largest_k(n_def, value, confidence)
        # fixed-sequence testing, strict to lenient: each candidate's hypothesis "its true
        # escape rate is above the target" is rejected when its upper bound holds the
        # target; walk on while it is, stop at the first that is not. (Escapes grow with
        # t, so this is the highest t with at most k_max escapes.) When no count promises
        # the rate: the highest t that lets none pass, the strictest sensible.
        holds = escaped <= (0 if k_max is None else k_max)
        first_failing = np.flatnonzero(~holds)
        i = max((first_failing[0] if len(first_failing) else len(candidates)) - 1, 0)
    elif policy == "max_false_reject_rate":
        # the mirror of the escape policy: the lowest threshold (most defects caught) whose
        # false-reject upper bound holds the target; false rejects only fall as t grows, so
        # the thresholds that hold it are one run at the lenient end. When no count promises
        # the rate: the lowest threshold that rejects no good validation image.
        k_max = bounds.largest_k(n_good, value, confidence)
        ok = np.flatnonzero(rejected_good <= (0 if k_max is None else k_max))
        i = ok.min()  # never empty: the top candidate rejects nothing
    else:
        raise TrainingError(f"unknown threshold policy {policy!r}")
    t = float(min(max(_midpoint(candidates, i, score), 0.0), 1.0))
    return describe(
        truth,
        score,
        t,
        policy=policy,
        target=None if policy == "max_f1" else value,
        confidence=confidence,
        band=band,
    )


def choose_by(setting, truth: np.ndarray, score: np.ndarray) -> dict:
    """``choose`` with a ``ThresholdConfig``'s policy, rate, confidence and uncertain band;
    its warning goes to the log too."""
    chosen = choose(
        truth,
        score,
        setting.policy,
        setting.value,
        confidence=setting.confidence,
        band=setting.band,
    )
    if chosen["warning"]:
        log.warning("threshold: %s", chosen["warning"])
    return chosen


def describe(
    truth: np.ndarray,
    score: np.ndarray,
    threshold: float,
    *,
    policy: str | None = None,
    target: float | None = None,
    confidence: float = 0.95,
    band=None,
    on: str = "validation",
    fallback: str | None = None,
    images: str = "validation images",
) -> dict:
    """The threshold as the manifest carries it, for a threshold already chosen: its
    metrics, confidence, promise, curve and uncertain band on these scores. ``fallback``:
    what the threshold fell back to when the promise is not held (the warning says it;
    default: the escape-rate policy's fallback); ``images``: what the scores are of, as the
    warning names them."""
    truth = np.asarray(truth, bool)
    score = np.asarray(score, np.float64)
    t = float(threshold)
    conf = confidence_at(truth, score, t, confidence, on)
    promise = _promise(policy, target, conf, confidence, fallback, images)
    return {
        "value": t,
        "policy": policy,
        "target": target,
        "metrics": {"on": on, **binary_at(truth, score, t)},
        "confidence": conf,
        "promise": promise,
        "warning": promise["warning"] if promise else None,
        "curve": curve(truth, score, confidence, t, on),
        "uncertain_band": uncertain_band(truth, score, t, band, confidence),
    }


def confidence_at(
    truth: np.ndarray, score: np.ndarray, t: float, confidence: float = 0.95, on: str = "validation"
) -> dict:
    """Escape and false-reject rates at ``t`` with their counts and exact bounds."""
    truth = np.asarray(truth, bool)
    fail = np.asarray(score, np.float64) >= t
    return {
        "on": on,
        "level": confidence,
        "method": bounds.METHOD,
        "escape_rate": bounds.rate_block(int(np.sum(truth & ~fail)), int(truth.sum()), confidence),
        "false_reject_rate": bounds.rate_block(
            int(np.sum(~truth & fail)), int((~truth).sum()), confidence
        ),
    }


def _promise(
    policy,
    target,
    conf: dict,
    confidence: float,
    fallback: str | None = None,
    images: str = "validation images",
) -> dict | None:
    """Whether the bound of the policy's rate holds its target, and what it would take."""
    if policy not in ("max_escape_rate", "max_false_reject_rate") or target is None:
        return None
    of = "escape_rate" if policy == "max_escape_rate" else "false_reject_rate"
    kind = "defective" if of == "escape_rate" else "good"
    block = conf[of]
    held = block["upper"] is not None and block["upper"] <= target + 1e-12
    need = bounds.trials_needed(target, confidence)
    out = {
        "of": of,
        "rate": target,
        "upper": block["upper"],
        "held": bool(held),
        f"{kind}_needed": need,
        f"more_{kind}_needed": None if need is None else max(0, need - block["n"]),
        "warning": None,
    }
    if held:
        return out
    what = "escape rate" if of == "escape_rate" else "false-reject rate"
    tpct, cpct = pct(target), pct(confidence)
    if block["n"] == 0:
        why = f"there are no {kind} {images}, so the {what} is unknown"
    elif need is None:
        why = f"no finite validation set can promise {a_or_an(what)} of 0"
    elif block["n"] < need:
        why = (
            f"{block['n']} {kind} {images} cannot promise {a_or_an(what)} of {tpct} at "
            f"{cpct} confidence (even with none wrong the bound is "
            f"{pct(bounds.upper(0, block['n'], confidence))}); that needs {need} "
            f"({need - block['n']} more)"
        )
    else:
        why = (
            f"the {what}'s {cpct} upper bound at this threshold is {pct(block['upper'])}, "
            f"above {tpct} ({block['k']} of {block['n']})"
        )
    if fallback:
        why += f"; {fallback}"
    elif of == "escape_rate":
        why += (
            "; the threshold falls back to the strictest sensible one, the most lenient that "
            "lets no validation defect pass, and promises only that bound"
        )
    else:
        why += (
            "; the threshold falls back to the lowest that rejects no good validation image, "
            "and promises only that bound"
        )
    out["warning"] = why
    return out


def curve(
    truth: np.ndarray, score: np.ndarray, confidence: float, chosen: float, on: str = "validation"
) -> dict:
    """The trade-off on these scores at ~``CURVE_POINTS`` thresholds (quantiles of all
    scores, strict to lenient), each with escapes and false rejects and their upper
    bounds; ``chosen`` is the threshold in use."""
    truth = np.asarray(truth, bool)
    score = np.asarray(score, np.float64)
    n_def, n_good = int(truth.sum()), int((~truth).sum())
    qs = np.quantile(score, np.linspace(0.0, 1.0, CURVE_POINTS - 1)) if len(score) else []
    ts = np.unique(np.r_[qs, np.nextafter(score.max(), np.inf), chosen])
    points = []
    for t in ts:
        fail = score >= t
        k_e, k_f = int(np.sum(truth & ~fail)), int(np.sum(~truth & fail))
        ue, uf = bounds.upper(k_e, n_def, confidence), bounds.upper(k_f, n_good, confidence)
        points.append(
            {
                "threshold": _short(t),
                "escapes": k_e,
                "escape_upper": None if ue is None else round(ue, 6),
                "false_rejects": k_f,
                "false_reject_upper": None if uf is None else round(uf, 6),
            }
        )
    return {
        "on": on,
        "level": confidence,
        "defective": n_def,
        "good": n_good,
        "chosen": _short(chosen),
        "points": points,
    }


def uncertain_band(truth, score, t: float, band, confidence: float = 0.95) -> dict | None:
    """The band [lower, t) whose scores fail as ``uncertain``, chosen on these scores: the
    narrowest whose escape upper bound holds ``band.escape_rate``, with at most
    ``band.max_review_rate`` of the good parts in it; when no such band exists, the widest
    within that review budget. None without a band goal (or a review budget of 0)."""
    if band is None or not band.max_review_rate:
        return None
    truth = np.asarray(truth, bool)
    score = np.asarray(score, np.float64)
    n_def, n_good = int(truth.sum()), int((~truth).sum())
    budget = math.floor(band.max_review_rate * n_good + 1e-9)
    under = score < t
    below, inv = np.unique(score[under], return_inverse=True)
    n_at = np.bincount(inv, minlength=len(below))
    d_at = np.bincount(inv, weights=truth[under], minlength=len(below)).astype(np.int64)
    below, g_at, d_at = below[::-1], (n_at - d_at)[::-1], d_at[::-1]  # widening the band
    # band j holds the scores below[0..j-1] (j = 0: no band)
    good_in = np.r_[0, np.cumsum(g_at)]
    esc = int(d_at.sum()) - np.r_[0, np.cumsum(d_at)]
    allowed = np.flatnonzero(good_in <= budget)
    j_max = int(allowed.max())
    goal_k = bounds.largest_k(n_def, band.escape_rate, confidence)
    meets = [j for j in allowed if goal_k is not None and esc[j] <= goal_k]
    j = int(meets[0]) if meets else j_max
    if j == 0:
        lower = t
    elif j < len(below):
        lower = float((below[j - 1] + below[j]) / 2)
    else:
        lower = float(below[j - 1]) / 2
    k_esc = int(esc[j])
    escape = bounds.rate_block(k_esc, n_def, confidence)
    review = bounds.rate_block(int(good_in[j]), n_good, confidence)
    held = goal_k is not None and k_esc <= goal_k
    warning = None
    if not budget:
        warning = (
            f"no band: {pct(band.max_review_rate)} of {n_good} good validation images is "
            "less than one part to review"
        )
    elif not held:
        need = bounds.trials_needed(band.escape_rate, confidence)
        warning = (
            f"the band cannot promise an escape rate of {pct(band.escape_rate)} within "
            f"{pct(band.max_review_rate)} of good parts to review"
            + (
                f" ({n_def} defective validation images; that needs at least {need})"
                if need is not None and n_def < need
                else ""
            )
            + "; it spends the whole review budget"
        )
    return {
        "lower": lower,
        "margin": float(t - lower),
        "goal": {
            "escape_rate": band.escape_rate,
            "max_review_rate": band.max_review_rate,
            "held": bool(held),
        },
        "review_rate": review,
        "escape_rate": escape,
        "caught_in_band": int(esc[0] - k_esc),
        "parts_in_band": int(np.sum((score >= lower) & (score < t))),
        "warning": warning,
    }


def band_effect(
    truth: np.ndarray, score: np.ndarray, t: float, margin: float, confidence: float = 0.95
) -> dict:
    """What a band of width ``margin`` below ``t`` does on these parts: the share of good
    parts it sends to review, the share of all parts in it, and the escape rate without
    and with it (counts and bounds)."""
    truth = np.asarray(truth, bool)
    score = np.asarray(score, np.float64)
    lower = t - margin
    in_band = (score >= lower) & (score < t)
    n_def, n_good = int(truth.sum()), int((~truth).sum())
    return {
        "margin": float(margin),
        "review_rate": bounds.rate_block(int(np.sum(in_band & ~truth)), n_good, confidence),
        "review_share": float(in_band.mean()) if len(score) else None,
        "escape_rate_without": bounds.rate_block(
            int(np.sum(truth & (score < t))), n_def, confidence
        ),
        "escape_rate": bounds.rate_block(int(np.sum(truth & (score < lower))), n_def, confidence),
    }


def band_margin(threshold: dict | None) -> float:
    """The uncertain band's width a manifest's (or run's) threshold carries; 0 without one."""
    band = (threshold or {}).get("uncertain_band") or {}
    return float(band.get("margin") or 0.0)


def _short(t: float) -> float:
    """A curve's threshold, short in the manifest but apart from its neighbours."""
    return float(f"{float(t):.8g}")


def _midpoint(candidates: np.ndarray, i: int, score: np.ndarray) -> float:
    """Halfway between candidate i and the next lower score: same decisions, more margin."""
    t = candidates[i]
    lower = score[score < t]
    return float((t + lower.max()) / 2) if len(lower) else float(t)
