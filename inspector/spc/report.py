"""``inspector spc report --from --to --out DIR``: an HTML page with the control charts
(PNG and SVG, matplotlib; drawn by ``report_charts``), each signal and alarm as a sentence,
the Pareto of reject reasons and defect classes, the share per shift and day, and the alarms
of the period."""

from __future__ import annotations

import html
import json
import logging
import time
from collections import Counter
from pathlib import Path

import numpy as np

from ..errors import InspectorError
from .config import ChartsSection
from .monitor import HEALTH_REASONS, NOT_INSPECTED
from .report_charts import (
    SIGNALS,
    pct,
    plot_control_chart,
    plot_pareto,
    series,
    signal_sentences,
    time_format,
)
from .store import Store

log = logging.getLogger(__name__)
SHIFT_START_H = 6  # three 8-hour shifts: 06-14, 14-22, 22-06 (local time)


def shift_of(t: float) -> str:
    lt = time.localtime(t - SHIFT_START_H * 3600)
    return f"{time.strftime('%Y-%m-%d', lt)} shift {lt.tm_hour // 8 + 1}"


def subgroups(cols: dict[str, np.ndarray], cfg: ChartsSection) -> dict[str, np.ndarray]:
    """Per subgroup (consecutive parts, or time windows): end time, parts, rejects, health."""
    inspected = ~np.isin(cols["reason"], list(NOT_INSPECTED))  # held parts: on no chart
    cols = {k: v[inspected] for k, v in cols.items()}
    t = cols["t_verdict"]
    if cfg.subgroup_window_s:
        key = np.floor(t / cfg.subgroup_window_s).astype(np.int64)
        _, idx = np.unique(key, return_inverse=True)
    else:
        idx = np.arange(len(t)) // cfg.subgroup_parts
    fail = cols["result"] == "fail"
    health = fail & np.isin(cols["reason"], list(HEALTH_REASONS))
    count = np.bincount(idx)
    keep = count >= (1 if cfg.subgroup_window_s else cfg.subgroup_parts)  # whole subgroups
    return {
        "t": np.bincount(idx, weights=t)[keep] / count[keep],
        "n": count[keep],
        "reject": np.bincount(idx, weights=fail & ~health)[keep].astype(int),
        "health": np.bincount(idx, weights=health)[keep].astype(int),
    }


def chart_name(chart: str) -> str:
    """``reject`` -> "reject chart", ``class:scratch`` -> "class scratch chart" and so on."""
    names = {"health": "fail-safe", "defects_per_part": "defects-per-part"}
    return f"{names.get(chart, chart.replace('class:', 'class '))} chart"


def alarm_sentence(chart: str, rule: str, detail: str) -> str:
    """An alarm of the store as a sentence: the chart, what it saw, and the rate of the last
    subgroup it names (from the alarm's stored detail)."""
    text = f"{chart_name(chart)}: {SIGNALS.get(rule, rule)}"
    try:
        last = json.loads(detail)["subgroups"][-1]
        k, n = int(last["count"]), int(last["parts"])
        if chart == "defects_per_part":
            return f"{text} (last subgroup {k} defects on {n} parts, {k / n:.2f} a part)"
        return f"{text} (last subgroup {k} of {n} parts, {pct(k / n)})"
    except (ValueError, KeyError, IndexError, TypeError, ZeroDivisionError):
        return text


def _list(items: list[str]) -> str:
    return "<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>"


def _table(head: list[str], rows: list[list]) -> str:
    th = "".join(f"<th>{html.escape(str(h))}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows
    )
    return f"<table><tr>{th}</tr>{body}</table>"


def _minute(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(min(t, 4e9)))


