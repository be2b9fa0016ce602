"""The reference reject gate: a part passes only on a timely ``pass`` verdict.

The gate listens to the station's triggers, verdicts and status. Each triggered part
is in flight until it reaches the gate (``travel_ms`` after its trigger, or
``travel_counts`` encoder ticks when ``encoder_topic`` is set). It is rejected when:

- its verdict says ``fail`` (any reason);
- no verdict has arrived when it reaches the gate (``no_verdict``);
- the station's status goes ``offline`` (last-will) or stops arriving for
  ``status_stale_s`` while it waits (``inspector_offline`` / ``inspector_stale``);
- the verdict cannot be read (``invalid_verdict``).

While the gate has no broker connection it cannot see triggers or verdicts: it holds
the reject output on (every part passing is rejected, ``gate_blind``) until it is back
and ``travel_ms`` longer, since triggers sent meanwhile may still be on their way. A pass
is final when the part reaches the gate.
A trigger that arrives after its part already reached the gate is reported as
``missed`` (``late_trigger``): the part went by uninspected; it is an alarm, not a pass.

Verdicts for unknown parts are counted and ignored; a repeated verdict for the same
part (QoS 1 redelivery) changes nothing; a verdict after the part was already rejected
is counted as late. Every decision is published as a gate event (``PREFIX/gate``).
Reject pulses fire when the part reaches the gate.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from dataclasses import dataclass, field

from ..contract.triggers import TriggerError, parse_trigger
from .config import GateSection

log = logging.getLogger(__name__)


@dataclass
class GatePart:
    part_id: str
    t_trigger: float
    arrival: float | None  # Unix seconds (time mode)
    arrival_mono: float | None
    arrival_count: int | None  # encoder mode
    outcome: str | None = None  # passed | rejected
    reason: str | None = None
    verdict: dict | None = None
    t_decided: float | None = None
    extra: dict = field(default_factory=dict)


class GateCore:
    """The gate's decisions, without MQTT (the service feeds it; tests can too)."""

    def __init__(self, cfg: GateSection, actuator, emit) -> None:
        self.cfg = cfg
        self.actuator = actuator
        self.emit = emit  # callable(event dict)
        self.lock = threading.RLock()
        self.waiting: dict[str, GatePart] = {}
        self.decided: collections.OrderedDict[str, GatePart] = collections.OrderedDict()
        self.counts: collections.Counter[str] = collections.Counter()
        self.station_state = "unknown"
        self.last_status_mono: float | None = None
        self.encoder: int | None = None
        self.blind_since: float | None = None  # Unix time the broker connection was lost
        self.hold_until: float | None = None  # the output stays held until then after a reconnect
        self.blind: collections.deque[tuple[float, float]] = collections.deque(maxlen=1000)

    def set_connected(self, connected: bool) -> None:
        """Without the broker the gate is blind: it holds the reject output on until it's back."""
        now = time.time()
        with self.lock:
            if not connected and self.blind_since is None:
                self.blind_since = now
                self.actuator.hold(True)
                log.error(
                    "gate has no broker connection: reject output held on (every part is rejected)"
                )
            elif connected and self.blind_since is not None:
                # triggers sent while we were away may still be on their way: keep the output
                # on until every part triggered in that time has gone by
                grace = 0.0 if self.cfg.encoder_topic else self.cfg.travel_ms / 1000.0
                self.blind.append((self.blind_since, now + grace))
                self.blind_since = None
                self.hold_until = now + grace
                if self.last_status_mono is not None:  # the station's silence counts from now:
                    self.last_status_mono = time.monotonic()  # we could not hear it before
                log.warning("gate reconnected: reject output held %.1f s more", grace)
                self._release_hold(now)

    def _release_hold(self, now: float) -> None:
        if self.blind_since is None and self.hold_until is not None and now >= self.hold_until:
            self.hold_until = None
            self.actuator.hold(False)

    def _was_blind(self, t: float) -> bool:
        if self.blind_since is not None and t >= self.blind_since:
            return True
        return any(a <= t <= b for a, b in self.blind)

    # -- inputs ------------------------------------------------------------------------
    def on_trigger(self, payload: bytes) -> None:
        try:
            trig = parse_trigger(payload, max_bytes=65536, max_id_chars=4096)
        except TriggerError as exc:
            self.counts["malformed_triggers"] += 1
            log.warning("malformed trigger ignored: %s", exc)
            return
        now, now_mono = time.time(), time.monotonic()
        with self.lock:
            if trig.part_id in self.waiting or trig.part_id in self.decided:
                self.counts["duplicate_triggers"] += 1
                return
            t0 = trig.ts or now
            arrival = t0 + self.cfg.travel_ms / 1000.0
            if not self.cfg.encoder_topic and arrival <= now:
                # the part reached the gate before its trigger reached us
                self.counts["parts"] += 1
                part = GatePart(trig.part_id, t0, arrival, None, None)
                if self._was_blind(arrival):
                    self._decide(part, "rejected", "gate_blind")  # the output was held on
                else:
                    log.error(
                        "part %r passed the gate before its trigger arrived", trig.part_id[:80]
                    )
                    self._decide(part, "missed", "late_trigger")
                return
            if self.cfg.encoder_topic:
                base = self.encoder or 0
                part = GatePart(trig.part_id, t0, None, None, base + self.cfg.travel_counts)
            else:
                part = GatePart(trig.part_id, t0, arrival, now_mono + (arrival - now), None)
            self.counts["parts"] += 1
            self.waiting[part.part_id] = part
            if self._station_gone():
                self._reject(part, self._gone_reason())

    def on_verdict(self, payload: bytes) -> None:
        now = time.time()
        try:
            v = json.loads(payload)
            part_id, result = v["part_id"], v["result"]
            if not isinstance(part_id, str) or result not in ("pass", "fail"):
                raise ValueError("bad part_id or result")
        except (ValueError, KeyError, TypeError, UnicodeDecodeError, RecursionError):
            self.counts["invalid_verdicts"] += 1
            log.warning("unreadable verdict ignored: %r", bytes(payload[:80]))
            return
        record = {
            "result": result,
            "reason": str(v.get("reason", "")),
            "seq": v.get("seq", 0),
            "model_id": str(v.get("model_id", "")),
            "t_received": now,
        }
        with self.lock:
            part = self.waiting.get(part_id)
            if part is None:
                done = self.decided.get(part_id)
                if done is None:
                    self.counts["unknown_verdicts"] += 1
                    log.warning("verdict for unknown part %r ignored", part_id[:80])
                elif done.verdict is not None and done.verdict["seq"] == record["seq"]:
                    self.counts["duplicate_verdicts"] += 1
                else:
                    self.counts["late_verdicts"] += 1
                    log.warning(
                        "verdict for part %r arrived after the gate decided (%s)",
                        part_id[:80],
                        done.reason,
                    )
                return
            if part.verdict is not None:  # a timely pass is already waiting for the part
                if part.verdict["seq"] == record["seq"] or result == "pass":
                    self.counts["duplicate_verdicts"] += 1
                    return
            elif part.arrival is not None and now > part.arrival:
                self.counts["late_verdicts"] += 1
                self._reject(part, "no_verdict")
                return
            part.verdict = record
            if result == "pass" and record["reason"] == "ok":
                if part.arrival_mono is None:  # encoder mode: final now
                    self._decide(part, "passed", "pass")
                # time mode: final when the part reaches the gate (the output may be held then)
            else:
                reason = record["reason"] if result == "fail" else "invalid_verdict"
                self._reject(part, reason if reason in _VERDICT_REASONS else "invalid_verdict")

    def on_status(self, payload: bytes) -> None:
        try:
            state = json.loads(payload)["state"]
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            if payload:
                self.counts["invalid_status"] += 1
            return
        with self.lock:
            self.station_state = str(state)
            self.last_status_mono = time.monotonic()
            if state == "offline":  # parts with a timely pass keep it
                for part in list(self.waiting.values()):
                    if part.verdict is None:
                        self._reject(part, "inspector_offline")

    def on_encoder(self, payload: bytes) -> None:
        try:
            value = json.loads(payload)
            count = int(value["count"] if isinstance(value, dict) else value)
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            self.counts["invalid_encoder"] += 1
            return
        with self.lock:
            self.encoder = count
            for part in list(self.waiting.values()):
                if part.arrival_count is not None and count >= part.arrival_count:
                    self._reject(part, "no_verdict")

    def tick(self) -> None:
        """Deadlines and staleness; call every few milliseconds."""
        now, now_mono = time.time(), time.monotonic()
        with self.lock:
            gone = self._station_gone()
            for part in list(self.waiting.values()):
                arrived = part.arrival_mono is not None and now_mono >= part.arrival_mono
                if part.verdict is not None:  # a timely pass: final when the part arrives
                    if arrived:
                        if self._was_blind(part.arrival):
                            self._decide(part, "rejected", "gate_blind")  # the output was held
                        else:
                            self._decide(part, "passed", "pass")
                elif gone:
                    self._reject(part, self._gone_reason())
                elif arrived:
                    self._reject(part, "no_verdict")
            self._release_hold(now)

    # -- decisions -------------------------------------------------------------------------
    def _station_gone(self) -> bool:
        if self.station_state == "offline":
            return True
        if self.last_status_mono is None:
            return False  # not heard yet: parts still need a verdict to pass
        return time.monotonic() - self.last_status_mono > self.cfg.status_stale_s

    def _gone_reason(self) -> str:
        return "inspector_offline" if self.station_state == "offline" else "inspector_stale"

    def _reject(self, part: GatePart, reason: str) -> None:
        self._decide(part, "rejected", reason)
        if part.arrival_mono is not None:
            self.actuator.schedule(part.part_id, part.arrival_mono)
        else:  # encoder mode: the part is at the gate when its count is reached
            self.actuator.schedule(part.part_id, time.monotonic())

    def _decide(self, part: GatePart, outcome: str, reason: str) -> None:
        self.waiting.pop(part.part_id, None)
        part.outcome, part.reason, part.t_decided = outcome, reason, time.time()
        self.decided[part.part_id] = part
        while len(self.decided) > self.cfg.keep_decided:
            self.decided.popitem(last=False)
        self.counts[outcome] += 1
        self.counts[f"{outcome}:{reason}"] += 1
        self.emit(self.event(part))

    def event(self, part: GatePart) -> dict:
        return {
            "schema": 1,
            "gate": self.cfg.id,
            "part_id": part.part_id,
            "outcome": part.outcome,
            "reason": part.reason,
            "t_trigger": part.t_trigger,
            "arrival": part.arrival,
            "arrival_count": part.arrival_count,
            "t_decided": part.t_decided,
            "verdict": part.verdict,
        }


_VERDICT_REASONS = {
    "defect",
    "uncertain",
    "error",
    "timeout",
    "source_lost",
    "unreadable_frame",
    "overflow",
    "shutdown",
}
