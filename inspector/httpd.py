"""``/metrics`` (Prometheus) and ``/health`` (JSON) on a small HTTP thread.

Shared by the station and the gate: each hands in its own registry and health function.
``/health`` answers 200 when the function says healthy, 503 otherwise, with the JSON body
that says why.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .errors import ConfigError

log = logging.getLogger(__name__)


class HttpEndpoint:
    """Serves ``/metrics`` and ``/health`` on a small thread."""

    def __init__(
        self,
        registry: CollectorRegistry,
        health: Callable[[], tuple[bool, dict]],
        host: str,
        port: int,
        setting: str = "metrics.port",
    ) -> None:
        """``setting``: the config key named when the port cannot be had (a clear error)."""
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                if self.path.split("?")[0] == "/metrics":
                    body, code, ctype = generate_latest(registry), 200, CONTENT_TYPE_LATEST
                elif self.path.split("?")[0] == "/health":
                    ok, detail = endpoint.health()
                    body = json.dumps(dict(detail, healthy=ok)).encode()
                    code, ctype = (200 if ok else 503), "application/json"
                else:
                    body, code, ctype = b"not found\n", 404, "text/plain"
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt, *args):
                log.debug("http: " + fmt, *args)

        self.health = health
        try:
            self.server = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            raise ConfigError(
                f"{setting}: cannot listen on {host}:{port}: {exc.strerror or exc}"
            ) from None
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="http", daemon=True)

    def start(self) -> None:
        self._thread.start()
        log.info(
            "metrics on http://%s:%d/metrics, health on /health",
            self.server.server_address[0],
            self.port,
        )

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
