"""What a message may hold: each verdict, gate event and context message is checked against
the store's ranges (types, integers within signed 64 bits, finite numbers, string lengths, no
NUL, JSON size and depth) and becomes a row, or a dead letter that says why."""

from __future__ import annotations

import json
import math

from .store import ContextRow, DeadLetter, GateRow, VerdictRow

MAX_PAYLOAD_BYTES = 64 * 1024
INT64 = (-(2**63), 2**63 - 1)  # the store's BIGINT
MAX_CHARS = {  # the longest string the store keeps of each field
    "station": 128,
    "gate": 128,
    "part_id": 256,  # as the station's and the gate's MAX_PART_ID_CHARS
    "reason": 64,
    "outcome": 64,
    "result": 8,
    "class": 128,
    "model_id": 256,
}
MAX_CONTEXT_CHARS = 4096


class BadMessage(ValueError):
    """A payload that is not a readable verdict / gate event."""


def parse_payload(payload: bytes) -> dict:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise BadMessage(f"payload of {len(payload)} bytes (more than {MAX_PAYLOAD_BYTES})")
    try:
        obj = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadMessage(f"not UTF-8 JSON ({short(exc)})") from None
    except RecursionError:
        raise BadMessage("JSON nested too deep") from None
    if not isinstance(obj, dict):
        raise BadMessage("not a JSON object")
    return obj


def short(value, limit: int = 80) -> str:
    """A value for a message: its repr (an error: its text on one line), cut at ``limit``."""
    text = repr(value) if not isinstance(value, BaseException) else " ".join(str(value).split())
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def _field(obj: dict, key: str, kind, optional: bool = False):
    v = obj.get(key)
    if v is None and optional:
        return None
    ok = isinstance(v, kind) and not isinstance(v, bool)
    if ok and isinstance(v, float) and not math.isfinite(v):
        ok = False
    if not ok:
        raise BadMessage(f"{key}: expected {getattr(kind, '__name__', 'number')}, got {short(v)}")
    if isinstance(v, int) and not INT64[0] <= v <= INT64[1]:
        raise BadMessage(f"{key}: {short(v)} is outside the signed 64-bit range")
    if isinstance(v, str):
        limit = MAX_CHARS.get(key, MAX_CONTEXT_CHARS)
        if len(v) > limit:
            raise BadMessage(f"{key}: {len(v)} characters (at most {limit})")
        if not v and key in ("station", "gate", "part_id"):
            raise BadMessage(f"{key}: empty")
        if "\x00" in v:
            raise BadMessage(f"{key}: contains a NUL character")
    return v


def defect_count(obj: dict) -> int:
    """Defects a part has: defect classes whose score reaches their threshold (a model that
    reports several), at least one for a ``defect`` verdict."""
    scores, thresholds = obj.get("scores") or {}, obj.get("threshold") or {}
    n = 0
    if isinstance(scores, dict) and isinstance(thresholds, dict):
        for cls, thr in thresholds.items():
            s = scores.get(cls)
            if isinstance(s, (int, float)) and isinstance(thr, (int, float)) and s >= thr:
                n += 1
    if obj.get("reason") == "defect":
        n = max(n, 1)
    return n


def parse_verdict(obj: dict, station: str | None = None, origin: str = "mqtt") -> VerdictRow:
    """A verdict (contract ``PREFIX/verdict``, or a recorder sidecar with ``station`` given)."""
    result = _field(obj, "result", str)
    if result not in ("pass", "fail"):
        raise BadMessage(f"result: expected pass or fail, got {result!r}")
    t_verdict = float(_field(obj, "t_verdict", (int, float)))
    t_trigger = _field(obj, "t_trigger", (int, float), optional=True)
    label = _field(obj, "class", str, optional=True)
    return VerdictRow(
        station=station or _field(obj, "station", str),
        seq=_field(obj, "seq", int),
        part_id=_field(obj, "part_id", str),
        t_trigger=float(t_trigger if t_trigger is not None else t_verdict),
        t_verdict=t_verdict,
        result=result,
        reason=_field(obj, "reason", str),
        label=label,
        defects=defect_count(obj),
        model_id=_field(obj, "model_id", str, optional=True) or "",
        origin=origin,
    )


def parse_gate_event(obj: dict) -> GateRow:
    return GateRow(
        gate=_field(obj, "gate", str),
        part_id=_field(obj, "part_id", str),
        t_trigger=float(_field(obj, "t_trigger", (int, float))),
        outcome=_field(obj, "outcome", str),
        reason=_field(obj, "reason", str),
        t_decided=float(_field(obj, "t_decided", (int, float))),
    )


def read_message(
    kind: str, topic: str, payload: bytes, received: float, mid: int = 0, retained: bool = False
) -> VerdictRow | GateRow | ContextRow | DeadLetter:
    """The row a message becomes in the store, checked against the store's ranges; a message
    that fails the checks becomes a dead letter that says why."""
    try:
        if kind == "context":
            if len(payload) > MAX_PAYLOAD_BYTES:
                raise BadMessage(f"payload of {len(payload)} bytes (more than {MAX_PAYLOAD_BYTES})")
            value = payload.decode("utf-8", "replace")
            if len(value) > MAX_CONTEXT_CHARS:
                raise BadMessage(f"{len(value)} characters (at most {MAX_CONTEXT_CHARS})")
            if "\x00" in value:
                raise BadMessage("contains a NUL character")
            return ContextRow(topic, received, value, mid, retained)
        obj = parse_payload(payload)
        return parse_verdict(obj) if kind == "verdict" else parse_gate_event(obj)
    except BadMessage as exc:
        return DeadLetter(topic, received, kind, str(exc), payload, mid)
