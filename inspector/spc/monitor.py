"""Charts kept live per station: subgroups close as verdicts arrive, every chart is evaluated on
each close, and alarms open and clear.

Per station: ``reject`` (the quality reject rate: reasons ``defect`` and ``uncertain``),
``health`` (fail-safe reasons: timeout, source_lost, overflow, error, unreadable_frame,
shutdown: charted apart; parts the plant held, ``halted``, on no chart), ``class:NAME`` per
defect class, ``defects_per_part`` (a u-chart, for models that report several defects a part).
The statistics are the pure functions of ``charts``; this module only keeps the counts.

A subgroup is made of a station's verdicts in their own order (``t_verdict``, then ``seq``),
not in the order they arrive: a QoS 1 redelivery, or a station's resend after a broker
restart, comes later than newer verdicts, and must not change which parts a subgroup holds
(nor the alarms). The newest verdicts of a station wait in a small buffer (at most
``charts.reorder_parts`` of them, for at most ``charts.reorder_s``) and join subgroups oldest
first; one older than one already counted goes in the open subgroup and counts as ``late``."""

from __future__ import annotations

import heapq
import itertools
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from . import charts
from .config import ChartsSection
from .store import VerdictRow

QUALITY_REASONS = frozenset({"defect", "uncertain"})
HEALTH_REASONS = frozenset(
    {"error", "timeout", "source_lost", "unreadable_frame", "overflow", "shutdown"}
)
# parts the plant held on purpose (OPC UA Halt/Stop): rejected, never inspected, so on
# neither chart (a planned hold must not look like a quality shift or a fault); counted apart
NOT_INSPECTED = frozenset({"halted"})


@dataclass
class Subgroup:
    index: int
    t_start: float
    t_end: float
    parts: int = 0
    rejects: int = 0
    health: int = 0
    defects: int = 0
    classes: dict[str, int] = field(default_factory=dict)

    def count(self, chart: str) -> int:
        if chart == "reject":
            return self.rejects
        if chart == "health":
            return self.health
        if chart == "defects_per_part":
            return self.defects
        return self.classes.get(chart.removeprefix("class:"), 0)


@dataclass
class Alarm:
    station: str
    chart: str
    rule: str
    since: float
    subgroups: list[dict]
    value: float
    limit: float
    quiet: int = 0
    context: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "station": self.station,
            "chart": self.chart,
            "rule": self.rule,
            "description": charts.RULES.get(self.rule, self.rule),
            "since": self.since,
            "subgroups": self.subgroups,
            "value": self.value,
            "limit": self.limit,
            "context": self.context,
        }


@dataclass(frozen=True)
class Transition:
    """An alarm opened (``cleared`` None) or cleared (at ``cleared``)."""

    alarm: Alarm
    cleared: float | None = None


def order(v: VerdictRow) -> tuple[float, int, str]:
    """A verdict's place in its station's sequence: its own time, then its seq."""
    return (v.t_verdict, v.seq, v.part_id)


