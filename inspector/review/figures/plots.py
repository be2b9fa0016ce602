"""Small line charts drawn by the server as SVG (no script, no chart library): the training
loss while a run goes, ROC and precision-recall curves of evaluation reports.

``chart`` turns series of (x, y) into what ``templates/_chart.html`` draws: polylines in a
fixed box, ticks and labels. The curves come from the report's own predictions (label and
defect score per image); nothing here decides or scores a part.
"""

from __future__ import annotations

import math

W, H, PAD = 320, 200, 36  # the plot box (px) and the margin for ticks and labels


def _finite(x) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def _ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    if hi <= lo:
        return [lo]
    step = (hi - lo) / n
    return [lo + i * step for i in range(n + 1)]


def chart(series: list[dict], x_label: str, y_label: str, x_range=None, y_range=None) -> dict:
    """``series``: [{"name", "cls", "points": [(x, y), ...]}] -> polylines in the box, with
    ticks. Ranges default to the data's (y from 0)."""
    pts = [
        (float(x), float(y)) for s in series for x, y in s["points"] if _finite(x) and _finite(y)
    ]
    if not pts:
        return {"empty": True}
    x0, x1 = x_range or (min(p[0] for p in pts), max(p[0] for p in pts))
    y0, y1 = y_range or (0.0, max(p[1] for p in pts) or 1.0)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)

    def sx(x: float) -> float:
        return round(PAD + (x - x0) / (x1 - x0) * (W - PAD - 8), 1)

    def sy(y: float) -> float:
        return round(H - PAD + 8 - (y - y0) / (y1 - y0) * (H - PAD), 1)

    lines = []
    for s in series:
        ok = [(x, y) for x, y in s["points"] if _finite(x) and _finite(y)]
        if ok:
            xy = [(sx(float(x)), sy(float(y))) for x, y in ok]
            coords = " ".join(f"{x},{y}" for x, y in xy)
            dots = xy if len(xy) <= 3 else []  # a line of one point draws nothing: mark it
            lines.append(
                {"name": s["name"], "cls": s.get("cls", ""), "points": coords, "dots": dots}
            )
    return {
        "empty": False,
        "w": W,
        "h": H + 8,
        "x_label": x_label,
        "y_label": y_label,
        "left": PAD,
        "bottom": sy(y0),
        "right": sx(x1),
        "top": sy(y1),
        "xticks": [{"at": sx(t), "text": f"{t:.3g}"} for t in _ticks(x0, x1)],
        "yticks": [{"at": sy(t), "text": f"{t:.3g}"} for t in _ticks(y0, y1)],
        "lines": lines,
    }


def history_chart(rows: list[dict]) -> dict:
    """Loss (and validation loss) per epoch from ``history.csv``'s rows."""
    series = []
    for key, cls in (("loss", "s1"), ("val_loss", "s2")):
        points = [(i + 1, r.get(key)) for i, r in enumerate(rows) if _finite(r.get(key))]
        if points:
            series.append(
                {"name": key.replace("val_", "validation "), "cls": cls, "points": points}
            )
    return (
        chart(series, "epoch", "loss", x_range=(1, max(2, len(rows))))
        if series
        else {"empty": True}
    )


def roc_pr(predictions: dict, is_defect) -> tuple[list, list]:
    """ROC (false-reject rate, defects caught) and PR (recall, precision) points of one
    report, one point per distinct score from the strictest threshold down."""
    rows = [
        (float(r["defect_score"]), bool(is_defect(r.get("label", ""))))
        for r in predictions.values()
        if _finite(r.get("defect_score"))
    ]
    n_def = sum(d for _, d in rows)
    n_good = len(rows) - n_def
    if not n_def or not n_good:
        return [], []
    rows.sort(key=lambda r: -r[0])
    roc, pr, tp, fp, i = [(0.0, 0.0)], [], 0, 0, 0
    while i < len(rows):
        score = rows[i][0]
        while i < len(rows) and rows[i][0] == score:
            tp += rows[i][1]
            fp += not rows[i][1]
            i += 1
        roc.append((fp / n_good, tp / n_def))
        pr.append((tp / n_def, tp / (tp + fp)))
    return roc, pr


def report_charts(reports: list[tuple[str, dict, object]]) -> dict:
    """ROC and PR charts of reports [(name, predictions, is_defect)]."""
    rocs, prs = [], []
    for (name, predictions, is_defect), cls in zip(reports, ("s1", "s2"), strict=False):
        roc, pr = roc_pr(predictions, is_defect)
        rocs.append({"name": name, "cls": cls, "points": roc})
        prs.append({"name": name, "cls": cls, "points": pr})
    unit = (0.0, 1.0)
    return {
        "roc": chart(rocs, "false-reject rate", "defects caught", unit, unit),
        "pr": chart(prs, "recall (defects caught)", "precision", unit, unit),
    }
