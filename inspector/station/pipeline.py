"""The station: the only module that knows the order of the stages.

    trigger ─► capture (+ preprocess) ─► bounded queue ─► classify (batched, model.workers
                                                          of them side by side) ─► decide
                                                                               │
               watchdog: a part without a verdict near its deadline fails ─────┤
                                                                               ▼
                                                        publish (MQTT) + recorder

Every part registered (by a trigger, or by a frame in free-run/camera mode) gets
exactly one verdict: the first of "decided", "failed by the watchdog", "failed
because something went wrong" wins (``InFlight.take``); the others are ignored.

Why one module: it is the order of the stages and the one-verdict-per-part rule, which must be
read in one place; the parts it calls live beside it (unit, acceptance, health, link,
matching, inflight, recorder, and workers: the classify stage's threads).
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time

import numpy as np

from ..contract.preprocess import FrameError, GeometryMismatch, preprocess
from ..contract.records import Frame, Part, Reason, Verdict
from ..contract.topics import Topics
from ..contract.triggers import PartIds, TriggerError, parse_trigger
from ..errors import ConfigError
from ..httpd import HttpEndpoint
from ..logs import Throttled
from .acceptance import acceptance, station_spec
from .config import StationConfig
from .health import Health
from .inflight import InFlight
from .link import Handlers, LineLink, LineView
from .matching import FrameMatcher
from .metrics import Metrics
from .models import ModelLife
from .publisher import MqttLink
from .quality import QualityWatch, load_baseline
from .recorder import Recorder
from .sources import SourceRunner, make_source
from .unit import ModelUnit, load_unit
from .workers import ClassifyStage

log = logging.getLogger(__name__)


class Station:
    """One inspection station. ``start()``, then ``stop()`` (or ``run_until(event)``)."""

    def __init__(
        self,
        cfg: StationConfig,
        unit: ModelUnit | None = None,
        publisher: LineLink | None = None,
        views: tuple[LineView, ...] = (),
    ) -> None:
        """``unit``: the model unit (default: the config's, loaded here); ``publisher``: the
        link to the line instead of MQTT (the bench passes an in-process sink to time the
        pipeline alone); ``views``: plant protocols beside the link. A unit that may not
        decide parts on this station (``acceptance``) is a ConfigError: ``run`` exits 2."""
        self.cfg = cfg
        self.metrics = Metrics()
        unit = unit or load_unit(cfg)
        problems = acceptance(cfg, unit, golden=cfg.model.golden)
        if problems:
            raise ConfigError(*problems)
        # the one spec frames go through: the unit's input, the station's geometry, and the
        # camera's bit depth; the recorder's sidecars and the quality watch use the same
        self.spec = station_spec(cfg, unit)
        # the live unit from now on (swap, rollback, shadow)
        self.models = ModelLife(
            cfg,
            unit,
            self.metrics.registry,
            self.spec,
            unit.workers,
            on_change=self._model_changed,
        )
        self.quality = None
        if cfg.quality.baseline is not None:
            self.quality = QualityWatch(
                cfg.quality,
                load_baseline(cfg.quality.baseline),
                training=unit.training_stats,
                spec=self.spec,
            )
        self.mode = cfg.trigger.type
        self.station_id = cfg.station.id
        self.source = SourceRunner(make_source(cfg.source), on_state=self._on_source_state)
        # a camera triggered by software: each MQTT part trigger fires one exposure
        trigger = getattr(cfg.source, "trigger", None)
        software = getattr(trigger, "mode", None) == "software" and self.mode == "mqtt"
        self._fire = getattr(self.source.source, "fire", None) if software else None
        self._fire_queue: queue.Queue[Part] = queue.Queue()  # fired off the link's thread
        if hasattr(self.source.source, "stats"):  # camera counters, read when scraped
            self.metrics.camera_counters(self.source.source.stats)
        self.recorder = (
            Recorder(cfg.recorder, self.metrics, spec=self.spec) if cfg.recorder.enabled else None
        )
        self._health = Health(self)
        handlers = Handlers(
            status=self._health.status_payload,
            trigger=self._on_trigger if self.mode == "mqtt" else None,
            command=self.models.on_command,
            hold=self._hold,
        )
        self.link: LineLink = publisher or MqttLink(
            cfg.mqtt,
            self.station_id,
            Topics.of(cfg.prefix, cfg.trigger.topic),
            self.metrics,
            handlers,
            client_id=cfg.client_id,
        )
        self.publisher = self.link  # the name tools and tests know
        self.views = tuple(views)
        self._handlers = handlers
        self.models.send_shadow = getattr(self.link, "send_shadow", None)
        self.http = None
        if cfg.metrics.enabled:
            self.http = HttpEndpoint(
                self.metrics.registry, self.health, cfg.metrics.host, cfg.metrics.port
            )
        self._queue: queue.Queue[Part] = queue.Queue(maxsize=cfg.pipeline.queue_size)
        self.inflight = InFlight()  # parts waiting for a verdict, and their deadlines
        self.matcher = FrameMatcher(cfg.trigger, alive=lambda part: part in self.inflight)
        # a repeated id: the same part, or a new one (DESIGN 8); the gate uses the same window
        self._seen_ids = PartIds(cfg.trigger.same_part_window_s)
        self._beats = {"capture": time.monotonic()}  # and one per classifier worker (workers)
        self.metrics.in_flight.set_function(lambda: len(self.inflight))  # read when scraped
        self._lock = threading.Lock()
        self._seq = itertools.count(1)
        self._run_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        self._capture_stop = threading.Event()
        self._stopping = threading.Event()
        self.source_ended = threading.Event()
        self.ready = False
        self.last_frame_mono = 0.0
        self._capture_waiting = False  # True while the capture loop waits for the source
        self._geometry_problem = ""  # why frames no longer fit the station's geometry, if so
        self._halted = ""  # why a plant view stopped inspection (Handlers.hold), "" while on
        self._fail_log = Throttled(log)  # one line per reason and 5 s under overload
        self.verdict_hooks: list = []  # callables(Verdict), e.g. the demo's live printer
        self.classify = ClassifyStage(
            cfg,
            self._queue,
            self.models,
            self.inflight,
            self.metrics,
            self._beats,
            finish=self._finish,
            fail=self._fail,
            stopping=self._stopping,
            keep_maps=self.recorder is not None,
            workers=unit.workers,
        )
        self._threads = [
            threading.Thread(target=self._capture_loop, name="capture", daemon=True),
            threading.Thread(target=self._watchdog_loop, name="watchdog", daemon=True),
            *(
                [threading.Thread(target=self._fire_loop, name="fire", daemon=True)]
                if self._fire is not None
                else []
            ),
            *self.classify.threads(),
        ]

    # -- life cycle ----------------------------------------------------------------------------
    def start(self) -> None:
        """Warm up, then run. A camera that refuses the config's settings raises ConfigError
        here (``run`` exits 2 naming the feature and its limit) rather than retrying."""
        self.source.open_at_start()
        self.models.live.warmup(self.cfg.model.warmup_runs)
        now = time.monotonic()  # a long warm-up (TensorRT builds an engine) is not a stall
        self._beats.update(dict.fromkeys(self._beats, now))
        if self.recorder:
            self.recorder.start()
        if self.http:
            self.http.start()
        self.ready = True
        self.link.start()
        for view in self.views:
            view.start(self._handlers)
        for t in self._threads:
            t.start()
        self.models.start()
        log.info(
            "station %s started: %s, trigger %s, source %s",
            self.station_id,
            self.models.live.describe(),
            self.mode,
            self.source.source.describe(),
        )

    def stop(self, timeout: float = 5.0) -> None:
        """Stop capturing, give every part in flight its verdict, go offline."""
        if self._stopping.is_set():
            return
        if not self._threads[0].is_alive() and not self.ready:  # never started
            self._stopping.set()
            self.source.close()
            return
        self._capture_stop.set()
        self._threads[0].join(timeout)
        for part in self.matcher.drain():
            self._fail(part, Reason.SHUTDOWN, "station stopped before a frame was captured")
        self._stopping.set()
        self.classify.done.wait(timeout)
        for part in self.inflight.snapshot():
            self._fail(part, Reason.SHUTDOWN, "station stopped before the part was classified")
        for t in self._threads[1:]:
            t.join(timeout)
        self.ready = False
        self.models.stop()
        self.status_changed()
        self.link.stop()
        for view in self.views:
            view.stop()
        if self.recorder:
            self.recorder.stop()
        if self.http:
            self.http.stop()
        self.source.close()
        log.info("station %s stopped", self.station_id)

    # -- status and health (health.py) ---------------------------------------------------------
    @property
    def unit(self) -> ModelUnit:
        """The live model unit."""
        return self.models.live

    def state(self) -> str:
        return self._health.state()

    def status_payload(self) -> dict:
        return self._health.status_payload()

    def health(self) -> tuple[bool, dict]:
        return self._health.check()

    def alive(self, max_age_s: float) -> bool:
        return self._health.alive(max_age_s)

    def status_changed(self) -> None:
        """The status changed: the link republishes it, the views hear of it."""
        self.link.status_changed()
        if self.views:
            payload = self._health.status_payload()
            for view in self.views:
                view.status(payload)

    def _model_changed(self) -> None:
        if self.quality is not None:  # the quality watch compares with the live unit's data
            self.quality.training = self.models.live.training_stats
        self.status_changed()

    def _hold(self, why: str | None) -> None:
        """A plant view stops inspection (``why``) or resumes it (None): meanwhile every part
        fails with reason ``halted`` (a triggered one at its trigger, a free-run or camera one
        at its frame: ``_on_trigger``, ``_process``), never a pass."""
        why = why or ""
        if why == self._halted:
            return
        self._halted = why
        if why:
            log.warning("inspection halted: %s", why)
        else:
            log.warning("inspection resumed")
        self.status_changed()

    def _on_source_state(self, state: str, detail: str) -> None:
        self.metrics.source_up.set(1 if state == "ok" else 0)
        if state != "ok":
            for part in self.matcher.drain():
                self._fail(part, Reason.SOURCE_LOST, detail)
        self.status_changed()

    # -- parts ---------------------------------------------------------------------------------
    def _register(self, part_id: str, t_trigger: float | None, deadline: float | None) -> Part:
        now, now_mono = time.time(), time.monotonic()
        if deadline is None:
            deadline = now + self.cfg.part.deadline_ms / 1000.0
        part = Part(
            part_id=part_id,
            seq=next(self._seq),
            t_trigger=t_trigger or now,
            t_trigger_mono=now_mono,
            deadline=deadline,
            deadline_mono=now_mono + (deadline - now),
        )
        self.inflight.add(part)
        self.metrics.parts.inc()
        return part

    def _finish(
        self,
        part: Part,
        result: str,
        reason: Reason,
        label: str | None = None,
        scores: dict[str, float] | None = None,
        detail: str = "",
        heatmap: np.ndarray | None = None,
        unit: ModelUnit | None = None,
        decided_by: tuple[str, ...] = (),
    ) -> Verdict | None:
        """Give ``part`` its verdict unless it already has one. Returns the verdict or None.
        ``unit``: the one that decided (fail-safe verdicts name the live one); with an
        anomaly model, ``decided_by`` names the models the result follows."""
        if not self.inflight.take(part):
            return None
        unit = unit or self.models.live
        now, now_mono = time.time(), time.monotonic()
        frame = part.frame
        verdict = unit.verdict(
            part, result, reason, label, scores, detail, decided_by, now, now_mono
        )
        latency = verdict.latency_ms
        self.metrics.decided(verdict)
        self.metrics.e2e.observe(latency["e2e"] / 1000.0)
        if reason == Reason.TIMEOUT or now_mono > part.deadline_mono:
            self.metrics.deadline_misses.inc()
        self.link.publish(verdict)
        for view in self.views:
            view.verdict(verdict)
        if self.recorder and frame is not None:
            self.recorder.offer(verdict, frame.image, heatmap)
        for hook in self.verdict_hooks:
            hook(verdict)
        part.frame, part.input = None, None
        return verdict

    def _fail(self, part: Part, reason: Reason, detail: str) -> None:
        if self._finish(part, "fail", reason, detail=detail) is not None:
            self._fail_log.warning(
                reason.value,
                part.part_id,
                "part %r failed safe: %s (%s)",
                part.part_id,
                reason.value,
                detail,
            )

    # -- trigger (the MQTT thread, from paho's on_message) -----------------------------------
    def _on_trigger(self, payload: bytes) -> None:
        try:
            trig = parse_trigger(
                payload, self.cfg.trigger.max_payload_bytes, self.cfg.trigger.max_part_id_chars
            )
        except TriggerError as exc:
            self.metrics.triggers.labels(outcome="malformed").inc()
            log.warning("malformed trigger ignored: %s (payload %r)", exc, bytes(payload[:80]))
            return
        with self._lock:  # the same part while on its way; later a new one (counters wrap)
            duplicate = self._seen_ids.repeat(trig.part_id, trig.ts or time.time())
        if duplicate:  # a redelivered trigger (QoS 1) is the same part, not a new one
            self.metrics.triggers.labels(outcome="duplicate").inc()
            log.info("duplicate trigger for part %r ignored", trig.part_id[:80])
            return
        self.metrics.triggers.labels(outcome="accepted").inc()
        part = self._register(trig.part_id, trig.ts, trig.deadline)
        if self._capture_stop.is_set():
            self._fail(part, Reason.SHUTDOWN, "station is stopping")
            return
        if self._halted:  # at once: its frame, when it comes, is too early for a later part
            self._fail(part, Reason.HALTED, self._halted)
            return
        max_age = self.cfg.trigger.max_age_ms
        if max_age is not None and trig.ts is not None:
            age_ms = (time.time() - trig.ts) * 1000.0
            if age_ms > max_age:
                self.metrics.drop("stale_trigger")
                self._fail(
                    part, Reason.TIMEOUT, f"trigger arrived {age_ms:.0f} ms after the part was seen"
                )
                return
        if self.source.state != "ok":
            self._fail(
                part, Reason.SOURCE_LOST, f"source {self.source.state}: {self.source.detail}"
            )
            return
        frame, overflow = self.matcher.add(part, has_ts=trig.ts is not None)
        if frame is not None:
            self._process(part, frame)
            return
        if overflow:
            self.metrics.drop("trigger_overflow")
            self._fail(part, Reason.OVERFLOW, "too many triggers waiting for a frame")
            return
        if self._fire is not None:  # after add: the frame finds its part waiting
            self._fire_queue.put(part)

    def _fire_loop(self) -> None:
        """Software triggers, in order, on a thread of their own: a camera that is gone can
        hold a trigger for seconds, and the link's thread must go on delivering verdicts."""
        while not self._stopping.is_set():
            try:
                part = self._fire_queue.get(timeout=0.1)
            except queue.Empty:
                continue
            if part not in self.inflight:
                continue
            if self._fire() is None:
                self._fail(part, Reason.SOURCE_LOST, "the camera did not take the trigger")

    # -- capture thread ---------------------------------------------------------------------------
    def _capture_loop(self) -> None:
        while not self._capture_stop.is_set():
            self._capture_waiting = True
            frame = self.source.next(self._capture_stop)
            self._beats["capture"] = time.monotonic()
            self._capture_waiting = False
            if frame is None:
                if self.source.state == "ended":
                    self.source_ended.set()
                    self._capture_stop.wait()
                continue
            self.metrics.frames.inc()
            self.last_frame_mono = frame.t_capture_mono
            if self.quality is not None and frame.image is not None:
                self._watch_quality(frame)
            part = self._part_for(frame)
            if part is not None:
                self._process(part, frame)

    def _process(self, part: Part, frame: Frame) -> None:
        """Preprocess the part's frame and queue it for the classifier."""
        halted = self._halted
        if halted:  # the plant stopped inspection: not inspected, so never a pass
            self._fail(part, Reason.HALTED, halted)
            return
        part.frame = frame
        t0 = part.t_preprocess_mono = time.monotonic()
        try:
            if frame.image is None:
                raise FrameError(frame.error or "unreadable frame")
            part.input = preprocess(frame.image, self.spec)
        except FrameError as exc:
            self.metrics.drop("unreadable_frame")
            if isinstance(exc, GeometryMismatch):
                self._geometry_changed(str(exc))
            self._fail(part, Reason.UNREADABLE_FRAME, f"{frame.origin}: {exc}")
            return
        if self._geometry_problem:
            self._geometry_changed("")
        part.t_preprocessed_mono = time.monotonic()
        self.metrics.stages["preprocess"].observe(part.t_preprocessed_mono - t0)
        wait = self.cfg.pipeline.when_full == "wait"
        while True:
            try:
                self._queue.put(part, timeout=0.05) if wait else self._queue.put_nowait(part)
                return
            except queue.Full:
                if wait and not self._capture_stop.is_set():
                    if part in self.inflight:
                        continue  # backpressure: the watchdog still fails it at its deadline
                    return
                self.metrics.drop("queue_overflow")
                self._fail(part, Reason.OVERFLOW, "classifier queue full")
                return

    def _geometry_changed(self, problem: str) -> None:
        """Frames stopped (``problem``) or started again ("") fitting the station's geometry:
        the station is ``degraded`` meanwhile, with the reason in its status."""
        if problem == self._geometry_problem:
            return
        if problem:
            log.error("frames do not fit the station's geometry: %s", problem)
        else:
            log.warning("frames fit the station's geometry again")
        self._geometry_problem = problem
        self.status_changed()

    def _watch_quality(self, frame: Frame) -> None:
        changed = self.quality.offer(frame.image)
        if changed is None:
            return
        for key, value in self.quality.current.items():
            self.metrics.quality.labels(measure=key).set(value)
        if changed:
            self.metrics.quality_degraded.set(1 if self.quality.problems else 0)
            self.status_changed()

    def _part_for(self, frame: Frame) -> Part | None:
        if self.mode != "mqtt":  # free-run and hardware-triggered camera: each frame is a part
            return self._register(
                f"{self.station_id}-{self._run_id}-{frame.index}", frame.t_capture, None
            )
        chosen, missed = self.matcher.take(frame)
        for part in missed:
            self.metrics.drop("frame_missed")
            self._fail(
                part,
                Reason.TIMEOUT,
                f"no frame within {self.cfg.trigger.max_frame_wait_ms:.0f} ms of the trigger",
            )
        if chosen is None:
            self.metrics.frames_unused.inc()
        return chosen

    # -- deadline watchdog -------------------------------------------------------------------------
    def _watchdog_loop(self) -> None:
        margin = self.cfg.part.timeout_margin_ms / 1000.0
        while not (self._stopping.is_set() and self.classify.done.is_set()):
            due, wait = self.inflight.due(time.monotonic(), margin)
            for part in due:
                self._fail(part, Reason.TIMEOUT, "no verdict before the part's deadline")
            self._fail_log.flush()
            time.sleep(min(max(wait, 0.005), 0.05))  # 5 ms resolution; margin is 20 ms by default

    # -- convenience -----------------------------------------------------------------------------
    def wait_idle(self, timeout: float) -> bool:
        """Wait until no part is in flight and the outbox is empty."""
        end = time.monotonic() + timeout
        while True:
            if not self.inflight and not self.publisher.pending():
                return True
            if time.monotonic() >= end:
                return False
            time.sleep(0.01)
