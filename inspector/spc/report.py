"""``inspector spc report --from --to --out DIR``: an HTML page with the control charts
(PNG and SVG, matplotlib), the Pareto of reject reasons and defect classes per shift and day,
the trend of each class, and the alarms of the period."""

from __future__ import annotations

import html
import logging
import time
from collections import Counter
from pathlib import Path

import numpy as np

from ..errors import InspectorError
from . import charts
from .config import ChartsSection
from .monitor import HEALTH_REASONS, NOT_INSPECTED
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


def _plot_chart(sg: dict, chart: str, cfg: ChartsSection, title: str, out: Path) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    n, x = sg["n"], sg[chart]
    base = min(cfg.baseline_subgroups, len(n) - 1)
    p0 = (
        cfg.baseline_rate
        if cfg.baseline_rate is not None and chart == "reject"
        else (charts.baseline_rate(x[:base], n[:base]))
    )
    z = charts.binomial_z(x, n, p0)
    sig = charts.evaluate(z, cfg.rules, cfg.side, cfg.ewma_lambda, cfg.ewma_L, cfg.cusum_k)
    ooc = sig.out_of_control(cfg.cusum_h, cfg.side)
    rules_any = np.any([ooc[r] for r in cfg.rules], axis=0) if cfg.rules else np.zeros(len(z), bool)
    import datetime as dt

    ts = [dt.datetime.fromtimestamp(t) for t in sg["t"]]
    fig, axes = plt.subplots(3, 1, figsize=(10, 7.5), sharex=True, height_ratios=[2, 1, 1])
    ax = axes[0]
    rate = x / n
    ax.plot(ts, rate * 100, "-o", ms=3, lw=1, color="#1f5fa8", label="rate")
    ax.axhline(p0 * 100, color="k", lw=1, label=f"centre {p0 * 100:.2f} %")
    ax.step(
        ts,
        charts.p_probability_limits(p0, n) * 100,
        where="mid",
        color="#c0392b",
        lw=1,
        ls="--",
        label="upper limit (3 sigma)",
    )
    ax.plot(
        np.array(ts)[rules_any],
        rate[rules_any] * 100,
        "o",
        color="#c0392b",
        ms=7,
        mfc="none",
        label="run rule fired",
    )
    if base > 0:
        ax.axvspan(ts[0], ts[base - 1], color="0.9", label="baseline")
    ax.set_ylabel("% of parts")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8, ncol=3)
    axes[1].plot(ts, sig.ewma, color="#7d3c98", lw=1)
    axes[1].plot(ts, sig.ewma_limit, color="#c0392b", ls="--", lw=1)
    axes[1].fill_between(
        ts, sig.ewma_limit, sig.ewma, where=ooc["ewma"], color="#c0392b", alpha=0.3
    )
    axes[1].set_ylabel(f"EWMA λ={cfg.ewma_lambda:g}")
    axes[2].plot(ts, sig.cusum_hi, color="#117a65", lw=1)
    axes[2].axhline(cfg.cusum_h, color="#c0392b", ls="--", lw=1)
    axes[2].fill_between(
        ts, cfg.cusum_h, sig.cusum_hi, where=ooc["cusum"], color="#c0392b", alpha=0.3
    )
    axes[2].set_ylabel(f"CUSUM k={cfg.cusum_k:g}")
    axes[2].xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M"))
    fig.autofmt_xdate()
    fig.tight_layout()
    for ext in ("png", "svg"):
        fig.savefig(out.with_suffix(f".{ext}"), dpi=110)
    plt.close(fig)
    return {"p0": p0, "subgroups": len(n), "signals": {k: int(v.sum()) for k, v in ooc.items()}}


def _plot_pareto(counts: Counter, title: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = counts.most_common(12)
    fig, ax = plt.subplots(figsize=(7, 3.2))
    if items:
        names, vals = zip(*items, strict=True)
        ax.bar(names, vals, color="#1f5fa8")
        cum = np.cumsum(vals) / max(sum(counts.values()), 1) * 100
        ax2 = ax.twinx()
        ax2.plot(names, cum, "-o", color="#c0392b", ms=3)
        ax2.set_ylim(0, 105)
        ax2.set_ylabel("cumulative %")
    ax.set_title(title)
    ax.tick_params(axis="x", labelrotation=30)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def _table(head: list[str], rows: list[list]) -> str:
    th = "".join(f"<th>{html.escape(str(h))}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows
    )
    return f"<table><tr>{th}</tr>{body}</table>"


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
        parts = [
            "<!doctype html><meta charset=utf-8><title>SPC report</title><style>"
            "body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:"
            "collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}</style>",
            f"<h1>Quality over time</h1><p>{time.strftime('%Y-%m-%d %H:%M', time.localtime(t_from))}"
            f" to {time.strftime('%Y-%m-%d %H:%M', time.localtime(min(t_to, 4e9)))}; subgroups of "
            f"{cfg.subgroup_window_s or cfg.subgroup_parts} {'s' if cfg.subgroup_window_s else 'parts'}"
            f"; rules {', '.join(cfg.rules)}, EWMA λ={cfg.ewma_lambda:g} L={cfg.ewma_L:g}, "
            f"CUSUM k={cfg.cusum_k:g} h={cfg.cusum_h:g}</p>",
        ]
        drawn = 0
        for st in stations:
            cols = store.verdicts(st, t_from, t_to)
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
                info = _plot_chart(sg, chart, cfg, f"{st}: {title}", out / f"{safe}-{chart}.png")
                drawn += 1
                parts.append(
                    f'<h3>{html.escape(title)}</h3><img src="{safe}-{chart}.png" '
                    f"width=900><p>centre {info['p0'] * 100:.2f} %, {info['subgroups']}"
                    f" subgroups; signals: {html.escape(str(info['signals']))}</p>"
                )
            fail = cols["result"] == "fail"
            reasons = Counter(cols["reason"][fail].tolist())
            classes = Counter(
                c
                for c, r in zip(cols["class"][fail], cols["reason"][fail], strict=True)
                if r == "defect" and c
            )
            _plot_pareto(reasons, f"{st}: reject reasons", out / f"{safe}-pareto-reasons.png")
            _plot_pareto(classes, f"{st}: defect classes", out / f"{safe}-pareto-classes.png")
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
        parts.append(
            "<h2>Alarms</h2>"
            + _table(
                ["station", "chart", "rule", "since", "cleared"],
                [
                    [
                        a[0],
                        a[1],
                        a[2],
                        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(a[3])),
                        time.strftime("%H:%M:%S", time.localtime(a[4])) if a[4] else "active",
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
