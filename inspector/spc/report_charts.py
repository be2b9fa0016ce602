"""The report's pictures and sentences: a control chart (rate, EWMA, CUSUM) per station and
chart, a Pareto, and each signal written as a QA engineer reads it.

Rates are drawn in % of parts; the EWMA, computed on the standardised ``z`` like the live
monitor's, is drawn back in the rate's units (``p0 + ewma * sigma_p`` per subgroup, a monotone
map, so it crosses its drawn limit exactly where the alarm fires). The CUSUM has no rate
equivalent and stays in sigmas, labelled so. The legend sits above the plot area, where it
cannot hide a point; time ticks come from matplotlib's ``AutoDateLocator`` and
``ConciseDateFormatter``, so each tick says a different time whatever the span.

Example::

    s = series(subgroups, "reject", cfg)
    plot_control_chart(s, cfg, "line 1: reject rate", Path("out/line1-reject.png"))
    signal_sentences(s, cfg, "reject chart")   # ["14:32, reject chart: one point beyond ..."]
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import charts
from .config import ChartsSection

# what each chart signalled, beside the run rules' own descriptions (charts.RULES)
SIGNALS = {
    **charts.RULES,
    "ewma": "EWMA above its limit",
    "cusum": "CUSUM above its decision interval",
    "u_beyond_3s": "defects per part beyond 3 sigma",
}
ZONE_SIGMAS = {"we1_beyond_3s": 3.0, "we2_2of3_beyond_2s": 2.0, "we3_4of5_beyond_1s": 1.0}
# time ticks by the level that varies (years, months, days, hours, minutes, seconds); the
# first tick of a larger unit says it (zero formats), the date of the span is the offset
TICK_FORMATS = ["%Y", "%b", "%b %d", "%H:%M", "%H:%M", "%H:%M:%S"]
ZERO_FORMATS = ["", "%Y", "%b", "%b %d", "%H:%M", "%H:%M"]
MAX_SENTENCES = 30  # per chart; the rest are counted


@dataclass(frozen=True)
class Series:
    """One chart's subgroups and what every chart made of them."""

    t: np.ndarray  # subgroup time (mean of its parts), epoch seconds
    n: np.ndarray  # parts per subgroup
    x: np.ndarray  # rejects per subgroup
    p0: float  # centre line (baseline rate)
    base: int  # subgroups in the baseline
    sig: charts.Signals
    ooc: dict[str, np.ndarray]  # chart -> where it signals

    @property
    def rate(self) -> np.ndarray:
        return self.x / self.n

    def rate_at(self, sigmas: float) -> np.ndarray:
        """The rate at which the charted ``z`` crosses ``sigmas``, per subgroup: between the
        last count below it and the first above (interpolated on ``z``), so every point that
        signals is drawn above the line and every other point at or below it."""
        out = np.ones(len(self.n))
        for size in np.unique(self.n):
            z = charts.binomial_z(np.arange(size + 1), np.full(size + 1, size), self.p0)
            above = np.nonzero(z > sigmas)[0]
            if len(above) and above[0] > 0:
                k = above[0]
                out[self.n == size] = (k - 1 + (sigmas - z[k - 1]) / (z[k] - z[k - 1])) / size
            elif len(above):
                out[self.n == size] = 0.0
        return out

    def in_rate(self, z: np.ndarray) -> np.ndarray:
        """A standardised value drawn in the rate's units: ``p0 + z * sigma_p``."""
        return self.p0 + np.asarray(z) * np.sqrt(self.p0 * (1 - self.p0) / self.n)


def series(sg: dict[str, np.ndarray], chart: str, cfg: ChartsSection) -> Series:
    n, x = sg["n"], sg[chart]
    base = min(cfg.baseline_subgroups, len(n) - 1)
    p0 = (
        cfg.baseline_rate
        if cfg.baseline_rate is not None and chart == "reject"
        else charts.baseline_rate(x[:base], n[:base])
    )
    z = charts.binomial_z(x, n, p0)
    sig = charts.evaluate(z, cfg.rules, cfg.side, cfg.ewma_lambda, cfg.ewma_L, cfg.cusum_k)
    return Series(sg["t"], n, x, p0, base, sig, sig.out_of_control(cfg.cusum_h, cfg.side))


