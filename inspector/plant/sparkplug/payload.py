"""Sparkplug B payloads (Eclipse Tahu's ``sparkplug_b.proto``, compiled in ``sparkplug_b_pb2``):
metrics in and out, and the topics of one edge node.

A metric value travels in the field its datatype names (spec 6.4.16): the 8-32-bit integers in
``int_value``, 64-bit ones and DateTime (ms since the epoch) in ``long_value``, Float and
Double, Boolean and String in their own fields; a missing value is ``is_null``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from . import sparkplug_b_pb2 as pb

NAMESPACE = "spBv1.0"

# Sparkplug datatypes this node uses (the protobuf enum's values)
INT32, INT64, UINT32, UINT64 = pb.Int32, pb.Int64, pb.UInt32, pb.UInt64
DOUBLE, BOOLEAN, STRING, DATETIME = pb.Double, pb.Boolean, pb.String, pb.DateTime

_INT_FIELD = {pb.Int8, pb.Int16, pb.Int32, pb.UInt8, pb.UInt16, pb.UInt32}
_LONG_FIELD = {pb.Int64, pb.UInt64, pb.DateTime}
_FIELD = {
    **dict.fromkeys(_INT_FIELD, "int_value"),
    **dict.fromkeys(_LONG_FIELD, "long_value"),
    pb.Float: "float_value",
    pb.Double: "double_value",
    pb.Boolean: "boolean_value",
    pb.String: "string_value",
    pb.Text: "string_value",
    pb.UUID: "string_value",
}


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Topics:
    """The topics of one edge node and its one device."""

    group: str
    node: str
    device: str

    def node_topic(self, kind: str) -> str:  # NBIRTH, NDATA, NDEATH, NCMD
        return f"{NAMESPACE}/{self.group}/{kind}/{self.node}"

    def device_topic(self, kind: str) -> str:  # DBIRTH, DDATA, DDEATH, DCMD
        return f"{NAMESPACE}/{self.group}/{kind}/{self.node}/{self.device}"

    @staticmethod
    def state(host_id: str) -> str:
        return f"{NAMESPACE}/STATE/{host_id}"


def _set_value(m: pb.Payload.Metric, datatype: int, value: Any) -> None:
    if value is None:
        m.is_null = True
        return
    field = _FIELD[datatype]
    if field == "int_value" and value < 0:  # signed 8-32 bit: two's complement in uint32
        value &= 0xFFFFFFFF
    elif field == "long_value" and value < 0:
        value &= 0xFFFFFFFFFFFFFFFF
    setattr(m, field, value)


def encode(metrics: dict[str, tuple[int, Any]], seq: int | None, ts: int | None = None) -> bytes:
    """A payload with ``metrics`` ({name: (datatype, value)}), its timestamp and ``seq``
    (None: no sequence number, as in an NDEATH)."""
    ts = now_ms() if ts is None else ts
    p = pb.Payload(timestamp=ts)
    if seq is not None:
        p.seq = seq
    for name, (datatype, value) in metrics.items():
        m = p.metrics.add()
        m.name = name
        m.datatype = datatype
        m.timestamp = ts
        _set_value(m, datatype, value)
    return p.SerializeToString()


@dataclass(frozen=True)
class Written:
    """One metric of an NCMD or DCMD: its name, datatype and value (None when null)."""

    name: str
    datatype: int
    value: Any


class BadPayload(ValueError):
    """A command that is not a Sparkplug B payload."""


def decode_command(raw: bytes) -> list[Written]:
    """The metrics an NCMD or DCMD writes. Raises BadPayload when ``raw`` is not a Sparkplug
    payload; a metric without a name (this node defines no aliases) comes back nameless."""
    p = pb.Payload()
    try:
        p.ParseFromString(raw)
    except Exception as exc:  # protobuf's DecodeError, or worse on hostile input
        raise BadPayload(f"not a Sparkplug B payload ({type(exc).__name__})") from None
    out = []
    for m in p.metrics:
        kind = m.WhichOneof("value")
        value = None if m.is_null or kind is None else getattr(m, kind)
        out.append(Written(m.name, m.datatype, value))
    return out
