"""Trigger messages: what a sensor or PLC publishes when a part arrives.

Payload (JSON object, UTF-8)::

    {"part_id": "A-0001", "ts": 1764370000.125, "deadline": 1764370001.125}

``part_id`` (a non-empty string) is required and kept verbatim in the verdict.
``ts`` (Unix seconds) is when the part was seen; ``deadline`` (Unix seconds) overrides
the station's ``part.deadline_ms``. Anything else (not JSON, not UTF-8, too big, wrong
types) raises TriggerError, which the station logs and counts; it never stops.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass


class TriggerError(ValueError):
    """A trigger payload that cannot name a part."""


@dataclass(frozen=True, slots=True)
class Trigger:
    part_id: str
    ts: float | None
    deadline: float | None


def parse_trigger(payload: bytes, max_bytes: int = 4096, max_id_chars: int = 256) -> Trigger:
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
