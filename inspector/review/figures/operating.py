"""The operating point: what a decision threshold trades, escapes against false rejects.

For each candidate threshold t (a part fails when its defect score >= t): on a report's
images (its ``predictions.csv``: label and defect score), the defective images it would
pass (escapes) and the good ones it would fail (false rejects); on the workbench's
recorded parts, how many the line would have rejected, and among the parts people have
labelled, the escapes and false rejects. The recorded parts carry the score of the model
that ran on the line, so their columns speak of that model. Counts only: the page shows
them beside the slider; nothing here is a new metric.
"""

from __future__ import annotations

import math

STEPS = 40  # thresholds on the slider besides the reports' own


def grid(extra: list[float] = ()) -> list[float]:
    """0.025 .. 0.975 in STEPS steps plus the thresholds the reports chose, sorted."""
    points = {round((i + 0.5) / STEPS, 6) for i in range(STEPS)}
    points |= {round(float(x), 6) for x in extra if _finite(x) and 0 <= float(x) <= 1}
    return sorted(points)


def _finite(x) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def at(defect: list[bool], score: list[float], t: float) -> dict:
    """Escapes (defective, score < t) and false rejects (good, score >= t) as k of n."""
    esc = sum(1 for d, s in zip(defect, score, strict=True) if d and s < t)
    fr = sum(1 for d, s in zip(defect, score, strict=True) if not d and s >= t)
    n_def = sum(defect)
    return {"escapes": esc, "defective": n_def, "false_rejects": fr, "good": len(defect) - n_def}


def report_points(predictions: dict, is_defect, thresholds: list[float]) -> list[dict] | None:
    """``at`` for each threshold over a report's predictions; None without scores."""
    truth, scores = [], []
    for row in predictions.values():
        if not _finite(row.get("defect_score")):
            continue
        truth.append(bool(is_defect(row.get("label", ""))))
        scores.append(float(row["defect_score"]))
    if not scores:
        return None
    return [at(truth, scores, t) for t in thresholds]


def recorded_points(parts: list[dict], good: str, unsure: str, thresholds) -> list[dict]:
    """For each threshold: the recorded parts the line would have rejected, and the
    escapes and false rejects among those people labelled (``unsure`` left out)."""
    scores = [float(p["score"]) for p in parts if _finite(p["score"])]
    labelled = [p for p in parts if p["label"] and p["label"] != unsure and _finite(p["score"])]
    truth = [p["label"] != good for p in labelled]
    lscores = [float(p["score"]) for p in labelled]
    out = []
    for t in thresholds:
        row = at(truth, lscores, t)
        row.update(rejected=sum(1 for s in scores if s >= t), parts=len(scores))
        out.append(row)
    return out
