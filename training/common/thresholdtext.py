"""The words of a threshold: what ``train`` and ``evaluate`` print about the operating point
they chose or measured (counts, bounds, the trade-off curve, the uncertain band), and the
percentages the policies' warnings use."""

from __future__ import annotations

import numpy as np


def summary_lines(t: dict, rows: int = 7) -> list[str]:
    """What ``train`` prints about a chosen threshold: the point, its bounds, the warning,
    a few points of the trade-off curve with the chosen one marked, and the band."""
    lines = []
    c = t.get("confidence")
    if not c:
        return lines
    lvl = pct(c["level"])
    e, f = c["escape_rate"], c["false_reject_rate"]
    lines.append(
        f"  escapes {_count(e)} ({lvl} upper bound {pct(e['upper'])}), "
        f"false rejects {_count(f)} ({lvl} upper bound {pct(f['upper'])}) on {c['on']}"
    )
    p = t.get("promise")
    if p and p["held"]:
        name = "escape" if p["of"] == "escape_rate" else "false-reject"
        lines.append(f"  promise held: {name} rate <= {pct(p['rate'])} at {lvl} confidence")
    if t.get("warning"):
        lines.append(f"  WARNING: {t['warning']}")
    cv = t.get("curve")
    if cv and cv["points"]:
        pts = cv["points"]
        pick = sorted(set(np.linspace(0, len(pts) - 1, min(rows, len(pts))).round().astype(int)))
        lines.append(
            f"  trade-off on {cv.get('on', 'validation')} ({cv['defective']} defective, "
            f"{cv['good']} good): "
            "threshold, escapes (upper bound), false rejects (upper bound)"
        )
        shown = [pts[i] for i in pick]
        chosen = min(pts, key=lambda q: abs(q["threshold"] - cv["chosen"]))
        if chosen not in shown:
            shown = sorted([*shown, chosen], key=lambda q: q["threshold"])
        for q in shown:
            mark = "  <- chosen" if q is chosen else ""
            lines.append(
                f"    {q['threshold']:<10.6g}  {q['escapes']:>5} ({pct(q['escape_upper'])})"
                f"  {q['false_rejects']:>5} ({pct(q['false_reject_upper'])}){mark}"
            )
    b = t.get("uncertain_band")
    if b and not b["margin"]:
        lines.append(f"  uncertain band: {b['warning'] or 'none needed'}")
    elif b:
        lines.append(
            f"  uncertain band [{b['lower']:.6g}, {t['value']:.6g}): {_count(b['review_rate'])} "
            f"good parts to review; escapes with it {_count(b['escape_rate'])} "
            f"({lvl} upper bound {pct(b['escape_rate']['upper'])})"
        )
        if b.get("warning"):
            lines.append(f"  note: {b['warning']}")
    return lines


def evaluation_lines(metrics: dict) -> list[str]:
    """What ``evaluate`` prints under its figures: the operating point's rates with their
    counts and bounds, and the uncertain band's effect when the model carries one."""
    c = metrics.get("confidence")
    if not c:
        return []
    lvl = pct(c["level"])
    e, f = c["escape_rate"], c["false_reject_rate"]
    lines = [
        f"  escapes {_count(e)} ({lvl} interval {_interval(e)}), false rejects {_count(f)} "
        f"({lvl} interval {_interval(f)})"
    ]
    b = metrics.get("uncertain_band")
    if b:
        lines.append(
            f"  with the model's uncertain band (width {b['margin']:.4f}): "
            f"{_count(b['review_rate'])} good parts to review, "
            f"{pct(b['review_share'])} of all parts; escapes {_count(b['escape_rate'])} "
            f"(without it {_count(b['escape_rate_without'])})"
        )
    return lines + group_lines(metrics)


def group_lines(metrics: dict) -> list[str]:
    """One line per value of each manifest column ``evaluate`` split its figures by."""
    lines = []
    for column, values in (metrics.get("by_column") or {}).items():
        for v, g in values.items():
            parts = []
            if g["defective"]:
                auc = g["auroc_vs_all_good"]
                parts.append(
                    f"{g['defective']} defective (AUROC against all good "
                    f"{'n/a' if auc is None else f'{auc:.4f}'}"
                    + (f", escapes {_count(g['escape_rate'])}" if "escape_rate" in g else "")
                    + ")"
                )
            if g["good"]:
                parts.append(
                    f"{g['good']} good"
                    + (
                        f" (false rejects {_count(g['false_reject_rate'])})"
                        if "false_reject_rate" in g
                        else ""
                    )
                )
            lines.append(f"  {column} = {v}: " + ", ".join(parts))
    return lines


def _interval(block: dict) -> str:
    iv = block["interval"]
    return "n/a" if iv is None else f"{pct(iv[0])} to {pct(iv[1])}"


def _count(block: dict) -> str:
    rate = "n/a" if block["rate"] is None else pct(block["rate"])
    return f"{block['k']} of {block['n']} = {rate}"


def a_or_an(what: str) -> str:
    return ("an " if what[0] in "aeiou" else "a ") + what


def pct(x) -> str:
    if x is None:
        return "n/a"
    if x >= 0.1 and round(100 * x, 1) == round(100 * x):
        return f"{100 * x:.0f} %"
    return f"{100 * x:.1f} %" if x >= 0.001 or x == 0 else f"{100 * x:.2f} %"
