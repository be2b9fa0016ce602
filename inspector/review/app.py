"""The review app: its state (``Workbench``), the route table and the server.

Views live in ``views/`` (one module per page kind), every SQL statement in ``store``,
templates in ``templates/``; this module only wires them.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from starlette.applications import Starlette
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.responses import RedirectResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from .config import ReviewConfig
from .dataset import Labeller
from .db import index
from .db.store import MAX_ID, Store
from .inputs import ModelSpecs
from .work.evaluations import Evaluations
from .work.exports import Exports
from .work.jobs import Jobs
from .work.promote import Promoter

log = logging.getLogger(__name__)
HERE = Path(__file__).parent


class RowIdConvertor(Convertor[int]):
    """A row id in a URL: 1 to 18 digits (below 2^63, what SQLite and PostgreSQL store); a
    longer number matches no route, so it is answered 404, never an overflow."""

    regex = "[0-9]{1,18}"

    def convert(self, value: str) -> int:
        return int(value)

    def to_string(self, value: int) -> str:
        value = int(value)
        assert 0 <= value <= MAX_ID, "a row id is 0..2^63-1"
        return str(value)


register_url_convertor("rowid", RowIdConvertor())

# Every response, pages and files alike. Scripts and styles come from /static only (no
# inline script or style attribute in the templates); no framing, no referrer off the site.
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
MAX_BODY = 1 << 20  # bytes of a request body (the largest form is a bulk label of a page)


class Guard:
    """ASGI middleware: the security headers on every response, and a request body larger
    than ``MAX_BODY`` answered 413 before any view reads it."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_with_headers(message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                names = {k for k, _ in SECURITY_HEADERS}
                headers = [h for h in message.get("headers", []) if h[0].lower() not in names]
                message = {**message, "headers": headers + SECURITY_HEADERS}
            await send(message)

        length = dict(scope.get("headers") or []).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > MAX_BODY:
            await _too_large(send_with_headers)
            return
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > MAX_BODY:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send_with_headers)
        except _TooLarge:
            if not started:
                await _too_large(send_with_headers)


class _TooLarge(Exception):
    pass


async def _too_large(send) -> None:
    body = f"request body larger than {MAX_BODY} bytes".encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class Workbench:
    """What every view needs: the config, the store, the labeller, the training jobs."""

    def __init__(self, cfg: ReviewConfig, store: Store | None = None) -> None:
        self.cfg = cfg
        self.store = store or Store(cfg.database)
        self.recordings = {r.station: Path(r.path).resolve() for r in cfg.recordings}
        self.labeller = Labeller(cfg.dataset, self.store, self.recordings)
        self.models = ModelSpecs(cfg.models.registry)
        self.jobs = Jobs(cfg.training, cfg.dataset.path, self.store)
        self.promoter = Promoter(cfg.models.stations, self.store)
        self.evaluations = Evaluations(cfg.dataset.path, cfg.reports)
        self.exports = Exports(cfg.models.registry)
        self._stop = threading.Event()
        self._scanner: threading.Thread | None = None

    def rescan(self) -> int:
        return sum(index.scan(self.store, s, root).added for s, root in self.recordings.items())

    def start_scanner(self) -> None:
        if self.cfg.rescan_s <= 0 or self._scanner is not None:
            return

        def loop() -> None:
            while not self._stop.wait(self.cfg.rescan_s):
                try:
                    self.rescan()
                except Exception:  # the app keeps serving what it has; the log says why
                    log.exception("rescan of the recordings failed")

        self._scanner = threading.Thread(target=loop, name="review-rescan", daemon=True)
        self._scanner.start()

    def stop(self) -> None:
        self._stop.set()
        self.promoter.stop()
        self.evaluations.stop()
        self.exports.stop()


async def _http_error(request, exc: HTTPException):
    """Not found and the like, on the site's error page (never the framework's bare text)."""
    from .views.common import error

    words = {404: "Not found", 405: "Not allowed here"}.get(exc.status_code, "That did not work")
    message = {
        404: "Not found: there is no such page or file here.",
        405: "This address does not take that kind of request.",
    }.get(exc.status_code, str(exc.detail))
    return error(request, None, exc.status_code, message, title=words)


async def _favicon(request):
    return RedirectResponse("/static/favicon.svg", status_code=301)


def create_app(cfg: ReviewConfig, store: Store | None = None, scan: bool = True) -> Starlette:
    from .views import compare, dashboard, dataset, inbox, media, models, part, session, train

    bench = Workbench(cfg, store)
    if scan:
        added = bench.rescan()
        log.info("review: %d new part(s) indexed", added)
    bench.promoter.start_watching()
    routes = [
        Route("/login", session.login_form, methods=["GET"]),
        Route("/login", session.login, methods=["POST"]),
        Route("/logout", session.logout, methods=["POST"]),
        Route("/", inbox.inbox, methods=["GET"]),
        Route("/rescan", inbox.rescan, methods=["POST"]),
        Route("/dashboard", dashboard.dashboard, methods=["GET"]),
        Route("/label", inbox.bulk_label, methods=["POST"]),
        Route("/part/{pid:rowid}", part.part_page, methods=["GET"]),
        Route("/part/{pid:rowid}/label", part.label, methods=["POST"]),
        Route("/undo", part.undo, methods=["POST"]),
        Route("/part/{pid:rowid}/regions", part.add_region, methods=["POST"]),
        Route("/part/{pid:rowid}/regions/{rid:rowid}/remove", part.remove_region, methods=["POST"]),
        Route("/thumb/{pid:rowid}", media.thumb, methods=["GET"]),
        Route("/input/{pid:rowid}", media.model_input, methods=["GET"]),
        Route("/heat/{pid:rowid}", media.heat, methods=["GET"]),
        Route("/media/rec/{station}/{path:path}", media.recording, methods=["GET"]),
        Route("/media/dataset/{path:path}", media.dataset_file, methods=["GET"]),
        Route("/dataset", dataset.dataset_page, methods=["GET"]),
        Route("/train", train.train_page, methods=["GET"]),
        Route("/train", train.start, methods=["POST"]),
        Route("/train/{rid:rowid}", train.progress, methods=["GET"]),
        Route("/train/{rid:rowid}/cancel", train.cancel, methods=["POST"]),
        Route("/train/{rid:rowid}/export", train.export, methods=["POST"]),
        Route("/train/export/{xid:rowid}", train.export_progress, methods=["GET"]),
        Route("/compare", compare.compare_page, methods=["GET"]),
        Route("/models", models.models_page, methods=["GET"]),
        Route("/models/promote", models.promote, methods=["POST"]),
        Route("/models/verify", models.verify, methods=["POST"]),
        Route("/models/rollback", models.rollback, methods=["POST"]),
        Route("/models/evaluate", models.evaluate, methods=["POST"]),
        Route("/models/evaluation/{eid:rowid}", models.evaluation, methods=["GET"]),
        Route("/models/promotion/{pid:rowid}", models.promotion, methods=["GET"]),
        Route("/favicon.ico", _favicon, methods=["GET"]),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(Guard)],
        exception_handlers={404: _http_error, 405: _http_error},
    )
    app.state.bench = bench
    app.state.templates = Jinja2Templates(directory=str(HERE / "templates"))
    return app


def serve(cfg: ReviewConfig) -> None:
    import uvicorn

    app = create_app(cfg)
    app.state.bench.start_scanner()
    try:
        uvicorn.run(app, host=cfg.server.host, port=cfg.server.port, log_level="warning")
    finally:
        app.state.bench.stop()
