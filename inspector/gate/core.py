"""The reference reject gate: a part passes only on a timely ``pass`` verdict.

The gate listens to the station's triggers, verdicts and status. Each triggered part
is in flight until it reaches the gate (``travel_ms`` after its trigger, or
``travel_counts`` encoder ticks when ``encoder_topic`` is set). It is rejected when:

- its verdict says ``fail`` (any reason);
- no verdict has arrived when it reaches the gate (``no_verdict``);
- the station's status goes ``offline`` (last-will) or stops arriving for
  ``status_stale_s`` while it waits (``inspector_offline`` / ``inspector_stale``);
- the verdict cannot be read (``invalid_verdict``);
- its trigger is one the station refuses (an id over ``max_part_id_chars``, a payload over
  ``max_payload_bytes``): the station sends no verdict for it (``invalid_trigger``).

While the gate has no broker connection it cannot see triggers or verdicts: it holds
the reject output on (every part passing is rejected, ``gate_blind``) until it is back
and ``travel_ms`` longer, since triggers sent meanwhile may still be on their way. A pass
is final when the part reaches the gate.
A trigger that arrives after its part already reached the gate is reported as
``missed`` (``late_trigger``): the part went by uninspected; it is an alarm, not a pass.

A repeated part id is the same part (a redelivered trigger, counted and ignored) only
within ``same_part_window_s`` of its first trigger's ``ts``; after that it names a new part
(PLC counters wrap or restart), the rule the station applies too (``contract.triggers.
PartIds``). A verdict goes to the part of its id whose trigger time it carries (``t_trigger``).

Verdicts for unknown parts are counted and ignored; a repeated verdict for the same
part (QoS 1 redelivery) changes nothing; a verdict after the part was already rejected
is counted as late. Every decision is published as a gate event (``PREFIX/gate``).
Reject pulses fire when the part reaches the gate.
"""

from __future__ import annotations

import collections
import itertools
import json
import logging
import threading
import time
from dataclasses import dataclass, field

from ..contract.triggers import PartIds, TriggerError, parse_trigger, same_part
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
    n: int = 0  # the gate's own number for this part: one id may name several parts


class GateCore:
    """The gate's decisions, without MQTT (the service feeds it; tests can too)."""

    def __init__(self, cfg: GateSection, actuator, emit) -> None:
        self.cfg = cfg
        self.actuator = actuator
        self.emit = emit  # callable(event dict)
        self.lock = threading.RLock()
        self.waiting: dict[int, GatePart] = {}  # by GatePart.n, in trigger order
        self.decided: collections.OrderedDict[str, GatePart] = collections.OrderedDict()  # latest
        self.ids = PartIds(cfg.same_part_window_s, cfg.keep_decided)
        self._numbers = itertools.count(1)
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
        refused = None
        try:
            trig = parse_trigger(payload, self.cfg.max_payload_bytes, self.cfg.max_part_id_chars)
        except TriggerError as exc:
            try:  # it names a part, but one the station refuses: no verdict will come for it
                trig = parse_trigger(payload, _READABLE_BYTES, _READABLE_BYTES)
                refused = str(exc)
            except TriggerError:
                self.counts["malformed_triggers"] += 1
                log.warning("malformed trigger ignored: %s", exc)
                return
        now, now_mono = time.time(), time.monotonic()
        with self.lock:
            t0 = trig.ts or now
            if self.ids.repeat(trig.part_id, t0):  # the same part again (QoS 1 redelivery)
                self.counts["duplicate_triggers"] += 1
                return
            arrival = t0 + self.cfg.travel_ms / 1000.0
            if not self.cfg.encoder_topic and arrival <= now:
                # the part reached the gate before its trigger reached us
                self.counts["parts"] += 1
                part = GatePart(trig.part_id, t0, arrival, None, None, n=next(self._numbers))
                if self._was_blind(arrival):
                    self._decide(part, "rejected", "gate_blind")  # the output was held on
                else:
                    log.error(
                        "part %r passed the gate before its trigger arrived", trig.part_id[:80]
                    )
                    self._decide(part, "missed", "late_trigger")
                return
            n = next(self._numbers)
            if self.cfg.encoder_topic:
                base = self.encoder or 0
                part = GatePart(trig.part_id, t0, None, None, base + self.cfg.travel_counts, n=n)
            else:
                part = GatePart(trig.part_id, t0, arrival, now_mono + (arrival - now), None, n=n)
            self.counts["parts"] += 1
            self.waiting[n] = part
            if refused is not None:
                self.counts["refused_triggers"] += 1
                log.warning(
                    "part %r rejected: the station refuses its trigger (%s)",
                    trig.part_id[:80],
                    refused,
                )
                self._reject(part, "invalid_trigger")
            elif self._station_gone():
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
            part = self._part_for(part_id, v.get("t_trigger"))
            if part is None:
                self.counts["unknown_verdicts"] += 1
                log.warning("verdict for unknown part %r ignored", part_id[:80])
                return
            if part.outcome is not None:  # decided already
                if part.verdict is not None and part.verdict["seq"] == record["seq"]:
                    self.counts["duplicate_verdicts"] += 1
                else:
                    self.counts["late_verdicts"] += 1
                    log.warning(
                        "verdict for part %r arrived after the gate decided (%s)",
                        part_id[:80],
                        part.reason,
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

    def _part_for(self, part_id: str, t_trigger) -> GatePart | None:
        """The part a verdict is for: of the parts with its id (waiting, or decided last), the
        one whose trigger time it carries; without one, the oldest still waiting."""
        parts = [p for p in self.waiting.values() if p.part_id == part_id]
        done = self.decided.get(part_id)
        if done is not None:
            parts.append(done)
        if isinstance(t_trigger, bool) or not isinstance(t_trigger, (int, float)):
            return parts[0] if parts else None
        window = self.cfg.same_part_window_s
        parts = [p for p in parts if same_part(p.t_trigger, t_trigger, window)]
        return min(parts, key=lambda p: abs(p.t_trigger - t_trigger), default=None)

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
        self.waiting.pop(part.n, None)
        part.outcome, part.reason, part.t_decided = outcome, reason, time.time()
        self.decided[part.part_id] = part
        self.decided.move_to_end(part.part_id)
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


_READABLE_BYTES = 65536  # a trigger up to this size is read for its part id, to reject the part

_VERDICT_REASONS = {
    "defect",
    "uncertain",
    "anomaly",
    "error",
    "timeout",
    "source_lost",
    "unreadable_frame",
    "overflow",
    "shutdown",
    "halted",
}
