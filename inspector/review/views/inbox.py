"""The inbox: every recorded part, filtered, sorted and paged; bulk labels; rescan."""

from __future__ import annotations

import time

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ...errors import InspectorError
from ..dataset import UNSURE
from .common import bench, field, filter_query, page, part_filter, render, row_id, safe_next

MAX_BULK = 500  # parts in one bulk label (the inbox's largest page)


@page("viewer")
async def inbox(request: Request, user) -> Response:
    b = bench(request)
    t0 = time.perf_counter()
    params = request.query_params
    f = part_filter(params)
    size = b.cfg.page_size
    text = params.get("page", "1")
    number = int(text) if text.isascii() and text.isdigit() and len(text) <= 9 else 1
    number = max(1, number)
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
    label = field(form, "label", most=200)
    chosen = form.getlist("part")
    if len(chosen) > MAX_BULK:
        raise InspectorError(f"at most {MAX_BULK} parts in one bulk label")
    parts = []
    for value in chosen:
        pid = row_id(value, "part")
        part = b.store.part(pid) if pid is not None else None
        if part is not None:
            parts.append(part)

    def apply() -> None:
        for part in parts:
            b.labeller.label(part, label, user.name)

    await run_in_threadpool(apply)
    return RedirectResponse(safe_next(field(form, "next")), status_code=303)


@page("reviewer")
async def rescan(request: Request, user) -> Response:
    await run_in_threadpool(bench(request).rescan)
    return RedirectResponse("/", status_code=303)
