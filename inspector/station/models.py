"""The model life cycle on a running station: swap, roll back, reload (SIGHUP).

What changes is the whole model unit (unit.py: classifier, anomaly model, thresholds,
training statistics). A candidate unit is loaded in the background (``load_candidate``: the
station's ``acceptance`` rule, warm-up, the golden set under the line's combined decision when
``model.golden`` names one) while the live unit keeps deciding. Only a candidate that
passes every step goes live, and it does so between two batches: the pipeline reads
``ModelLife.live`` once per batch (``batch_model``), so each batch is decided by one model
and the verdicts' ``model_id`` changes at one part, which the swap event names. A refused
candidate changes nothing; the retained status says why (``status()``).

Requests come from ``PREFIX/cmd/model`` (MQTT 5 request/response; the ACL lets only the
``admin`` user publish there), from SIGHUP (``reload``: read the ``model.path`` link again)
and from the CLI (``inspector model``). One thread works through them in order.

    {"action": "swap", "path": "models/v7.onnx"}     # load, check, verify, go live
    {"action": "swap", "path": "v7.onnx", "anomaly_path": "good-v3.onnx"}  # both models
    {"action": "swap", "anomaly_path": "good-v3.onnx"}  # the anomaly model alone
    {"action": "rollback"}                          # the previous model, at once
    {"action": "reload"}                            # model.path again (the 'current' link)
    {"action": "status"}                            # what runs, what ran, the last outcome
"""

from __future__ import annotations

import collections
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import Counter

from .candidate import Refused, load_candidate, resolve_model_path
from .config import StationConfig
from .shadow import Shadow, ShadowCounters
from .unit import KEEP, ModelUnit

log = logging.getLogger(__name__)

ACTIONS = ("swap", "promote", "rollback", "reload", "status", "shadow", "shadow-stop")
COMMAND_QUEUE = 4  # requests waiting behind the one being worked on; more are answered 'busy'
EVENTS_KEPT = 10  # swap events in the status history
__all__ = ["LifeSettings", "ModelLife", "reload_on_sighup"]


@dataclass(frozen=True)
class LifeSettings:
    """``model.keep``, ``model.golden``, ``model.shadow`` and ``model.shadow_max_share``."""

    keep: int = 3
    golden: Path | None = None
    shadow: Path | None = None
    shadow_max_share: float = 0.3

    @classmethod
    def of(cls, cfg: StationConfig) -> LifeSettings:
        m = cfg.model
        return cls(m.keep, m.golden, m.shadow, m.shadow_max_share)


