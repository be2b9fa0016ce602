"""The station as an OPC 40100 ``VisionSystemType`` on an OPC UA server: the MES's view
beside the line link (a ``station.link.LineView``).

The server (``vision.py``, asyncua) runs in a process of its own, so that what an MES asks
for (encrypting events, browsing, logins) takes none of the station's interpreter: the
station's threads only put each verdict and status change on a queue (no wait, no I/O);
one thread here sends them down a pipe in batches, another carries the server's requests
(PrepareRecipe: ``{"action": "promote", "path": ...}``; StartSingleJob: a trigger; Halt,
Stop ...: a hold of inspection) to the station's ``Handlers`` and their answers back. The server process ends with the station,
or on its own when the station's process is gone (the pipe closes).

    view = OpcUaView(cfg.plant.opcua, "line-3")
    station = Station(cfg, views=(view,))   # the station calls start/verdict/status/stop
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import multiprocessing
import queue
import threading
import time

from ...contract.records import Verdict
from ...errors import ConfigError, InspectorError
from ...logs import JsonFormatter
from .config import OpcUaSection
from .users import load_users
from .wire import flat

log = logging.getLogger(__name__)

START_TIMEOUT_S = 60.0  # the first start makes a certificate (an RSA key) on a slow PC
QUEUE_MAX = 10_000  # verdicts waiting for the pipe; more are counted as dropped
BATCH_MAX = 512
BATCH_WAIT_S = 0.002  # at most this much later to the MES; at line rate far fewer wake-ups


class OpcUaView:
    """An OPC UA server for one station. ``start(handlers)`` returns once it listens."""

    def __init__(self, section: OpcUaSection, station_id: str) -> None:
        """Reads the users file now: a missing or malformed one stops ``inspector run``
        before anything starts (exit 2, naming the file)."""
        if section.users_file is not None:
            load_users(section.users_file)
        if importlib.util.find_spec("asyncua") is None:  # the server process imports it
            raise ConfigError(
                "plant.opcua needs the opcua extra: pip install 'defect-inspector[opcua]'"
            )
        self.cfg = section
        self.station_id = station_id
        self.endpoint = ""  # the URL clients connect to, once started
        self.dropped = 0  # verdicts not sent because the server fell behind
        self.handlers = None
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._status: dict = {}
        self._proc = None
        self._conn = None
        self._ready = threading.Event()
        self._error = ""
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()

    # -- LineView ------------------------------------------------------------------------
    def start(self, handlers) -> None:
        self.handlers = handlers
        status = self._status or (handlers.status() if handlers is not None else {})
        ctx = multiprocessing.get_context("spawn")  # no fork of a process with threads
        self._conn, child = ctx.Pipe(duplex=True)
        root = logging.getLogger()
        fmt = (
            "json" if any(isinstance(h.formatter, JsonFormatter) for h in root.handlers) else "text"
        )
        triggers = handlers is not None and handlers.trigger is not None
        from .vision import child_main

        self._proc = ctx.Process(
            target=child_main,
            args=(
                child,
                self.cfg,
                self.station_id,
                status,
                triggers,
                logging.getLevelName(root.level),
                fmt,
            ),
            name=f"opcua-{self.station_id}",
            daemon=True,
        )
        self._proc.start()
        child.close()
        self._threads = [
            threading.Thread(target=self._send_loop, name="opcua-send", daemon=True),
            threading.Thread(target=self._recv_loop, name="opcua-recv", daemon=True),
        ]
        for t in self._threads:
            t.start()
        if not self._ready.wait(START_TIMEOUT_S):
            self.stop()
            raise InspectorError(
                f"plant.opcua: the server did not start in {START_TIMEOUT_S:.0f} s"
            )
        if self._error:
            self.stop()
            raise ConfigError(self._error)
        log.info(
            "OPC UA server for %s at %s (process %d)",
            self.station_id,
            self.endpoint,
            self._proc.pid,
        )

    def stop(self) -> None:
        if self._proc is None or self._stopping.is_set():
            return
        self._stopping.set()
        self._queue.put(("stop",))
        self._proc.join(10.0)
        if self._proc.is_alive():
            log.warning("OPC UA server did not stop in 10 s: killed")
            self._proc.kill()  # it leaves SIGTERM to the station
            self._proc.join(5.0)
        for t in self._threads:
            t.join(2.0)
        self._conn.close()

    def verdict(self, verdict: Verdict) -> None:
        if self._queue.qsize() < QUEUE_MAX:
            self._queue.put(verdict)  # SimpleQueue: no lock to wait for, no condition to notify
        else:
            self.dropped += 1
            if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                log.warning("OPC UA: %d results dropped (the server falls behind)", self.dropped)

    def status(self, payload: dict) -> None:
        self._status = payload
        if self._proc is not None:
            self._queue.put(("status", payload))

    # -- the pipe --------------------------------------------------------------------------
    def _send_loop(self) -> None:
        """Verdicts in batches, the rest as they come, in the order the station gave them."""
        conn, q = self._conn, self._queue
        while True:
            item = q.get()
            time.sleep(BATCH_WAIT_S)  # let a few more come: one pickle and one write for all
            batch = []
            while True:
                if isinstance(item, Verdict):
                    batch.append(flat(item))
                else:
                    if batch:
                        self._send(("verdicts", batch))
                        batch = []
                    if item[0] == "stop":
                        self._send(("stop",))
                        return
                    self._send(item)
                if len(batch) >= BATCH_MAX:
                    break
                try:
                    item = q.get_nowait()
                except queue.Empty:
                    break
            if batch:
                self._send(("verdicts", batch))
            if conn.closed:
                return

    def _send(self, msg) -> None:
        with contextlib.suppress(OSError, ValueError):  # the server is gone; stop() says so
            self._conn.send(msg)

    def _recv_loop(self) -> None:
        """The server's messages: ready or error at start, then model requests and triggers."""
        while True:
            try:
                msg = self._conn.recv()
            except (EOFError, OSError):
                if not self._ready.is_set():
                    self._error = "plant.opcua: the server process ended before it started"
                    self._ready.set()
                elif not self._stopping.is_set():
                    log.error("OPC UA server process ended (exit code %s)", self._proc.exitcode)
                return
            kind = msg[0]
            if kind == "ready":
                self.endpoint = msg[1]
                self._ready.set()
            elif kind == "error":
                self._error = msg[1]
                self._ready.set()
            elif kind == "command":
                self._command(msg[1], msg[2])
            elif kind == "trigger" and self.handlers is not None and self.handlers.trigger:
                self.handlers.trigger(msg[1])
            elif kind == "hold":
                self._hold(msg[1], msg[2])

    def _hold(self, rid: int, why: str | None) -> None:
        """The state machine stops (``why``) or resumes (None) inspection; answered once the
        station holds, so the MES's method returns after it."""
        hold = self.handlers.hold if self.handlers is not None else None
        if hold is None:
            outcome = "unsupported"
        else:
            hold(why)
            outcome = "held" if why else "inspecting"
        self._queue.put(("reply", rid, {"outcome": outcome}))

    def _command(self, rid: int, payload: bytes) -> None:
        def reply(outcome: dict) -> None:
            self._queue.put(("reply", rid, outcome))

        if self.handlers is None or self.handlers.command is None:
            reply({"outcome": "error", "reason": "this station takes no model requests"})
            return
        self.handlers.command(payload, reply)
