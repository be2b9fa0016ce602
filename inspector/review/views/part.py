"""The part page (image at real pixels with zoom/pan, the model input, the heat map when
the recorder kept one, verdict JSON, label history) and relabelling."""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ..dataset import UNSURE
from ..files import resolve
from ..inputs import heat_rel, plan, read_sidecar
from .common import (
    _float,
    bench,
    error,
    field,
    filter_query,
    page,
    part_filter,
    render,
    row_id,
    safe_next,
)


@page("viewer")
async def part_page(request: Request, user) -> Response:
    b = bench(request)
    pid = request.path_params["pid"]
    part = b.store.part(pid)
    if part is None:
        return error(request, user, 404, "no such part")
    params = request.query_params
    prev_id, next_id = b.store.neighbours(part_filter(params), pid)
    query = filter_query(params)
    verdict, problem = read_sidecar(b.recordings, part)
    how = plan(verdict, b.models)
    has_heat = resolve(b.recordings, part["station"], heat_rel(part["image"])) is not None
    undone = b.store.label(row_id(params.get("undone"), "undone"))
    return render(
        request,
        "part.html",
        part=part,
        verdict=verdict if verdict is not None else {"error": problem},
        input_note=how.problem or how.note,
        heat=has_heat,
        heat_on_input=has_heat and not how.whole_frame,
        query=query,
        prev_url=f"/part/{prev_id}?{query}" if prev_id else None,
        next_url=f"/part/{next_id}?{query}" if next_id else None,
        keys=b.labeller.keys(),
        unsure=UNSURE,
        history=b.store.label_log(part=pid),
        inbox_url=f"/?{query}",
        undone=undone if undone is not None and undone["part"] == part["id"] else None,
        regions=b.store.regions(part["id"]),
        defects=b.cfg.dataset.defects,
    )


@page("reviewer")
async def label(request: Request, user) -> Response:
    b = bench(request)
    form = await request.form()
    part = b.store.part(request.path_params["pid"])
    if part is None:
        return error(request, user, 404, "no such part")
    await run_in_threadpool(b.labeller.label, part, field(form, "label", most=200), user.name)
    default = f"/part/{part['id']}"
    return RedirectResponse(safe_next(field(form, "next"), default), status_code=303)


@page("reviewer")
async def undo(request: Request, user) -> Response:
    """Undo a given label (``label_id``) or, without one, this user's latest label."""
    b = bench(request)
    form = await request.form()
    lid = row_id(field(form, "label_id"), "label_id")
    target = b.store.label(lid) if lid is not None else b.store.last_label_by(user.name)
    if target is None or await run_in_threadpool(b.labeller.undo, target["id"], user.name) is None:
        return error(request, user, 409, "nothing to undo (that label is no longer in force)")
    # back to the part whose label was taken back, in the list the user was walking (the
    # same filter and sort, so the arrows keep their direction), saying what was undone
    walked = dict(parse_qsl(field(form, "query")))
    default = f"/part/{target['part']}?{filter_query(walked, undone=target['id'])}"
    return RedirectResponse(safe_next(field(form, "next"), default), status_code=303)


@page("reviewer")
async def add_region(request: Request, user) -> Response:
    """A box drawn on the part's image (x, y, w, h in the image's pixels; a defect class)."""
    b = bench(request)
    form = await request.form()
    part = b.store.part(request.path_params["pid"])
    if part is None:
        return error(request, user, 404, "no such part")
    box = tuple(_float(field(form, k, most=40)) for k in ("x", "y", "w", "h"))
    if any(v is None for v in box):
        return error(request, user, 400, "a region needs numbers x, y, w and h (pixels)")
    label = field(form, "label", most=200) or None
    await run_in_threadpool(b.labeller.add_region, part, box, label, user.name)
    back = f"/part/{part['id']}?{filter_query(dict(parse_qsl(field(form, 'query'))))}"
    return RedirectResponse(back + "#regions", status_code=303)


@page("reviewer")
async def remove_region(request: Request, user) -> Response:
    b = bench(request)
    form = await request.form()
    part = b.store.part(request.path_params["pid"])
    if part is None:
        return error(request, user, 404, "no such part")
    rid = request.path_params["rid"]
    if not await run_in_threadpool(b.labeller.remove_region, part, rid, user.name):
        return error(request, user, 409, "no such region on this part (removed already?)")
    back = f"/part/{part['id']}?{filter_query(dict(parse_qsl(field(form, 'query'))))}"
    return RedirectResponse(back + "#regions", status_code=303)
