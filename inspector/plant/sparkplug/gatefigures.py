"""What the edge node reports of a reject gate (``inspector gate`` with ``sparkplug:`` in its
config): the parts it passed, rejected (by reason) and missed, its health, and the last
decision. The gate's own Prometheus counters stay as they are; these counts start again on
``Commands/Reset Counters``, the only command a gate takes.

Device metrics (``DBIRTH``/``DDATA``), with their Sparkplug datatypes:

- ``Gate/Healthy``, ``Gate/Broker Connected``, ``Gate/Reject Output Held`` (Boolean: blind,
  every part rejected), ``Gate/In Flight`` (UInt32), ``Gate/Station State`` (String)
- ``Parts/Total``, ``Parts/Passed``, ``Parts/Rejected``, ``Parts/Missed`` (UInt64: a part
  that went by uninspected) and ``Parts/Rejected By Reason/REASON`` (UInt64),
  ``Counters/Since`` (DateTime)
- ``Last Decision/Part Id``, ``/Outcome``, ``/Reason`` (String), ``/Time`` (DateTime)
- ``Commands/Reset Counters`` (Boolean, writable), ``Commands/Last Result`` (String)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from .figures import LAST_RESULT, RESET, Metrics
from .payload import BOOLEAN, DATETIME, STRING, UINT32, UINT64

LAST = "Last Decision/"
OUTCOMES = ("passed", "rejected", "missed")
# every reason the gate rejects for, named in the birth so that none needs a new one
REASONS = (
    "defect", "uncertain", "anomaly", "error", "timeout", "source_lost", "unreadable_frame",
    "overflow", "shutdown", "halted", "invalid_verdict", "no_verdict", "inspector_offline",
    "inspector_stale", "invalid_trigger", "gate_blind",
)  # fmt: skip


@dataclass(frozen=True)
class GateEvent:
    """One gate event (``PREFIX/gate``'s payload) on its way to the node's thread."""

    data: dict


class GateFigures:
    writable = {RESET: BOOLEAN}

    def __init__(self, health: Callable[[], tuple[bool, dict]]) -> None:
        self.health = health
        self.status: dict = {}  # the station's; a gate has none of its own
        self.last_result = ""
        self.reset()

    def reset(self) -> None:
        self.counts = dict.fromkeys(OUTCOMES, 0)
        self.by_reason = dict.fromkeys(REASONS, 0)
        self.since_ms = int(time.time() * 1000)
        self.last: dict | None = None

    def verdict(self, item: GateEvent) -> None:
        ev = item.data
        outcome, reason = str(ev.get("outcome")), str(ev.get("reason"))
        self.counts[outcome] = self.counts.get(outcome, 0) + 1
        if outcome == "rejected":
            self.by_reason[reason] = self.by_reason.get(reason, 0) + 1
        self.last = ev

    def metrics(self) -> Metrics:
        ok, h = self.health()
        out: Metrics = {
            "Gate/Healthy": (BOOLEAN, bool(ok)),
            "Gate/Broker Connected": (BOOLEAN, bool(h.get("broker_connected"))),
            "Gate/Reject Output Held": (BOOLEAN, bool(h.get("reject_output_held"))),
            "Gate/In Flight": (UINT32, int(h.get("in_flight") or 0)),
            "Gate/Station State": (STRING, h.get("station_state")),
            "Parts/Total": (UINT64, sum(self.counts.values())),
        }
        for outcome, n in self.counts.items():
            out[f"Parts/{outcome.title()}"] = (UINT64, n)
        for reason, n in self.by_reason.items():
            out[f"Parts/Rejected By Reason/{reason}"] = (UINT64, n)
        out["Counters/Since"] = (DATETIME, self.since_ms)
        e = self.last
        decided = e and e.get("t_decided")
        out.update(
            {
                LAST + "Part Id": (STRING, e and e.get("part_id")),
                LAST + "Outcome": (STRING, e and e.get("outcome")),
                LAST + "Reason": (STRING, e and e.get("reason")),
                LAST + "Time": (DATETIME, int(decided * 1000) if decided else None),
            }
        )
        out[RESET] = (BOOLEAN, False)
        out[LAST_RESULT] = (STRING, self.last_result)
        return out

    def changed(self, now: Metrics, sent: Metrics) -> Metrics:
        """Every metric that changed; the last decision's go together."""
        out = {k: t for k, t in now.items() if t[1] != sent.get(k, (None, None))[1]}
        if any(k.startswith(LAST) for k in out):
            out.update({k: t for k, t in now.items() if k.startswith(LAST)})
        return out