def time_format(t: np.ndarray) -> str:
    """``%H:%M`` (seconds too when subgroups are under a minute apart; the date too when the
    times span more than one day)."""
    fmt = "%H:%M:%S" if len(t) > 1 and float(np.median(np.diff(t))) < 60 else "%H:%M"
    days = {time.strftime("%Y-%m-%d", time.localtime(v)) for v in (t[0], t[-1])} if len(t) else ()
    return f"%Y-%m-%d {fmt}" if len(days) > 1 else fmt


def pct(v: float) -> str:
    """A rate as a reader writes it: ``9.5 %``, ``0.05 %``, ``0 %``."""
    return "0 %" if v == 0 else f"{v * 100:.{1 if v >= 0.001 else 2}f} %"


def signal_sentences(s: Series, cfg: ChartsSection, chart_name: str) -> list[str]:
    """One sentence per signal (the first subgroup of each run of signalling subgroups)."""
    fmt = time_format(s.t)
    events = []
    for rule, flags in s.ooc.items():
        onsets = np.nonzero(flags & ~np.concatenate([[False], flags[:-1]]))[0]
        for i in onsets:
            rate = s.rate[i]
            if rule in ZONE_SIGMAS and s.sig.z[i] > 0:
                sigmas = ZONE_SIGMAS[rule]
                line = (
                    "an upper limit" if sigmas == charts.SIGMA_LIMIT else f"a {sigmas:g}-sigma line"
                )
                why = f"rate {pct(rate)} against {line} of {pct(s.rate_at(sigmas)[i])}"
            elif rule == "ewma":
                down = s.sig.ewma[i] < 0
                e = s.in_rate(s.sig.ewma)[i]
                lim = s.in_rate(-s.sig.ewma_limit if down else s.sig.ewma_limit)[i]
                why = f"EWMA {pct(e)} against a limit of {pct(lim)}; this subgroup {pct(rate)}"
            elif rule == "cusum":
                down = s.sig.cusum_hi[i] <= cfg.cusum_h
                total = s.sig.cusum_lo[i] if down else s.sig.cusum_hi[i]
                why = (
                    f"{'shortfall below' if down else 'excess over'} the centre adds up to {total:.2f}"
                    f" sigma against {cfg.cusum_h:g}; this subgroup {pct(rate)}"
                )
            else:
                why = f"rate {pct(rate)}, centre {pct(s.p0)}"
            what = SIGNALS.get(rule, rule)
            if rule in ("ewma", "cusum") and down:  # side: both, the rate went down
                what = {"ewma": "EWMA below its lower limit", "cusum": f"downward {what}"}[rule]
            when = time.strftime(fmt, time.localtime(s.t[i]))
            events.append((s.t[i], f"{when}, {chart_name}: {what} ({why})"))
    events.sort(key=lambda e: e[0])
    out = [text for _, text in events[:MAX_SENTENCES]]
    if len(events) > MAX_SENTENCES:
        out.append(f"... and {len(events) - MAX_SENTENCES} more signals")
    return out


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_control_chart(s: Series, cfg: ChartsSection, title: str, out: Path) -> None:
    """Rate, EWMA and CUSUM over time, as ``out`` (PNG) and beside it SVG."""
    plt = _pyplot()
    import matplotlib.dates as mdates
    from matplotlib.ticker import PercentFormatter

    ts = [dt.datetime.fromtimestamp(t) for t in s.t]
    fig, axes = plt.subplots(
        3, 1, figsize=(10, 7.5), sharex=True, height_ratios=[2, 1, 1], layout="constrained"
    )
    limit = dict(color="#c0392b", lw=1, ls="--")
    alarm = dict(color="#c0392b", alpha=0.3)
    ax = axes[0]
    if s.base > 0:
        ax.axvspan(ts[0], ts[s.base - 1], color="0.9", label="baseline (sets the centre)")
    ax.plot(ts, s.rate * 100, "-o", ms=3, lw=1, color="#1f5fa8", label="rate per subgroup")
    ax.axhline(s.p0 * 100, color="k", lw=1, label=f"centre {pct(s.p0)}")
    ax.step(ts, s.rate_at(charts.SIGMA_LIMIT) * 100, where="mid", label="alarm limit", **limit)
    fired = np.any([s.ooc[r] for r in cfg.rules], axis=0) if cfg.rules else np.zeros(len(ts), bool)
    ax.plot(
        np.array(ts)[fired],
        s.rate[fired] * 100,
        "o",
        color="#c0392b",
        ms=7,
        mfc="none",
        label="run rule fired",
    )
    ax.set_ylabel("rate (% of parts)")
    e_ax = axes[1]
    e_ax.plot(ts, s.in_rate(s.sig.ewma) * 100, color="#7d3c98", lw=1, label="EWMA of the rate")
    e_ax.axhline(s.p0 * 100, color="k", lw=1)
    e_hi = s.in_rate(s.sig.ewma_limit) * 100
    e_ax.plot(ts, e_hi, **limit)
    e_ax.fill_between(ts, e_hi, s.in_rate(s.sig.ewma) * 100, where=s.ooc["ewma"], **alarm)
    if cfg.side == "both":
        e_ax.plot(ts, s.in_rate(-s.sig.ewma_limit) * 100, **limit)
    e_ax.set_ylabel(f"EWMA λ {cfg.ewma_lambda:g}\n(% of parts)")
    c_ax = axes[2]
    c_ax.plot(ts, s.sig.cusum_hi, color="#117a65", lw=1, label="CUSUM (sigmas)")
    c_ax.axhline(cfg.cusum_h, **limit)
    c_ax.fill_between(
        ts, cfg.cusum_h, s.sig.cusum_hi, where=s.ooc["cusum"], label="EWMA/CUSUM signal", **alarm
    )
    c_ax.set_ylabel(f"CUSUM k {cfg.cusum_k:g}\n(sigmas above centre)")
    for a in axes[:2]:
        a.yaxis.set_major_formatter(PercentFormatter(xmax=100))
    locator = mdates.AutoDateLocator()
    c_ax.xaxis.set_major_locator(locator)
    c_ax.xaxis.set_major_formatter(  # every tick a whole time (":30" would read as a repeat)
        mdates.ConciseDateFormatter(locator, formats=TICK_FORMATS, zero_formats=ZERO_FORMATS)
    )
    handles = [h for a in axes for h in a.get_legend_handles_labels()[0]]
    labels = [lb for a in axes for lb in a.get_legend_handles_labels()[1]]
    fig.suptitle(title)
    # above the plot area, under the title (constrained layout keeps room for it): on no point
    ax.legend(
        handles, labels, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=4, fontsize=8,
        frameon=False,
    )  # fmt: skip
    for ext in ("png", "svg"):
        fig.savefig(out.with_suffix(f".{ext}"), dpi=110)
    plt.close(fig)


def plot_pareto(counts: Counter, title: str, out: Path) -> None:
    plt = _pyplot()
    from matplotlib.ticker import PercentFormatter

    items = counts.most_common(12)
    fig, ax = plt.subplots(figsize=(7, 3.2))
    if items:
        names, vals = zip(*items, strict=True)
        ax.bar(names, vals, color="#1f5fa8")
        cum = np.cumsum(vals) / max(sum(counts.values()), 1) * 100
        ax2 = ax.twinx()
        ax2.plot(names, cum, "-o", color="#c0392b", ms=3)
        ax2.set_ylim(0, 105)
        ax2.set_ylabel("cumulative share")
        ax2.yaxis.set_major_formatter(PercentFormatter(xmax=100))
    ax.set_ylabel("parts")
    ax.set_title(title)
    ax.tick_params(axis="x", labelrotation=30)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
