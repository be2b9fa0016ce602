"""The review app: its state (``Workbench``), the route table and the server.

Views live in ``views/`` (one module per page kind), every SQL statement in ``store``,
templates in ``templates/``; this module only wires them.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from starlette.applications import Starlette
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from . import index
from .config import ReviewConfig
from .dataset import Labeller
from .inputs import ModelSpecs
from .jobs import Jobs
from .store import Store

log = logging.getLogger(__name__)
HERE = Path(__file__).parent


class Workbench:
    """What every view needs: the config, the store, the labeller, the training jobs."""

    def __init__(self, cfg: ReviewConfig, store: Store | None = None) -> None:
        self.cfg = cfg
        self.store = store or Store(cfg.database)
        self.recordings = {r.station: Path(r.path).resolve() for r in cfg.recordings}
        self.labeller = Labeller(cfg.dataset, self.store, self.recordings)
        self.models = ModelSpecs(cfg.models.registry)
        self.jobs = Jobs(cfg.training, cfg.dataset.path, self.store)
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


def create_app(cfg: ReviewConfig, store: Store | None = None, scan: bool = True) -> Starlette:
    from .views import compare, dataset, inbox, media, models, part, session, train

    bench = Workbench(cfg, store)
    if scan:
        added = bench.rescan()
        log.info("review: %d new part(s) indexed", added)
    routes = [
        Route("/login", session.login_form, methods=["GET"]),
        Route("/login", session.login, methods=["POST"]),
        Route("/logout", session.logout, methods=["POST"]),
        Route("/", inbox.inbox, methods=["GET"]),
        Route("/rescan", inbox.rescan, methods=["POST"]),
        Route("/label", inbox.bulk_label, methods=["POST"]),
        Route("/part/{pid:int}", part.part_page, methods=["GET"]),
        Route("/part/{pid:int}/label", part.label, methods=["POST"]),
        Route("/undo", part.undo, methods=["POST"]),
        Route("/thumb/{pid:int}", media.thumb, methods=["GET"]),
        Route("/input/{pid:int}", media.model_input, methods=["GET"]),
        Route("/heat/{pid:int}", media.heat, methods=["GET"]),
        Route("/media/rec/{station}/{path:path}", media.recording, methods=["GET"]),
        Route("/media/dataset/{path:path}", media.dataset_file, methods=["GET"]),
        Route("/dataset", dataset.dataset_page, methods=["GET"]),
        Route("/train", train.train_page, methods=["GET"]),
        Route("/train", train.start, methods=["POST"]),
        Route("/train/{rid:int}", train.progress, methods=["GET"]),
        Route("/train/{rid:int}/cancel", train.cancel, methods=["POST"]),
        Route("/compare", compare.compare_page, methods=["GET"]),
        Route("/models", models.models_page, methods=["GET"]),
        Route("/models/promote", models.promote, methods=["POST"]),
        Route("/models/rollback", models.rollback, methods=["POST"]),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes)
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
