"""The inbox: every recorded part, filtered, sorted and paged; bulk labels; rescan."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ..dataset import UNSURE
from .common import bench, filter_query, page, part_filter, render, safe_next


@page("viewer")
async def inbox(request: Request, user) -> Response:
    b = bench(request)
    t0 = time.perf_counter()
    params = request.query_params
    f = part_filter(params)
    size = b.cfg.page_size
    try:
        number = max(1, int(params.get("page", "1")))
    except ValueError:
        number = 1
    total = b.store.count(f)
    pages = max(1, -(-total // size))
    number = min(number, pages)
    parts = b.store.parts(f, (number - 1) * size, size)
    query = filter_query(params)
    response = render(
        request,
        "inbox.html",
        parts=parts,
        total=total,
        page=number,
        pages=pages,
        params={k: params.get(k, "") for k in params},
        query=query,
        choices=b.store.choices(),
        keys=b.labeller.keys(),
        unsure=UNSURE,
        disagreements=b.store.disagreements(),
        page_link=lambda n: "/?" + filter_query(params, page=n),
        server_ms=(time.perf_counter() - t0) * 1000,
    )
    response.headers["Server-Timing"] = f"db;dur={(time.perf_counter() - t0) * 1000:.1f}"
    return response


@page("reviewer")
async def bulk_label(request: Request, user) -> Response:
    b = bench(request)
    form = await request.form()
    label = str(form.get("label", ""))
    for pid in form.getlist("part"):
        part = b.store.part(int(pid)) if str(pid).isdigit() else None
        if part is not None:
            b.labeller.label(part, label, user.name)
    return RedirectResponse(safe_next(str(form.get("next") or "")), status_code=303)


@page("reviewer")
async def rescan(request: Request, user) -> Response:
    bench(request).rescan()
    return RedirectResponse("/", status_code=303)
