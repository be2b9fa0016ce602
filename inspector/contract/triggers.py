"""Trigger messages: what a sensor or PLC publishes when a part arrives.

Payload (JSON object, UTF-8)::

    {"part_id": "A-0001", "ts": 1764370000.125, "deadline": 1764370001.125}

``part_id`` (a non-empty string) is required and kept verbatim in the verdict.
``ts`` (Unix seconds) is when the part was seen; ``deadline`` (Unix seconds) overrides
the station's ``part.deadline_ms``. Anything else (not JSON, not UTF-8, too big, wrong
types) raises TriggerError, which the station logs and counts; it never stops.

Station and gate read triggers with the same limits (``MAX_PAYLOAD_BYTES``,
``MAX_PART_ID_CHARS`` unless configured) and tell a repeated id from a new part with the
same rule (``PartIds``, DESIGN 8): a repeated ``part_id`` is the same part while that
part is on its way, i.e. when the trigger's time (its ``ts``, else when it arrived) is
within ``SAME_PART_WINDOW_S`` of the first trigger's for that id. A QoS 1 redelivery or
a PLC resending after a reconnect carries the same ``ts`` and stays one part however
late it comes; a PLC counter that wraps (16-bit: every 65,536 parts) or restarts at 1
after a power cycle names a new part, which is inspected and gated like any other.
"""

from __future__ import annotations

import collections
import json
import math
from dataclasses import dataclass

MAX_PAYLOAD_BYTES = 4096  # a larger trigger is refused (station and gate alike)
MAX_PART_ID_CHARS = 256  # a longer part id is refused (station and gate alike)
SAME_PART_WINDOW_S = 2.0  # a repeated id within this of its first trigger is the same part
KEEP_PART_IDS = 100_000  # ids remembered for telling a redelivery from a new part
_ROUNDS_KEPT = 4  # parts remembered per id


class TriggerError(ValueError):
    """A trigger payload that cannot name a part."""


@dataclass(frozen=True, slots=True)
class Trigger:
    part_id: str
    ts: float | None
    deadline: float | None


def parse_trigger(
    payload: bytes, max_bytes: int = MAX_PAYLOAD_BYTES, max_id_chars: int = MAX_PART_ID_CHARS
) -> Trigger:
    if not isinstance(payload, (bytes, bytearray)):
        raise TriggerError("payload is not bytes")
    if len(payload) > max_bytes:
        raise TriggerError(f"payload of {len(payload)} bytes exceeds {max_bytes}")
    try:
        data = json.loads(payload.decode("utf-8"))
    except UnicodeDecodeError:
        raise TriggerError("payload is not UTF-8") from None
    except (json.JSONDecodeError, RecursionError):
        raise TriggerError("payload is not JSON") from None
    if not isinstance(data, dict):
        raise TriggerError("payload is not a JSON object")
    part_id = data.get("part_id")
    if not isinstance(part_id, str) or not part_id:
        raise TriggerError("part_id missing or not a non-empty string")
    if len(part_id) > max_id_chars:
        raise TriggerError(f"part_id longer than {max_id_chars} characters")
    ts = _time(data, "ts")
    deadline = _time(data, "deadline")
    return Trigger(part_id=part_id, ts=ts, deadline=deadline)


def _time(data: dict, key: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise TriggerError(f"{key} must be Unix seconds (a positive number)")
    return float(value)


class PartIds:
    """Which part a trigger names: one already seen (a redelivery) or a new one.

    Not thread-safe (the caller holds its lock). Example::

        ids = PartIds(window_s=2.0)
        ids.repeat("A-1", 100.0)  # False: a new part
        ids.repeat("A-1", 100.0)  # True: the same trigger again (QoS 1 redelivery)
        ids.repeat("A-1", 500.0)  # False: the counter came round, a new part
    """

    def __init__(self, window_s: float = SAME_PART_WINDOW_S, keep: int = KEEP_PART_IDS) -> None:
        self.window_s = window_s
        self.keep = keep
        # part id -> first trigger times of its last few parts (a late redelivery may come
        # after the counter came round)
        self._first: collections.OrderedDict[str, tuple[float, ...]] = collections.OrderedDict()

    def repeat(self, part_id: str, t: float) -> bool:
        """True when the trigger for ``part_id`` at ``t`` (its ``ts``, else its receipt time)
        names the part an earlier trigger named; else it is a new part, remembered from now."""
        firsts = self._first.get(part_id, ())
        if any(same_part(first, t, self.window_s) for first in firsts):
            return True
        self._first[part_id] = (*firsts[1 - _ROUNDS_KEPT :], t)
        self._first.move_to_end(part_id)
        while len(self._first) > self.keep:
            self._first.popitem(last=False)
        return False


def same_part(t_first: float, t: float, window_s: float = SAME_PART_WINDOW_S) -> bool:
    """Two triggers with the same part id at ``t_first`` and ``t`` name one part."""
    return abs(t - t_first) <= window_s