class StationMonitor:
    """Subgroups and charts of one station."""

    def __init__(self, station: str, cfg: ChartsSection) -> None:
        self.station, self.cfg = station, cfg
        self.closed: deque[Subgroup] = deque(maxlen=cfg.history)
        self.current: Subgroup | None = None
        self.index = 0
        self.baseline: list[Subgroup] = []
        self.p0: dict[str, float] = {}
        self.active: dict[tuple[str, str], Alarm] = {}
        self.last: dict[str, dict] = {}  # chart -> latest values, for gauges
        # verdicts not yet counted: (order, arrival number, arrived at (monotonic), row), a heap
        self.waiting: list[tuple] = []
        self._arrivals = itertools.count()
        self.counted_to: tuple[float, int, str] | None = None  # order of the newest counted
        self.late = 0  # verdicts older than one already counted when they arrived
        self.held = 0  # parts the plant held (NOT_INSPECTED): on no chart
        self.shown = 0  # ``index`` when the chart was last published

    # -- ordering --------------------------------------------------------------------------
    def add(self, v: VerdictRow, now_mono: float | None = None) -> list[Transition]:
        """Take one verdict; it is counted once it is the oldest of the buffer that must go."""
        if self.cfg.reorder_parts <= 0:
            return self._count(v)
        if now_mono is None:
            now_mono = time.monotonic()
        heapq.heappush(self.waiting, (order(v), next(self._arrivals), now_mono, v))
        out: list[Transition] = []
        while len(self.waiting) > self.cfg.reorder_parts:
            out += self._count(heapq.heappop(self.waiting)[3])
        return out

    def release(self, now_mono: float | None = None) -> list[Transition]:
        """Count the waiting verdicts up to the newest that has waited ``reorder_s`` (all of
        them when ``now_mono`` is None)."""
        if not self.waiting:
            return []
        if now_mono is None:
            upto = max(w[0] for w in self.waiting)
        else:
            due = [w[0] for w in self.waiting if now_mono - w[2] >= self.cfg.reorder_s]
            if not due:
                return []
            upto = max(due)
        out: list[Transition] = []
        while self.waiting and self.waiting[0][0] <= upto:
            out += self._count(heapq.heappop(self.waiting)[3])
        return out

    # -- counting --------------------------------------------------------------------------
    def _count(self, v: VerdictRow) -> list[Transition]:
        out: list[Transition] = []
        if v.reason in NOT_INSPECTED:
            self.held += 1
            return out
        key = order(v)
        if self.counted_to is not None and key < self.counted_to:
            self.late += 1  # its own subgroup may be closed: counted in the open one
        else:
            self.counted_to = key
        w = self.cfg.subgroup_window_s
        if (
            self.current is not None
            and w
            and math.floor(v.t_verdict / w) > math.floor(self.current.t_start / w)
        ):
            out += self.close()
        if self.current is None:
            start = math.floor(v.t_verdict / w) * w if w else v.t_verdict
            self.current = Subgroup(self.index, start, v.t_verdict)
        g = self.current
        g.parts += 1
        g.t_end = max(g.t_end, v.t_verdict)
        if v.result == "fail":
            if v.reason in HEALTH_REASONS:
                g.health += 1
            else:
                g.rejects += 1
                if v.reason == "defect" and v.label:
                    g.classes[v.label] = g.classes.get(v.label, 0) + 1
        g.defects += v.defects
        if not w and g.parts >= self.cfg.subgroup_parts:
            out += self.close()
        return out

    def tick(self, now: float, now_mono: float | None = None) -> list[Transition]:
        """Count the verdicts that have waited long enough; close a time-window subgroup whose
        window has passed without a newer verdict."""
        out = self.release(time.monotonic() if now_mono is None else now_mono)
        w = self.cfg.subgroup_window_s
        if w and self.current is not None and not self.waiting and now >= self.current.t_start + w:
            out += self.close()
        return out

    def charts_now(self) -> list[str]:
        names = ["reject", "health", "defects_per_part"]
        if self.cfg.per_class:
            seen = {c for g in list(self.closed) + self.baseline for c in g.classes}
            names += [f"class:{c}" for c in sorted(seen)]
        return names

    def reject_chart(self, last: int) -> dict:
        """The reject chart as the dashboard draws it: the last closed subgroups (end time,
        parts, rejects, rate, upper limit), the centre line, the rules firing."""
        groups = (list(self.baseline) + list(self.closed))[-last:]
        p0 = self.p0.get("reject")
        n = np.array([g.parts for g in groups], dtype=int)
        upper = charts.p_probability_limits(p0, n) if p0 is not None and len(n) else []
        return {
            "schema": 1,
            "station": self.station,
            "chart": "reject",
            "center": p0,
            "baseline": max(0, len(groups) - len(self.closed)),  # the first, limits from them
            "points": [
                {
                    "t": g.t_end,
                    "n": g.parts,
                    "x": g.rejects,
                    "rate": g.rejects / g.parts,
                    "upper": float(upper[i]) if len(upper) else None,
                }
                for i, g in enumerate(groups)
            ],
            "active": sorted(rule for chart, rule in self.active if chart == "reject"),
        }

    # -- closing a subgroup ----------------------------------------------------------------
    def close(self) -> list[Transition]:
        g, self.current = self.current, None
        if g is None or g.parts == 0:
            return []
        self.index += 1
        if len(self.baseline) < self.cfg.baseline_subgroups and self.cfg.baseline_rate is None:
            self.baseline.append(g)
            return []
        self.closed.append(g)
        out = []
        for chart in self.charts_now():
            out += self._evaluate(chart, g.t_end)
        return out

    def _rate0(self, chart: str) -> float:
        if chart not in self.p0:
            if chart == "reject" and self.cfg.baseline_rate is not None:
                self.p0[chart] = self.cfg.baseline_rate
            elif self.baseline:
                n = np.array([g.parts for g in self.baseline])
                x = np.array([g.count(chart) for g in self.baseline])
                self.p0[chart] = charts.baseline_rate(x, n)
            else:  # a known reject rate and no baseline period: other charts learn as they go
                n = np.array([g.parts for g in self.closed])
                x = np.array([g.count(chart) for g in self.closed])
                return charts.baseline_rate(x, n)
        return self.p0[chart]

    def _evaluate(self, chart: str, now: float) -> list[Transition]:
        groups = list(self.closed)
        n = np.array([g.parts for g in groups])
        x = np.array([g.count(chart) for g in groups])
        c = self.cfg
        p0 = self._rate0(chart)
        out: list[Transition] = []
        if chart == "defects_per_part":
            u, _lo, hi = charts.u_chart(x, n, p0)
            firing = {"u_beyond_3s": bool(u[-1] > hi[-1])}
            value, limits = {"u_beyond_3s": (float(u[-1]), float(hi[-1]))}, None
            self.last[chart] = {"rate": float(u[-1]), "center": p0, "upper": float(hi[-1])}
        else:
            z = charts.binomial_z(x, n, p0)
            sig = charts.evaluate(z, c.rules, c.side, c.ewma_lambda, c.ewma_L, c.cusum_k)
            ooc = sig.out_of_control(c.cusum_h, c.side)
            firing = {r: bool(f[-1]) for r, f in ooc.items()}
            upper = float(charts.p_probability_limits(p0, n[-1:])[0])
            limits = {
                "ewma": (float(sig.ewma[-1]), float(sig.ewma_limit[-1])),
                "cusum": (float(sig.cusum_hi[-1]), c.cusum_h),
            }
            value = {r: limits.get(r, (float(z[-1]), charts.SIGMA_LIMIT)) for r in firing}
            self.last[chart] = {
                "rate": float(x[-1] / n[-1]),
                "center": p0,
                "upper": upper,
                "z": float(z[-1]),
                "ewma": float(sig.ewma[-1]),
                "cusum": float(sig.cusum_hi[-1]),
            }
        for rule, on in firing.items():
            key = (chart, rule)
            alarm = self.active.get(key)
            if on and alarm is None:
                span = charts.rule_span(rule) if rule in charts.RULES else 1
                if rule in ("ewma", "cusum"):  # the subgroups since the statistic left zero
                    span = min(len(groups), 15)
                involved = [
                    {
                        "index": g.index,
                        "t_start": g.t_start,
                        "t_end": g.t_end,
                        "parts": g.parts,
                        "count": g.count(chart),
                    }
                    for g in groups[-span:]
                ]
                alarm = Alarm(
                    self.station,
                    chart,
                    rule,
                    involved[0]["t_start"],
                    involved,
                    value[rule][0],
                    value[rule][1],
                )
                self.active[key] = alarm
                out.append(Transition(alarm))
            elif on:
                alarm.quiet = 0
            elif alarm is not None:
                alarm.quiet += 1
                if rule in ("ewma", "cusum", "u_beyond_3s") or alarm.quiet >= c.clear_after:
                    del self.active[key]
                    out.append(Transition(alarm, cleared=now))
        return out


