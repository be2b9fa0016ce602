"""Choose the operating threshold on validation scores by a named policy.

- ``max_f1``: the threshold with the best F1 for the defect class;
- ``max_escape_rate: x``: defect recall >= 1 - x (the usual QA rule), and among those the
  threshold that rejects the fewest good parts;
- ``max_false_reject_rate: y``: at most a fraction y of good parts rejected, and among
  those the threshold that catches the most defects.

A part fails when its defect score is >= the threshold. A validation set without both
good and defective images is an error: no threshold can be chosen honestly from it.
"""

from __future__ import annotations

import numpy as np

from .. import TrainingError
from .metrics import binary_at


def choose(truth: np.ndarray, score: np.ndarray, policy: str, value: float = 0.0) -> dict:
    """``{"value", "policy", "target", "metrics"}`` for the manifest."""
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
    caught = n_def - np.searchsorted(s_def, candidates, side="left")
    rejected_good = n_good - np.searchsorted(s_good, candidates, side="left")
    recall = caught / n_def
    frr = rejected_good / n_good
    if policy == "max_f1":
        f1 = 2 * caught / np.maximum(caught + n_def + rejected_good, 1)
        best = np.flatnonzero(f1 == f1.max())
        i = best[len(best) // 2]  # the middle of a plateau is the most robust choice
        t = _midpoint(candidates, i, score)
    elif policy == "max_escape_rate":
        ok = np.flatnonzero(recall >= 1 - value - 1e-12)
        i = ok.max()  # the highest threshold that still catches enough: fewest false rejects
        t = _midpoint(candidates, i, score)
    elif policy == "max_false_reject_rate":
        ok = np.flatnonzero(frr <= value + 1e-12)
        if not len(ok):
            raise TrainingError(f"no threshold keeps false rejects at or below {value}")
        i = ok.min()  # the lowest such threshold: most defects caught
        t = _midpoint(candidates, i, score)
    else:
        raise TrainingError(f"unknown threshold policy {policy!r}")
    t = float(min(max(t, 0.0), 1.0))
    return {
        "value": t,
        "policy": policy,
        "target": None if policy == "max_f1" else value,
        "metrics": {"on": "validation", **binary_at(truth, score, t)},
    }


def _midpoint(candidates: np.ndarray, i: int, score: np.ndarray) -> float:
    """Halfway between candidate i and the next lower score: same decisions, more margin."""
    t = candidates[i]
    lower = score[score < t]
    return float((t + lower.max()) / 2) if len(lower) else float(t)
