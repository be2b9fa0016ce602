"""Images: thumbnails (made once, cached) and files inside the configured roots only.

A path that leaves its root gets 404, as a file that does not exist does.
"""

from __future__ import annotations

import os

from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response

from ..files import is_image, resolve, thumbnail
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
async def recording(request: Request, user) -> Response:
    b = bench(request)
    path = resolve(b.recordings, request.path_params["station"], request.path_params["path"])
    return _file(request, path if path is not None and is_image(path) else None)


@page("viewer")
async def dataset_file(request: Request, user) -> Response:
    b = bench(request)
    path = resolve({"dataset": b.cfg.dataset.path}, "dataset", request.path_params["path"])
    return _file(request, path if path is not None and is_image(path) else None)
