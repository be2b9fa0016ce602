"""The classify stage: ``model.workers`` threads that take preprocessed parts off the
station's queue in batches, in queue order, run the model unit live at that moment on each
batch, and hand every part's outcome back to the station (``finish``); a batch that cannot
run fails its parts (``fail``), and the worker goes on with the next.

The station (``pipeline``) owns the order of the stages and the one-verdict-per-part rule;
this module owns how a batch is formed, timed and run.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from ..contract.records import Part, Reason
from .classifier import ModelRunError
from .config import StationConfig
from .inflight import InFlight
from .metrics import Metrics
from .models import ModelLife
from .unit import ModelUnit, Outcome

log = logging.getLogger(__name__)


class ClassifyStage:
    """``threads()`` to start with the station's; ``done`` is set when the last worker has
    left, after ``stopping`` was set and the queue ran empty. ``beats``: the station's
    heartbeat table, one entry per worker (``infer-N``), read by its health check."""

    def __init__(
        self,
        cfg: StationConfig,
        parts: queue.Queue[Part],
        models: ModelLife,
        inflight: InFlight,
        metrics: Metrics,
        beats: dict[str, float],
        finish: Callable[..., object],
        fail: Callable[[Part, Reason, str], None],
        stopping: threading.Event,
        keep_maps: bool,
        workers: int,
    ) -> None:
        self.cfg = cfg
        self.parts = parts
        self.models = models
        self.inflight = inflight
        self.metrics = metrics
        self.beats = beats
        self.finish = finish
        self.fail = fail
        self.stopping = stopping
        self.keep_maps = keep_maps  # heat maps only when a recorder keeps them
        self.done = threading.Event()
        self._lock = threading.Lock()
        self._batch_lock = threading.Lock()  # one worker at a time takes a batch (and its model)
        self.workers = workers
        self._running = self.workers
        now = time.monotonic()
        self.beats.update({f"infer-{i + 1}": now for i in range(self.workers)})

    def threads(self) -> list[threading.Thread]:
        return [
            threading.Thread(target=self._loop, name=f"infer-{i + 1}", daemon=True)
            for i in range(self.workers)
        ]

    def _loop(self) -> None:
        beat = threading.current_thread().name
        while True:
            self.beats[beat] = time.monotonic()
            with self._batch_lock:  # batches leave the queue in order, each with the unit
                taken = self._take_batch()  # live at that moment: a swap falls between two
            if taken is None:
                if self.stopping.is_set() and self.parts.empty():
                    break
                continue
            unit, batch = taken
            live = self.inflight.live(batch)
            if not live:
                continue
            try:
                self._classify(live, unit)
            except Exception as exc:  # whatever went wrong, this worker goes on with the next
                log.exception("%s: a batch of %d parts failed", beat, len(live))
                for part in live:
                    self.fail(part, Reason.ERROR, f"internal error: {type(exc).__name__}: {exc}")
        with self._lock:
            self._running -= 1
            if not self._running:
                self.done.set()

    def _take_batch(self) -> tuple[ModelUnit, list[Part]] | None:
        """The next batch and the unit that decides it (under the batch lock). The first
        batch of a new unit names the part at which the change took effect: here, in queue
        order, so a second worker cannot name a later part."""
        try:
            first = self.parts.get(timeout=0.05)
        except queue.Empty:
            return None
        generation, unit = self.models.current
        batch = [first]
        while len(batch) < unit.max_batch:
            try:
                batch.append(self.parts.get_nowait())
            except queue.Empty:
                break
        self.models.announce(generation, first)
        return unit, batch

    def _classify(self, parts: list[Part], unit: ModelUnit) -> None:
        buf = unit.buffer(len(parts))
        n = 0
        for part in parts:  # keeps, in place, the parts whose input is still there
            x = part.input  # None once the watchdog failed the part after its batch formed
            if x is not None:
                buf[n] = x
                parts[n] = part
                n += 1
        if n < len(parts):  # rare: those others have their verdict already
            del parts[n:]
            if not parts:
                return
            buf = buf[:n]
        t0 = time.monotonic()
        queued = self.metrics.stages["queue"]
        for part in parts:
            part.t_infer_mono = t0
            queued.observe(t0 - part.t_preprocessed_mono)
        delay_file = self.cfg.testing.model_delay_file
        if delay_file is not None:
            _injected_delay(delay_file)
        try:
            raw = unit.run(buf, maps=self.keep_maps)
        except ModelRunError as exc:
            log.error("%s on a batch of %d", exc, len(parts))
            for part in parts:
                self.fail(part, Reason.ERROR, str(exc))
            return
        t1 = time.monotonic()
        self.metrics.stages["inference"].observe(t1 - t0)
        for part in parts:
            part.t_inferred_mono = t1
        self.metrics.batch.observe(len(parts))
        outcomes: list[Outcome] = unit.decide(raw)
        for part, o in zip(parts, outcomes, strict=True):
            d = o.decision
            self.finish(
                part,
                d.result,
                d.reason,
                d.label,
                d.scores,
                heatmap=o.heat,
                unit=unit,
                decided_by=o.decided_by,
            )
        self.metrics.stages["decide_publish"].observe(time.monotonic() - t1)
        shadow = self.models.shadow  # after the verdicts went out: never delays one
        if shadow is not None:
            shadow.offer(parts, buf, [o.decision for o in outcomes], unit.model_id, t1 - t0)


def _injected_delay(path) -> None:
    """Fault injection (``testing.model_delay_file``): sleep while the file says so."""
    try:
        ms = float(path.read_text().strip() or 0)
    except (OSError, ValueError):
        return
    time.sleep(ms / 1000.0)
