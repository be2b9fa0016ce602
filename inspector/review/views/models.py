"""The models page: the registry, each station's ``current`` link next to what the station
actually runs (its retained status), promotions (admin only) and their progress.

Promote and roll back only start the work (``promote.Promoter``: a worker thread) and
redirect; the page polls the promotion's block until it ends.
"""

from __future__ import annotations

from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ..figures import modelcard
from ..work import registry
from .common import bench, error, field, page, process_block, render

DONE = ("swapped", "unchanged", "linked")


def _station(b, name: str):
    return next((s for s in b.cfg.models.stations if s.name == name), None)


def _stations(b) -> list[dict]:
    out = []
    for s in b.cfg.models.stations:
        current = registry.current(s)
        folder = Path(s.models) / current if current else None
        out.append(
            {
                "cfg": s,
                "current": current,
                "current_id": registry.model_id(folder) if folder else None,
                "runs": b.promoter.watches[s.name].snapshot(),
            }
        )
    return out


@page("viewer")
async def models_page(request: Request, user) -> Response:
    b = bench(request)
    found = await run_in_threadpool(registry.find, b.cfg.models.registry)
    for m in found.values():
        m["card"] = {
            "thresholds": modelcard.thresholds(m["manifest"]),
            "validation": modelcard.validation(m["manifest"]),
            "parity": modelcard.parity(m["manifest"]),
            "curve": modelcard.curve(m["manifest"]),
        }
    stations = await run_in_threadpool(_stations, b)
    return render(
        request,
        "models.html",
        models=found,
        stations=stations,
        promotions=b.store.promotions(),
        message=request.query_params.get("msg", "")[:200],
    )


@page("viewer")
async def promotion(request: Request, user) -> Response:
    """One promotion's block (the htmx poll target; a whole page without htmx)."""
    b = bench(request)
    p = b.store.promotion(request.path_params["pid"])
    if p is None:
        return error(request, user, 404, "no such promotion")
    name = "_promotion.html" if request.headers.get("hx-request") else "promotion.html"
    return render(request, name, p=p)


def _refused(request: Request, user, status: int, message: str) -> Response:
    return error(
        request,
        user,
        status,
        message + " Nothing was promoted; the station runs what it ran.",
        title="Not promoted",
        back_url="/models",
        back_text="Back to the models",
    )


@page("admin")
async def promote(request: Request, user) -> Response:
    return await _start(request, user, "promote")


@page("reviewer")
async def verify(request: Request, user) -> Response:
    """Check a registry model against a station as a promotion would (the station's config
    and golden set, ``inspector verify``), changing nothing: progress like a promotion's."""
    return await _start(request, user, "verify")


async def _start(request: Request, user, kind: str) -> Response:
    """Start a promotion or a verification of the form's model on the form's station."""
    b = bench(request)
    form = await request.form()
    station = _station(b, field(form, "station", most=200))
    name = field(form, "model", most=1000)
    found = await run_in_threadpool(registry.find, b.cfg.models.registry)
    if station is None or name not in found:
        what = (
            f"The workbench knows no station {field(form, 'station', most=200)!r}."
            if station is None
            else f"No model {name!r} in the registry folders (was it exported and moved?)."
        )
        return _refused(request, user, 404, what)
    pid = b.promoter.start(station, name, found[name]["folder"], user.name, kind=kind)
    return RedirectResponse(f"/models#promotion-{pid}", status_code=303)


@page("admin")
async def rollback(request: Request, user) -> Response:
    """Promote the model that ``current`` named before the last promotion (same path)."""
    b = bench(request)
    form = await request.form()
    station = _station(b, field(form, "station", most=200))
    if station is None:
        return _refused(request, user, 404, "The workbench knows no such station.")
    last = next(
        (
            p
            for p in b.store.promotions(200)
            if p["station"] == station.name and p["status"] in DONE and p["previous"]
        ),
        None,
    )
    folder = Path(station.models) / last["previous"] if last else None
    if folder is None or not (folder / "model.onnx").is_file():
        return _refused(request, user, 409, f"{station.name} has no earlier model to roll back to.")
    pid = b.promoter.start(station, last["previous"], folder, user.name, kind="rollback")
    return RedirectResponse(f"/models#promotion-{pid}", status_code=303)


@page("reviewer")
async def evaluate(request: Request, user) -> Response:
    """``inspector evaluate`` of a registry model on the reviewed dataset (its own process)."""
    b = bench(request)
    form = await request.form()
    name = field(form, "model", most=1000)
    found = await run_in_threadpool(registry.find, b.cfg.models.registry)
    if name not in found:
        return error(request, user, 404, f"No model {name!r} in the registry folders.",
                     title="Not evaluated", back_url="/models", back_text="Back to the models")  # fmt: skip
    eid = await run_in_threadpool(b.evaluations.start, name, found[name]["folder"], user.name)
    return RedirectResponse(f"/models/evaluation/{eid}", status_code=303)


@page("viewer")
async def evaluation(request: Request, user) -> Response:
    """One evaluation's block (the htmx poll target; a whole page without htmx)."""
    e = bench(request).evaluations.get(request.path_params["eid"])
    return process_block(request, user, e, "evaluation", e="evaluation")