def write_report(
    db: str | Path, out: Path, t_from: float, t_to: float, cfg: ChartsSection | None = None
) -> Path:
    """Write ``out/index.html`` with its pictures; returns the page's path."""
    cfg = cfg or ChartsSection()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    store = Store(db)
    try:
        stations = store.stations()
        columns = {st: store.verdicts(st, t_from, t_to) for st in stations}
        seen = [c["t_verdict"] for c in columns.values() if len(c["t_verdict"])]
        # the span the page shows: the verdicts' own, within what was asked (an open
        # --from is not 1970)
        if seen:
            shown_from = max(t_from, min(float(t.min()) for t in seen))
            shown_to = min(t_to, max(float(t.max()) for t in seen))
        parts = [
            "<!doctype html><meta charset=utf-8><title>SPC report</title><style>"
            "body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:"
            "collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}</style>",
            "<h1>Quality over time</h1><p>"
            + (f"{_minute(shown_from)} to {_minute(shown_to)}" if seen else "no verdicts")
            + f"; subgroups of "
            f"{cfg.subgroup_window_s or cfg.subgroup_parts} {'s' if cfg.subgroup_window_s else 'parts'}"
            f"; run rules: {'; '.join(SIGNALS.get(r, r) for r in cfg.rules)}; EWMA λ "
            f"{cfg.ewma_lambda:g}, limit at {cfg.ewma_L:g} sigma; CUSUM k {cfg.cusum_k:g}, "
            f"decision interval {cfg.cusum_h:g} sigma</p>",
        ]
        drawn = 0
        for st in stations:
            cols = columns[st]
            if not len(cols["t_verdict"]):
                continue
            sg = subgroups(cols, cfg)
            safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in st)
            parts.append(f"<h2>Station {html.escape(st)}</h2>")
            for chart, title in (
                ("reject", "reject rate (defect, uncertain)"),
                ("health", "fail-safe rate (timeout, source lost, overflow, error)"),
            ):
                if len(sg["n"]) < 3:
                    parts.append("<p>too few subgroups for a chart</p>")
                    break
                s = series(sg, chart, cfg)
                plot_control_chart(s, cfg, f"{st}: {title}", out / f"{safe}-{chart}.png")
                drawn += 1
                said = signal_sentences(s, cfg, chart_name(chart))
                parts.append(
                    f'<h3>{html.escape(title)}</h3><img src="{safe}-{chart}.png" width=900>'
                    f"<p>centre {pct(s.p0)}, {len(s.n)} subgroups; "
                    + (f"{len(said)} signals:</p>" + _list(said) if said else "no signals.</p>")
                )
            fail = cols["result"] == "fail"
            reasons = Counter(cols["reason"][fail].tolist())
            classes = Counter(
                c
                for c, r in zip(cols["class"][fail], cols["reason"][fail], strict=True)
                if r == "defect" and c
            )
            plot_pareto(reasons, f"{st}: reject reasons", out / f"{safe}-pareto-reasons.png")
            plot_pareto(classes, f"{st}: defect classes", out / f"{safe}-pareto-classes.png")
            parts.append(
                f'<h3>Pareto</h3><img src="{safe}-pareto-reasons.png" width=520>'
                f'<img src="{safe}-pareto-classes.png" width=520>'
            )
            for label, key in (
                ("shift", shift_of),
                ("day", lambda t: time.strftime("%Y-%m-%d", time.localtime(t))),
            ):
                per: dict[str, Counter] = {}
                total: Counter = Counter()
                for t, r, c, f in zip(
                    cols["t_verdict"], cols["reason"], cols["class"], fail, strict=True
                ):
                    k = key(t)
                    total[k] += 1
                    if f:
                        per.setdefault(k, Counter())[c if r == "defect" and c else r] += 1
                names = sorted({n for c in per.values() for n in c})
                rows = [
                    [k, total[k]]
                    + [f"{per.get(k, Counter())[n] / total[k] * 100:.2f} %" for n in names]
                    for k in sorted(total)
                ]
                parts.append(
                    f"<h3>Per {label} (share of parts)</h3>"
                    + _table([label, "parts", *names], rows)
                )
        alarms = store.alarms(t_from, t_to)
        fmt = time_format(np.array([a[3] for a in alarms]))
        parts.append(
            "<h2>Alarms</h2>"
            + _table(
                ["since", "station", "alarm", "cleared"],
                [
                    [
                        time.strftime(fmt, time.localtime(a[3])),
                        a[0],
                        alarm_sentence(a[1], a[2], a[5]),
                        time.strftime(fmt, time.localtime(a[4])) if a[4] else "still active",
                    ]
                    for a in alarms
                ],
            )
        )
    finally:
        store.close()
    if not stations:
        raise InspectorError(f"{db}: no verdicts stored yet")
    page = out / "index.html"
    page.write_text("\n".join(parts), encoding="utf-8")
    log.info("report: %d charts in %s", drawn, out)
    return page
