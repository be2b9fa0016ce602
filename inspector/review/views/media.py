"""Images: thumbnails and model inputs (made once, cached), heat-map overlays, and files
inside the configured roots only.

A path that leaves its root gets 404, as a file that does not exist does.
"""

from __future__ import annotations

import os

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response

from ...contract.preprocess import FrameError
from ..files import is_image, resolve, thumbnail
from ..inputs import heat_rel, plan, read_sidecar
from ..inputs import model_input as make_input
from .common import bench, page

CACHE = "private, max-age=86400"


def _file(request: Request, path) -> Response:
    if path is None:
        return PlainTextResponse("not found", status_code=404)
    response = FileResponse(path, stat_result=os.stat(path))
    response.headers["Cache-Control"] = CACHE
    response.headers["X-Content-Type-Options"] = "nosniff"
    if (
        response.headers.get("etag")
        and request.headers.get("if-none-match") == response.headers["etag"]
    ):
        return Response(
            status_code=304, headers={"Cache-Control": CACHE, "ETag": response.headers["etag"]}
        )
    return response


@page("viewer")
async def thumb(request: Request, user) -> Response:
    b = bench(request)
    part = b.store.part(request.path_params["pid"])
    if part is None:
        return PlainTextResponse("not found", status_code=404)
    source = resolve(b.recordings, part["station"], part["image"])
    out = thumbnail(source, b.cfg.cache, b.cfg.thumbnail_px) if source else None
    return _file(request, out)


@page("viewer")
async def model_input(request: Request, user) -> Response:
    """The part's model input as PNG: its frame through the sidecar's geometry and the
    model's resize (inputs.py); 422 with the reason when the frame can't be prepared."""
    b = bench(request)
    part = b.store.part(request.path_params["pid"])
    if part is None:
        return PlainTextResponse("not found", status_code=404)
    source = resolve(b.recordings, part["station"], part["image"])
    sidecar = resolve(b.recordings, part["station"], part["sidecar"])
    if source is None or sidecar is None or not is_image(source):
        return PlainTextResponse("not found", status_code=404)
    record, problem = read_sidecar(b.recordings, part)
    if record is None:
        return PlainTextResponse(problem, status_code=422)
    st = sidecar.stat()
    how = plan(record, b.models)
    try:
        out = await run_in_threadpool(
            make_input, source, f"{st.st_size}|{st.st_mtime_ns}", how, b.cfg.cache
        )
    except (FrameError, OSError) as exc:
        return PlainTextResponse(f"no model input: {exc}", status_code=422)
    return _file(request, out)


@page("viewer")
async def heat(request: Request, user) -> Response:
    """The recorder's heat-map overlay (STEM.heat.png) beside the part's image."""
    b = bench(request)
    part = b.store.part(request.path_params["pid"])
    if part is None:
        return PlainTextResponse("not found", status_code=404)
    return _file(request, resolve(b.recordings, part["station"], heat_rel(part["image"])))


@page("viewer")
async def recording(request: Request, user) -> Response:
    b = bench(request)
    path = resolve(b.recordings, request.path_params["station"], request.path_params["path"])
    return _file(request, path if path is not None and is_image(path) else None)


@page("viewer")
async def dataset_file(request: Request, user) -> Response:
    b = bench(request)
    path = resolve({"dataset": b.cfg.dataset.path}, "dataset", request.path_params["path"])
    return _file(request, path if path is not None and is_image(path) else None)