class Monitor:
    """Every station's charts; ``on_transition`` hears of each alarm opened or cleared."""

    def __init__(self, cfg: ChartsSection, on_transition: Callable[[Transition], None]) -> None:
        self.cfg = cfg
        self.on_transition = on_transition
        self.stations: dict[str, StationMonitor] = {}
        self._lock = threading.RLock()  # the writer adds, the ticker closes time windows

    def add(self, rows: list[VerdictRow]) -> None:
        with self._lock:
            self._add(rows)

    def _add(self, rows: list[VerdictRow]) -> None:
        now = time.monotonic()
        for v in sorted(rows, key=order):
            st = self.stations.get(v.station)
            if st is None:
                st = self.stations[v.station] = StationMonitor(v.station, self.cfg)
            for t in st.add(v, now):
                self.on_transition(t)

    def tick(self, now: float) -> None:
        with self._lock:
            self._tick(now)

    def _tick(self, now: float) -> None:
        mono = time.monotonic()
        for st in self.stations.values():
            for t in st.tick(now, mono):
                self.on_transition(t)

    def flush(self) -> None:
        """Count every waiting verdict now (nothing older is coming: a replay, a report)."""
        with self._lock:
            for st in self.stations.values():
                for t in st.release():
                    self.on_transition(t)

    def counted(self) -> int:
        """Parts counted in subgroups (waiting verdicts not yet), every station."""
        with self._lock:
            return sum(
                sum(g.parts for g in st.baseline)
                + sum(g.parts for g in st.closed)
                + (st.current.parts if st.current else 0)
                for st in self.stations.values()
            )

    def late(self) -> int:
        with self._lock:
            return sum(st.late for st in self.stations.values())

    def reject_charts(self, last: int = 40) -> dict[str, dict]:
        """Per station with a subgroup closed since the last call, its ``reject_chart``."""
        out = {}
        with self._lock:
            for name, st in self.stations.items():
                if st.index == st.shown:
                    continue
                st.shown = st.index
                out[name] = st.reject_chart(last)
        return out

    def held(self) -> int:
        """Parts the plant held (reason ``halted``): rejected uninspected, on no chart."""
        with self._lock:
            return sum(st.held for st in self.stations.values())

    def active(self) -> list[Alarm]:
        return [a for st in self.stations.values() for a in st.active.values()]