class ModelLife:
    """The live model, the ones before it (``model.keep``), and the requests to change it.

    ``current`` (generation, model) is read without a lock (one attribute: a whole tuple);
    the pipeline reads it once per batch, while it takes the batch from the queue, and calls
    ``announce`` before running it. Changes happen on this object's own thread."""

    def __init__(
        self,
        cfg: StationConfig,
        first: ModelUnit,
        registry,
        spec,
        workers: int,
        on_change: Callable[[], None] = lambda: None,
        send_shadow: Callable[[bytes], None] | None = None,
    ) -> None:
        """``send_shadow(payload)``: how shadow decisions leave (the link's)."""
        self.cfg = cfg
        self.settings = LifeSettings.of(cfg)
        self.spec = spec  # what the station prepares; every candidate must take it
        self.workers = workers
        self.current: tuple[int, ModelUnit] = (0, first)
        self.send_shadow = send_shadow
        self.shadow: Shadow | None = None
        self.shadow_problem = ""  # why the configured shadow model is not running
        self._shadow_counters = ShadowCounters(registry)
        self.previous: collections.deque[ModelUnit] = collections.deque(
            maxlen=max(self.settings.keep - 1, 0)
        )
        self.events: collections.deque[dict] = collections.deque(maxlen=EVENTS_KEPT)
        self.last: dict | None = None  # the last request's outcome (retained status)
        self.on_change = on_change
        self._announced = 0
        self._first: dict[int, dict] = {}  # generation -> the first part it decided
        self._lock = threading.Lock()
        self._requests: queue.Queue = queue.Queue(maxsize=COMMAND_QUEUE)
        self._thread = threading.Thread(target=self._work, name="models", daemon=True)
        self._stop = threading.Event()
        self.changes = Counter(
            "inspector_model_changes",
            "model swap, rollback and reload requests, by outcome",
            ["action", "outcome"],
            registry=registry,
        )

    @property
    def live(self) -> ModelUnit:
        return self.current[1]

    # -- the pipeline's side ------------------------------------------------------------------
    def announce(self, generation: int, first_part) -> None:
        """A batch of ``generation`` (from ``current``) starts with ``first_part``: the first
        such batch names the part at which the change took effect (event and log)."""
        if generation <= self._announced:
            return
        with self._lock:
            if generation <= self._announced:
                return
            self._announced = generation
            # kept for ``_record`` too: the new unit may decide before its event is recorded
            first = {"part_id": first_part.part_id, "seq": first_part.seq}
            self._first = {generation: first}
            for event in reversed(self.events):
                if event.get("generation") == generation:
                    event["first_part"] = first
                    break
        log.info(
            "model %s decides from part %r (seq %d) on",
            self.current[1].model_id if self.current[0] == generation else "?",
            first_part.part_id,
            first_part.seq,
        )
        self.on_change()

    # -- requests ------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()
        if self.settings.shadow is not None:
            self.request("shadow", str(self.settings.shadow))

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2.0)
        if self.shadow is not None:
            self.shadow.stop()

    def request(
        self,
        action: str,
        path: str | None = None,
        reply: Callable[[dict], None] | None = None,
        anomaly_path: str | None = KEEP,
    ) -> bool:
        """Queue a request (any thread); ``reply(outcome)`` when done. False when too many
        are waiting (the reply says 'busy'). ``anomaly_path``: the unit's anomaly model
        (KEEP: the live one; "": none)."""
        if action not in ACTIONS:
            outcome = self._outcome(action, "error", f"unknown action {action!r}; one of {ACTIONS}")
            if reply:
                reply(outcome)
            return False
        try:
            self._requests.put_nowait((action, path, anomaly_path, reply))
            return True
        except queue.Full:
            if reply:
                reply(self._outcome(action, "busy", "too many model requests waiting"))
            return False

    def on_command(self, payload: bytes, reply: Callable[[dict], None]) -> None:
        """A request from the link to the line (``PREFIX/cmd/model``), on the link's thread:
        queue it; ``reply(outcome)`` answers the requester."""
        try:
            body = json.loads(payload or b"{}")
            if not isinstance(body, dict):
                raise ValueError("not a JSON object")
            action = str(body.get("action", ""))
            path = body.get("path")
            anomaly = body.get("anomaly_path", KEEP)
            for key, value in (("path", path), ("anomaly_path", anomaly)):
                if value is not None and not isinstance(value, str):
                    raise ValueError(f"{key!r} must be a string")
        except (ValueError, UnicodeDecodeError) as exc:
            log.warning("model command ignored: %s", exc)
            reply(self._outcome("?", "error", f"malformed command: {exc}"))
            return
        log.info("model command: %s %s", action, path or "")
        self.request(action, path, reply, "" if anomaly is None else anomaly)

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                action, path, anomaly, reply = self._requests.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                outcome = self.handle(action, path, anomaly)
            except Exception as exc:  # a bug here must not leave the requester waiting
                log.exception("model %s failed", action)
                outcome = self._outcome(action, "error", f"{type(exc).__name__}: {exc}")
            if reply:
                reply(outcome)

    def handle(self, action: str, path: str | None = None, anomaly_path: str | None = KEEP) -> dict:
        """Carry out one request now (the models thread; tests call it directly)."""
        if action == "status":
            return self._outcome(action, "ok", "")
        if action in ("shadow", "shadow-stop"):
            outcome = self._set_shadow(action, path, anomaly_path)
        elif action == "rollback":
            outcome = self._rollback()
        elif action in ("swap", "promote") and not path and anomaly_path == KEEP:
            outcome = self._outcome(action, "error", "a swap needs 'path' or 'anomaly_path'")
        else:
            if action == "reload":  # model.path (the 'current' link) read again
                target, anomaly_path = (
                    resolve_model_path(self.cfg, None),
                    self._configured_anomaly(),
                )
            else:
                target = resolve_model_path(self.cfg, path) if path else self.live.path
            outcome = self._swap(action, target, anomaly_path)
        self.changes.labels(action=action, outcome=outcome["outcome"]).inc()
        return outcome

    def _configured_anomaly(self) -> str | None:
        """``anomaly_model.path`` read again (reload), or KEEP when the station has none."""
        a = self.cfg.anomaly_model
        return KEEP if a is None else str(a.path)

    def _same(self, target: Path, anomaly_path: str | None) -> bool:
        live = self.live
        if target != live.path:
            return False
        if anomaly_path == KEEP:
            return True
        if not anomaly_path:
            return live.anomaly_path is None
        return resolve_model_path(self.cfg, anomaly_path) == live.anomaly_path

    def _swap(self, action: str, target: Path, anomaly_path: str | None = KEEP) -> dict:
        live = self.live
        if self._same(target, anomaly_path):
            return self._record(self._outcome(action, "unchanged", f"{target} is running"))
        t0 = time.monotonic()
        try:
            cand = load_candidate(
                self.cfg,
                target,
                live,
                self.spec,
                self.workers,
                anomaly_path=anomaly_path,
                golden=self.settings.golden,
            )
        except Refused as exc:
            log.error(
                "model %s refused: %s (the running model %s stays)", target, exc, live.model_id
            )
            out = self._outcome(action, "refused", str(exc), candidate=str(target), stage=exc.stage)
            return self._record(out)
        with self._lock:
            self.previous.appendleft(live)
            gen = self.current[0] + 1
            self.current = (gen, cand)
        took = time.monotonic() - t0
        log.warning(
            "model swapped: %s -> %s (%s, loaded and checked in %.1f s)",
            live.model_id,
            cand.model_id,
            target,
            took,
        )
        self._relink(cand)
        out = self._outcome(action, "swapped", "", previous=live.model_id, load_s=round(took, 3))
        return self._record(out, event=_event(live, cand, gen))

    def _rollback(self) -> dict:
        with self._lock:
            back = self.previous.popleft() if self.previous else None
            if back is not None:
                live = self.live
                gen = self.current[0] + 1
                self.current = (gen, back)
        if back is None:
            return self._record(self._outcome("rollback", "refused", "no previous model kept"))
        log.warning("model rolled back: %s -> %s", live.model_id, back.model_id)
        self._relink(back)
        out = self._outcome("rollback", "rolled_back", "", previous=live.model_id)
        return self._record(out, event=_event(live, back, gen))

    def _set_shadow(self, action: str, path: str | None, anomaly_path: str | None = KEEP) -> dict:
        """Run the unit ``path`` (+ ``anomaly_path``; KEEP: the live one) in the shadow
        (replacing any), or stop the shadow ('shadow-stop')."""
        old, self.shadow = self.shadow, None
        if old is not None:
            old.stop()
            log.info("shadow model %s stopped", old.model_id)
        self.shadow_problem = ""
        if action == "shadow-stop" or (not path and anomaly_path == KEEP):
            return self._record(self._outcome(action, "ok", ""))
        target = resolve_model_path(self.cfg, path) if path else self.live.path
        try:
            cand = load_candidate(
                self.cfg, target, self.live, self.spec, 1, anomaly_path, intra_op_threads=1
            )
        except Refused as exc:
            self.shadow_problem = f"shadow model {target} refused: {exc}"
            log.error("%s", self.shadow_problem)
            out = self._outcome(action, "refused", str(exc), candidate=str(target), stage=exc.stage)
            return self._record(out)
        send = self.send_shadow or (lambda payload: None)
        shadow = Shadow(
            cand, self._shadow_counters, self.cfg.station.id, send, self.settings.shadow_max_share
        )
        shadow.start()
        self.shadow = shadow
        log.warning("shadow model %s runs beside %s", cand.model_id, self.live.model_id)
        return self._record(self._outcome(action, "shadowing", "", shadow_model_id=cand.model_id))

    def _relink(self, unit: ModelUnit) -> None:
        """Point ``model.path`` (and ``anomaly_model.path``) at the files now live when they
        are links, so that a restart runs them too (a plain file is left alone)."""
        _relink(Path(self.cfg.model.path), unit.path)
        if self.cfg.anomaly_model is not None and unit.anomaly_path is not None:
            _relink(Path(self.cfg.anomaly_model.path), unit.anomaly_path)

    def _outcome(self, action: str, outcome: str, reason: str, **more) -> dict:
        return {
            "schema": 1,
            "station": self.cfg.station.id,
            "action": action,
            "outcome": outcome,
            "reason": reason,
            "model_id": self.live.model_id,
            "anomaly_model_id": self.live.anomaly_model_id,
            **more,
            "ts": time.time(),
        }

    def _record(self, outcome: dict, event: dict | None = None) -> dict:
        with self._lock:
            self.last = outcome
            if event is not None:
                first = self._first.get(event["generation"])
                if first is not None:
                    event = {**event, "first_part": first}
                self.events.append({"action": outcome["action"], **event, "ts": outcome["ts"]})
        self.on_change()
        return outcome

    def status(self) -> dict:
        """The model part of the retained status: the live unit, what ran, the last outcome."""
        with self._lock:
            return {
                **self.live.status(),
                "previous": [m.model_id for m in self.previous],
                "last_change": None if self.last is None else dict(self.last),
                "history": [dict(e) for e in self.events],
                "shadow": None if self.shadow is None else self.shadow.model_id,
                "shadow_problem": self.shadow_problem,
            }


def _event(old: ModelUnit, new: ModelUnit, generation: int) -> dict:
    event = {"from": old.model_id, "to": new.model_id, "generation": generation}
    if old.anomaly_model_id != new.anomaly_model_id:
        event["anomaly_from"] = old.anomaly_model_id
        event["anomaly_to"] = new.anomaly_model_id
    return event


def _relink(link: Path, target: Path) -> None:
    """Point the link ``link`` at ``target`` (atomically); a plain file is left alone."""
    if not link.is_symlink() or Path(os.path.realpath(link)) == target:
        return
    tmp = link.with_name(f".{link.name}.tmp")
    try:
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        tmp.symlink_to(target)
        tmp.replace(link)
    except OSError as exc:
        log.warning("could not point %s at %s: %s", link, target, exc)


def reload_on_sighup(life: ModelLife) -> None:
    """``systemctl reload`` (SIGHUP): read ``model.path`` (the ``current`` link) again and
    swap to it in the background. Call from the main thread."""
    import signal

    signal.signal(signal.SIGHUP, lambda _signum, _frame: life.request("reload"))
