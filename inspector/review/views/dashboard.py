"""The dashboard: per station, its yield and reject reasons over the last hours, the model
it runs and its health (the station's retained status, as the models page reads it), and
the last parts as a strip; the page refreshes itself (htmx) every few seconds."""

from __future__ import annotations

from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ..figures import plots
from ..figures.linestats import line_yield
from ..work import registry
from ..work.promote import STALE_S
from .common import _float, bench, fmt_time, page, render

STRIP = 24  # parts in the strip
HOURS = 8.0  # the stretch yield and reasons are counted over (back from the newest part)


def _alarms(b, name: str) -> list[str]:
    """The SPC service's active alarms for the station, as sentences."""
    watch = b.promoter.watches.get(name)
    out = []
    for a in list(watch.alarms) if watch is not None else []:
        since = a.get("since")
        when = f" since {fmt_time(since)}" if isinstance(since, (int, float)) else ""
        out.append(
            f"{a.get('chart', '?')} chart: {a.get('description') or a.get('rule', '?')}{when}"
        )
    return out


def _spc_chart(b, name: str) -> dict:
    """The SPC service's reject chart of the station (retained on its broker), drawn as the
    other charts are: the reject rate per subgroup in %, its upper limit and centre line."""
    watch = b.promoter.watches.get(name)
    chart = watch.chart if watch is not None else None
    points = [p for p in (chart or {}).get("points", []) if isinstance(p, dict)]
    if not points:
        return {"empty": True}

    def pct(v):
        return 100.0 * v if isinstance(v, (int, float)) else None

    rate = [(i + 1, pct(p.get("rate"))) for i, p in enumerate(points)]
    upper = [(i + 1, pct(p.get("upper"))) for i, p in enumerate(points)]
    series = [{"name": "reject rate", "cls": "rate", "points": rate}]
    if any(u for _, u in upper if u is not None):
        series.append({"name": "upper limit", "cls": "limit", "points": upper})
    center = pct(chart.get("center"))
    if center is not None:
        series.append(
            {"name": "centre", "cls": "center", "points": [(1, center), (len(points), center)]}
        )
    out = plots.chart(series, "subgroups, oldest to newest", "% rejected")
    out["firing"] = [str(r) for r in chart.get("active", []) if isinstance(r, str)]
    return out


def _health(b, name: str) -> dict:
    watch = b.promoter.watches.get(name)
    if watch is None:
        return {"state": "unknown", "why": "not a promotion target in the config", "model": None}
    s = watch.snapshot()
    if not s["known"]:
        return {"state": "unknown", "why": s["why"], "model": None}
    if s["age_s"] > STALE_S:
        return {"state": "unknown", "why": f"no status for {s['age_s']:.0f} s", "model": None}
    why = s.get("detail", "") if s["state"] != "online" else ""
    return {"state": s["state"], "why": why, "model": s["model_id"] or None}


def _station(b, name: str, hours: float) -> dict:
    store = b.store
    newest = store.newest_t(name)
    since = (newest or 0.0) - hours * 3600
    health = _health(b, name)
    model, source = health["model"], "the station's status"
    cfg = next((s for s in b.cfg.models.stations if s.name == name), None)
    if model is None and cfg is not None and registry.current(cfg):
        model = registry.model_id(Path(cfg.models) / registry.current(cfg))
        source = "the current link (the station's next start)"
    latest = store.latest_parts(name, STRIP)
    if model is None and latest:
        model, source = latest[0]["model_id"], "the last recorded part"
    return {
        "name": name,
        "newest": newest,
        "since": since,
        "yield": line_yield(store.seq_results(name, since)) if newest else None,
        "reasons": store.reject_reasons(name, since) if newest else {},
        "health": health,
        "model": model,
        "model_source": source,
        "strip": latest,
        "alarms": _alarms(b, name),
        "spc": _spc_chart(b, name),
    }


@page("viewer")
async def dashboard(request: Request, user) -> Response:
    b = bench(request)
    hours = _float(request.query_params.get("hours", "") or "") or HOURS
    hours = min(max(hours, 0.1), 24 * 31)
    names = [r.station for r in b.cfg.recordings]
    names += [s.name for s in b.cfg.models.stations if s.name not in names]
    stations = [await run_in_threadpool(_station, b, n, hours) for n in names]
    return render(request, "dashboard.html", stations=stations, hours=hours)
