"""Promotion of a model to a station: one path, in a worker thread, progress in the store.

A promotion (or a roll back, which promotes the model before) copies the model into the
station's models folder and then:

- **station running** (its retained ``PREFIX/status`` says online, starting or degraded):
  sends ``{"action": "promote", "path": ...}`` on ``PREFIX/cmd/model`` (MQTT 5, response
  topic and correlation data, as the broker user the review config names: the ACL lets
  only ``admin`` publish there). The station loads the model, runs its acceptance checks
  with the golden set and swaps between two batches, or refuses and keeps its model; its
  answer (``swapped`` / ``unchanged`` / ``refused`` / ``busy`` / ``error`` and why) is the
  promotion's outcome. On ``swapped`` the workbench moves ``current`` too, so that a
  restart runs the same model.
- **station down** (its status says offline or it never published one; or the station has
  no ``mqtt`` settings, so it cannot be asked): runs ``inspector verify CONFIG
  GOLDEN --model PATH`` as a process of its own (the station's own checks and golden set,
  nothing written) and on a pass moves ``current``: the station runs the model at its next
  start (``status`` ``linked``).
- **cannot tell** (the broker is unreachable or refuses the workbench's user): nothing
  changes; a link moved under a station that runs would change its model at its next
  restart without anyone having seen it checked.

Nothing here runs on the event loop: ``Promoter.start`` queues the work on a thread and
returns the promotion's id; the page polls it. Nothing is written outside the station's
models folder and the workbench's database (the station's config is only read).
``StationWatch`` keeps each station's retained status, so the models page shows what the
station actually runs next to the registry's ``current``.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from ...contract.mqtt import RequestError, new_client
from ...contract.mqtt import request as mqtt_request
from ...contract.topics import Topics
from ...errors import InspectorError
from ..config import StationModelSection
from ..db.store import Store
from . import registry

log = logging.getLogger(__name__)
UP = ("online", "starting", "degraded", "halted")  # halted: the plant holds inspection
STALE_S = 60.0  # a status not heard for this long counts as none (the station republishes it)
FIRST_STATUS_S = 3.0  # how long a promotion waits for a watch that has not heard one yet
OUTPUT_KEPT = 6000  # characters of `inspector verify`'s output kept with the promotion


class StationWatch:
    """The station's retained status (``PREFIX/status``), kept current by a subscriber."""

    def __init__(self, station: StationModelSection) -> None:
        self.station = station
        self.status: dict | None = None
        self.heard: float | None = None  # monotonic time of the last status
        self.connected = False
        self.error: str | None = None
        self._lock = threading.Lock()
        self._first = threading.Event()
        self._client = None
        self.topic = Topics.of(station.prefix).status
        self.alarms: list[dict] = []  # the SPC service's active alarms for this station
        self.chart: dict | None = None  # the SPC service's reject chart of this station

    def start(self) -> None:
        mq = self.station.mqtt
        if mq is None or self._client is not None:
            return
        client = new_client(mq, f"inspector-review-{uuid.uuid4().hex[:8]}", "5")
        client.reconnect_delay_set(min_delay=0.2, max_delay=5)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._client = client
        try:
            client.connect_async(mq.host, mq.port, keepalive=max(5, mq.keepalive_s))
        except (OSError, ValueError) as exc:
            self.error = f"cannot reach broker {mq.host}:{mq.port}: {exc}"
        client.loop_start()

    def stop(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None

    def _on_connect(self, client, _userdata, _flags, reason, _props=None) -> None:
        if getattr(reason, "is_failure", False):
            self.error = f"broker refused the connection: {reason}"
            return
        self.connected, self.error = True, None
        client.subscribe(self.topic, qos=1)
        if self.station.spc_alarms:
            client.subscribe(self.station.spc_alarms, qos=1)
            client.subscribe(self.station.spc_chart, qos=1)

    def _on_disconnect(self, _client, _userdata, _flags=None, reason=None, _props=None) -> None:
        self.connected = False

    def _on_message(self, _client, _userdata, msg) -> None:
        try:
            status = json.loads(msg.payload) if msg.payload else None
        except ValueError:
            return
        if msg.topic == self.station.spc_chart and msg.topic != self.topic:
            if isinstance(status, dict) and isinstance(status.get("points"), list):
                with self._lock:
                    self.chart = status
            return
        if msg.topic == self.station.spc_alarms and msg.topic != self.topic:
            active = status.get("active") if isinstance(status, dict) else None
            mine = [
                a
                for a in (active if isinstance(active, list) else [])
                if isinstance(a, dict) and a.get("station") == self.station.name
            ]
            with self._lock:
                self.alarms = mine
            return
        if status is not None and not isinstance(status, dict):
            return
        with self._lock:
            self.status, self.heard = status, time.monotonic()
        self._first.set()

    def wait_first(self, timeout: float) -> None:
        self._first.wait(timeout)

    def snapshot(self) -> dict:
        """What the models page shows: state, the model it runs, since when it was heard."""
        with self._lock:
            status, heard = self.status, self.heard
        if self.station.mqtt is None:
            return {"known": False, "why": "no broker configured for this station"}
        if status is None:
            why = self.error or ("no status heard" if self.connected else "broker not reached")
            return {"known": False, "why": why}
        model = status.get("model") if isinstance(status.get("model"), dict) else {}
        return {
            "known": True,
            "state": str(status.get("state", "?")),
            "detail": str(status.get("detail") or "")[:300],
            "model_id": str(model.get("id") or status.get("model_id") or ""),
            "age_s": time.monotonic() - heard,
            "last_change": model.get("last_change"),
        }

    def running(self) -> bool:
        """The station is up: a fresh status that says online, starting, degraded or halted."""
        s = self.snapshot()
        return bool(s["known"] and s["state"] in UP and s["age_s"] < STALE_S and self.connected)


class Promoter:
    """Starts promotions on worker threads, one at a time per station."""

    def __init__(self, stations: list[StationModelSection], store: Store) -> None:
        self.stations = {s.name: s for s in stations}
        self.store = store
        self.watches = {s.name: StationWatch(s) for s in stations}
        self._threads: dict[int, threading.Thread] = {}
        self._lock = threading.Lock()
        for row in store.running_promotions():  # their worker went with the last process
            store.set_promotion(
                row["id"], status="interrupted", ended=time.time(), verify="the workbench stopped"
            )

    def start_watching(self) -> None:
        for watch in self.watches.values():
            watch.start()

    def stop(self) -> None:
        for watch in self.watches.values():
            watch.stop()

    def start(
        self, station: StationModelSection, name: str, folder: Path, user: str, kind="promote"
    ) -> int:
        """Record the promotion and start its worker; its id (the page polls it)."""
        with self._lock:
            for pid, t in self._threads.items():
                if t.is_alive() and self.store.promotion(pid)["station"] == station.name:
                    raise InspectorError(f"a promotion to {station.name} is running (#{pid})")
            previous = registry.current(station)
            pid = self.store.start_promotion(station.name, name, str(folder), previous, user, kind)
            thread = threading.Thread(
                target=self._run,
                args=(pid, station, name, Path(folder), kind),
                name=f"promote-{pid}",
                daemon=True,
            )
            self._threads[pid] = thread
            thread.start()
        log.info("%s of %s to %s started by %s (#%d)", kind, name, station.name, user, pid)
        return pid

    def join(self, pid: int, timeout: float | None = None) -> None:
        t = self._threads.get(pid)
        if t is not None:
            t.join(timeout)

    # -- the worker ---------------------------------------------------------------------
    def _run(
        self, pid: int, station: StationModelSection, name: str, folder: Path, kind: str
    ) -> None:
        notes: list[str] = []

        def note(line: str) -> None:
            notes.append(f"{time.strftime('%H:%M:%S')} {line}")
            self.store.set_promotion(pid, verify="\n".join(notes))

        try:
            if kind == "verify":
                status, via = self._verify(station, folder / "model.onnx", note)
            else:
                status, via = self._promote(station, name, folder, note)
        except InspectorError as exc:
            note("; ".join(exc.problems))
            status, via = "error", None
        except Exception as exc:  # a bug must not leave the promotion 'running' for ever
            log.exception("promotion #%d failed", pid)
            note(f"{type(exc).__name__}: {exc}")
            status, via = "error", None
        self.store.set_promotion(pid, status=status, via=via, ended=time.time())
        log.info("promotion #%d to %s: %s", pid, station.name, status)

    def _promote(self, station, name, folder, note) -> tuple[str, str | None]:
        models = Path(station.models).resolve()
        fresh = False
        if folder.resolve().parent == models:  # a roll back: already in the models folder
            target = folder
        else:
            fresh = not (models / registry.slug(name)).exists()
            target = registry.install(station, name, folder)
        model = target / "model.onnx"
        note(f"model {registry.model_id(target)} in {target}")
        status, via = self._decide(station, target, model, note)
        unused = status == "refused" or (status == "error" and via is None)  # never asked
        if unused and fresh:  # the copy made for this promotion goes again
            shutil.rmtree(target, ignore_errors=True)
            note(f"{target.name} removed from the models folder")
        return status, via

    def _decide(self, station, target: Path, model: Path, note) -> tuple[str, str | None]:
        watch = self.watches[station.name]
        if station.mqtt is not None:
            watch.start()
            if watch.status is None:
                watch.wait_first(FIRST_STATUS_S)
        if watch.running():
            return self._by_request(station, target, model, watch, note)
        if station.mqtt is not None and not watch.connected:
            # the station may run and not be seen: moving the link under it would make its
            # next restart change models unannounced, so nothing changes
            note(
                f"cannot tell whether station {station.name} runs "
                f"({watch.snapshot().get('why')}); nothing changed"
            )
            return "error", None
        snap = watch.snapshot()
        why = snap.get("why") if not snap["known"] else f"its status says {snap['state']}"
        note(f"station {station.name} is not running ({why}): verifying with inspector verify")
        return self._by_link(station, target, model, note)

    def _by_request(self, station, target: Path, model: Path, watch, note):
        topics = Topics.of(station.prefix)
        note(f"asking the station: promote on {topics.cmd_model} (as {station.mqtt.username})")
        try:
            answer = mqtt_request(
                station.mqtt,
                topics.cmd_model,
                topics.reply(f"review-{uuid.uuid4().hex[:12]}"),
                {"action": "promote", "path": str(model)},
                station.answer_timeout_s,
            )
        except RequestError as exc:
            if not watch.running():
                note(f"no answer ({exc}) and the station is no longer running")
                return self._by_link(station, target, model, note)
            note(f"no answer: {exc}; nothing changed")
            return "error", "station"
        outcome = str(answer.get("outcome", "error"))
        reason = str(answer.get("reason") or "")
        stage = f" at {answer['stage']}" if answer.get("stage") else ""
        note(
            f"station answered {outcome}{stage}: model {answer.get('model_id')}"
            + (f"; {reason}" if reason else "")
        )
        if outcome in ("swapped", "unchanged"):
            registry.link_to(Path(station.models), target.name)
            note(f"current -> {target.name} (a restart runs the same model)")
            return outcome, "station"
        return (outcome if outcome in ("refused", "busy") else "error"), "station"

    def _by_link(self, station, target: Path, model: Path, note):
        status, via = self._verify(station, model, note)
        if status != "verified":
            if status == "refused":
                note("current not changed")
            return status, via
        registry.link_to(Path(station.models), target.name)
        note(f"current -> {target.name}: the station runs it at its next start")
        return "linked", "link"

    def _verify(self, station, model: Path, note) -> tuple[str, str]:
        """``inspector verify`` of ``model`` with the station's config and golden set (the
        station's own acceptance rule, run here); changes nothing. ('verified' | 'refused' |
        'error', 'link')."""
        cmd = [
            sys.executable,
            "-m",
            "inspector.cli",
            "verify",
            str(station.config),
            str(station.golden),
            "--model",
            str(model),
            "--no-publish",
        ]
        note("running: inspector " + " ".join(cmd[3:]))
        try:
            r = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                timeout=station.verify_timeout_s,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            note(f"inspector verify did not finish in {station.verify_timeout_s:.0f} s")
            return "error", "link"
        except OSError as exc:
            note(f"cannot run inspector verify: {exc}")
            return "error", "link"
        note(((r.stdout or "") + (r.stderr or ""))[-OUTPUT_KEPT:].rstrip())
        if r.returncode != 0:
            note(f"inspector verify failed (exit {r.returncode})")
            return "refused", "link"
        return "verified", "link"
