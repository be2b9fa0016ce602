"""The models registry; promote (after ``inspector verify`` passes) and roll back: admin only."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from .. import registry
from .common import bench, error, page, render


def _station(b, name: str):
    return next((s for s in b.cfg.models.stations if s.name == name), None)


@page("viewer")
async def models_page(request: Request, user) -> Response:
    b = bench(request)
    found = registry.find(b.cfg.models.registry)
    stations = [{"cfg": s, "current": registry.current(s)} for s in b.cfg.models.stations]
    return render(
        request,
        "models.html",
        models=found,
        stations=stations,
        promotions=b.store.promotions(),
        message=request.query_params.get("msg"),
    )


@page("admin")
async def promote(request: Request, user) -> Response:
    b = bench(request)
    form = await request.form()
    station = _station(b, str(form.get("station", "")))
    found = registry.find(b.cfg.models.registry)
    name = str(form.get("model", ""))
    if station is None or name not in found:
        return error(request, user, 404, "no such station or model")
    passed, output, previous = registry.promote(station, name, found[name]["folder"])
    b.store.add_promotion(
        station.name,
        name,
        str(found[name]["folder"]),
        previous,
        user.name,
        ("passed\n" if passed else "FAILED\n") + output,
    )
    if not passed:
        return error(request, user, 409, f"inspector verify failed; current not changed:\n{output}")
    return RedirectResponse("/models?msg=promoted", status_code=303)


@page("admin")
async def rollback(request: Request, user) -> Response:
    b = bench(request)
    form = await request.form()
    station = _station(b, str(form.get("station", "")))
    if station is None:
        return error(request, user, 404, "no such station")
    last = next(
        (
            p
            for p in b.store.promotions(200)
            if p["station"] == station.name and p["verify"].startswith("passed") and p["previous"]
        ),
        None,
    )
    if last is None:
        return error(request, user, 409, "no earlier model to roll back to")
    before = registry.current(station)
    registry.link_to(station.models, last["previous"])
    b.store.add_promotion(
        station.name, last["previous"], last["previous"], before, user.name, "rollback"
    )
    return RedirectResponse("/models?msg=rolled+back", status_code=303)
