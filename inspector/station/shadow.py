"""Shadow: a candidate model decides the line's real parts beside the live one, for the record.

The shadow is a whole model unit (classifier and anomaly model, combined as on the line).
The classifier worker hands each batch's inputs and live decisions to ``Shadow.offer``
after the live verdicts went out, so the candidate never delays one. The candidate runs on
a thread of its own, and only as much as ``model.shadow_max_share`` of the live inference
time allows (default 0.3): the rest of the batches are skipped and counted (a sample). Each
compared part goes out on ``PREFIX/shadow`` (both decisions, both scores, ``model_id`` and
``shadow_model_id``), and ``/metrics`` counts the agreement by class:

    inspector_shadow_decisions_total{agreement="agree"|"stricter"|"looser", live_class, shadow_class}

``stricter``: the candidate fails a part the live model passed; ``looser``: the reverse.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from prometheus_client import Counter

from .decision import Decision

if TYPE_CHECKING:
    from .unit import ModelUnit

log = logging.getLogger(__name__)


def agreement(live: str, shadow: str) -> str:
    """'agree', 'stricter' (the candidate fails what live passed) or 'looser'."""
    if live == shadow:
        return "agree"
    return "stricter" if shadow == "fail" else "looser"


class ShadowCounters:
    """The shadow's counters, registered once per station (shadow models come and go)."""

    def __init__(self, registry) -> None:
        self.decisions = Counter(
            "inspector_shadow_decisions",
            "parts decided by the shadow model, by agreement with the live model and class",
            ["agreement", "live_class", "shadow_class"],
            registry=registry,
        )
        self.parts = Counter(
            "inspector_shadow_parts",
            "parts offered to the shadow model: compared, or skipped (over max_share or busy)",
            ["outcome"],
            registry=registry,
        )
        self.compared = self.parts.labels(outcome="compared")
        self.skipped = self.parts.labels(outcome="skipped")


class Shadow:
    """One candidate in the shadow; ``offer`` batches, ``stop`` when done."""

    def __init__(
        self,
        model: ModelUnit,
        counters: ShadowCounters,
        station: str,
        send: Callable[[bytes], None],
        max_share: float = 0.3,
    ) -> None:
        self.model = model
        self.counters = counters
        self.station = station
        self.send = send
        self.max_share = max_share
        self._queue: queue.Queue = queue.Queue(maxsize=2)
        self._live_s = 0.0  # live inference time offered so far
        self._spent_s = 0.0  # the candidate's time so far
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="shadow", daemon=True)
        self._skipped = counters.skipped
        self._compared = counters.compared

    @property
    def model_id(self) -> str:
        return self.model.model_id

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def offer(
        self,
        parts: list,
        inputs: np.ndarray,
        live: list[Decision],
        live_model_id: str,
        infer_s: float,
    ) -> bool:
        """A decided batch (a classifier worker, after its verdicts were published). Copies
        the inputs when taken; returns False when skipped."""
        self._live_s += infer_s
        if self._spent_s > self.max_share * self._live_s:
            self._skipped.inc(len(parts))
            return False
        ids = [(p.part_id, p.seq) for p in parts]
        try:
            self._queue.put_nowait((ids, inputs.copy(), live, live_model_id))
        except queue.Full:
            self._skipped.inc(len(parts))
            return False
        return True

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                ids, x, live, live_id = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            t0 = time.monotonic()
            try:
                outcomes = self.model.decide_batch(x)
            except Exception as exc:  # the candidate's failure is its own, never the line's
                log.warning("shadow model %s failed on a batch: %s", self.model_id, exc)
                self._skipped.inc(len(ids))
                continue
            finally:
                self._spent_s += time.monotonic() - t0
            for (part_id, seq), d_live, o in zip(ids, live, outcomes, strict=True):
                self._compare(part_id, seq, d_live, o.decision, live_id)

    def _compare(self, part_id: str, seq: int, live: Decision, cand: Decision, live_id: str):
        how = agreement(live.result, cand.result)
        self.counters.decisions.labels(
            agreement=how, live_class=live.label or "", shadow_class=cand.label or ""
        ).inc()
        self._compared.inc()
        if how != "agree":
            log.info(
                "shadow %s on part %r: live %s %s, candidate %s %s",
                how,
                part_id,
                live.result,
                _scores(live),
                cand.result,
                _scores(cand),
            )
        msg = {
            "schema": 1,
            "station": self.station,
            "part_id": part_id,
            "seq": seq,
            "model_id": live_id,
            "shadow_model_id": self.model_id,
            "agreement": how,
            "live": _decision(live),
            "shadow": _decision(cand),
            "ts": time.time(),
        }
        self.send(json.dumps(msg, separators=(",", ":")).encode())


def _decision(d: Decision) -> dict:
    return {
        "result": d.result,
        "reason": d.reason.value,
        "class": d.label,
        "scores": {k: round(float(v), 6) for k, v in d.scores.items()},
    }


def _scores(d: Decision) -> str:
    return ", ".join(f"{k}={float(v):.3f}" for k, v in d.scores.items())
