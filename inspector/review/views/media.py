"""Images: thumbnails and model inputs (made once, cached), heat-map overlays, and files
inside the configured roots only.

A path that leaves its root or passes through a link gets 404, as a file that does not
exist does. Files are read without following a link and sent from memory (recorded frames
are small), decoding and reading in a worker thread, never on the event loop.
"""

from __future__ import annotations

import mimetypes
import os

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from ...contract.preprocess import FrameError
from ..files import is_image, read_bytes, resolve, thumbnail
from ..inputs import heat_rel, plan, read_sidecar
from ..inputs import model_input as make_input
from .common import bench, page

CACHE = "private, max-age=86400"


def _not_found() -> Response:
    return PlainTextResponse("not found", status_code=404)


def _load(path):
    """(bytes, etag) of a file opened without following a link; None when it can't be."""
    try:
        st = os.lstat(path)
        data = read_bytes(path)
    except OSError:
        return None
    return data, f'"{st.st_mtime_ns:x}-{st.st_size:x}"'


async def _file(request: Request, path) -> Response:
    if path is None:
        return _not_found()
    loaded = await run_in_threadpool(_load, path)
    if loaded is None:
        return _not_found()
    data, etag = loaded
    headers = {"Cache-Control": CACHE, "ETag": etag}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    media = mimetypes.guess_type(str(path))[0] or "application/octet-stream"
    return Response(data, media_type=media, headers=headers)


async def _part(request: Request):
    return bench(request).store.part(request.path_params["pid"])


@page("viewer")
async def thumb(request: Request, user) -> Response:
    b = bench(request)
    part = await _part(request)
    if part is None:
        return _not_found()
    source = resolve(b.recordings, part["station"], part["image"])
    if source is None or not is_image(source):
        return _not_found()
    out = await run_in_threadpool(thumbnail, source, b.cfg.cache, b.cfg.thumbnail_px)
    return await _file(request, out)


@page("viewer")
async def model_input(request: Request, user) -> Response:
    """The part's model input as PNG: its frame through the sidecar's geometry and the
    model's resize (inputs.py); 422 with the reason when the frame can't be prepared."""
    b = bench(request)
    part = await _part(request)
    if part is None:
        return _not_found()
    source = resolve(b.recordings, part["station"], part["image"])
    sidecar = resolve(b.recordings, part["station"], part["sidecar"])
    if source is None or sidecar is None or not is_image(source):
        return _not_found()
    record, problem = await run_in_threadpool(read_sidecar, b.recordings, part)
    if record is None:
        return PlainTextResponse(problem, status_code=422)
    st = sidecar.stat()
    how = plan(record, b.models)
    try:
        out = await run_in_threadpool(
            make_input, source, f"{st.st_size}|{st.st_mtime_ns}", how, b.cfg.cache
        )
    except (FrameError, OSError, ValueError) as exc:
        return PlainTextResponse(f"no model input: {exc}", status_code=422)
    return await _file(request, out)


@page("viewer")
async def heat(request: Request, user) -> Response:
    """The recorder's heat-map overlay (STEM.heat.png) beside the part's image."""
    b = bench(request)
    part = await _part(request)
    if part is None:
        return _not_found()
    return await _file(request, resolve(b.recordings, part["station"], heat_rel(part["image"])))


@page("viewer")
async def recording(request: Request, user) -> Response:
    b = bench(request)
    path = resolve(b.recordings, request.path_params["station"], request.path_params["path"])
    return await _file(request, path if path is not None and is_image(path) else None)


@page("viewer")
async def dataset_file(request: Request, user) -> Response:
    b = bench(request)
    path = resolve({"dataset": b.cfg.dataset.path}, "dataset", request.path_params["path"])
    return await _file(request, path if path is not None and is_image(path) else None)
