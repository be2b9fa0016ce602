"""A Sparkplug B host application for the tests, written from the specification (3.0), not
from the station's code: it decodes every message with the schema's compiled module only,
checks the rules a host relies on, and sends NCMD/DCMD and STATE.

Rules checked on every message (spec 3.0 chapter 4 and 5):
- topic ``spBv1.0/GROUP/TYPE/NODE[/DEVICE]``, device only on D* types;
- NBIRTH: seq 0, a ``bdSeq`` metric (Int64), ``Node Control/Rebirth`` (Boolean), a timestamp;
- every BIRTH metric has a name, a datatype and a value (or is_null);
- DBIRTH/NDATA/DDATA/DDEATH: seq one more than the node's previous message, 255 -> 0;
- NDEATH: no seq, exactly one metric ``bdSeq`` equal to the bdSeq of the NBIRTH before it;
- births, data and device deaths at QoS 0, NDEATH at QoS 1, nothing retained.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt

from inspector.plant.sparkplug import sparkplug_b_pb2 as pb

# the value field each datatype travels in (spec 6.4.16, Tahu's schema)
VALUE_FIELD = {
    1: "int_value",  # Int8
    2: "int_value",  # Int16
    3: "int_value",  # Int32
    4: "long_value",  # Int64
    5: "int_value",  # UInt8
    6: "int_value",  # UInt16
    7: "int_value",  # UInt32
    8: "long_value",  # UInt64
    9: "float_value",
    10: "double_value",
    11: "boolean_value",
    12: "string_value",
    13: "long_value",  # DateTime, ms since the epoch
    14: "string_value",  # Text
}
INT64, UINT32, UINT64, DOUBLE, BOOLEAN, STRING, DATETIME = 4, 7, 8, 10, 11, 12, 13


@dataclass
class Message:
    kind: str  # NBIRTH, DDATA, ...
    node: str
    device: str | None
    seq: int | None
    timestamp: int | None
    metrics: dict[str, tuple[int, object]]  # name -> (datatype, value or None)
    qos: int
    retain: bool
    t: float = field(default_factory=time.monotonic)


def decode(raw: bytes) -> tuple[int | None, int | None, dict[str, tuple[int, object]]]:
    p = pb.Payload()
    p.ParseFromString(raw)
    metrics = {}
    for m in p.metrics:
        fieldname = VALUE_FIELD[m.datatype]
        if m.is_null:
            value = None
        else:
            assert m.WhichOneof("value") == fieldname, (m.name, m.datatype, m.WhichOneof("value"))
            value = getattr(m, fieldname)
        metrics[m.name] = (m.datatype, value)
    seq = p.seq if p.HasField("seq") else None
    ts = p.timestamp if p.HasField("timestamp") else None
    return seq, ts, metrics


def command(metrics: dict[str, tuple[int, object]]) -> bytes:
    """An NCMD/DCMD payload: a timestamp and the metrics to write (by name)."""
    p = pb.Payload(timestamp=int(time.time() * 1000))
    for name, (datatype, value) in metrics.items():
        m = p.metrics.add(name=name, datatype=datatype, timestamp=p.timestamp)
        setattr(m, VALUE_FIELD[datatype], value)
    return p.SerializeToString()


class Host:
    """Subscribes to ``spBv1.0/GROUP/#`` and checks each message as it arrives; ``problems``
    lists every rule broken."""

    def __init__(self, broker, group: str, user=None, password=None, tls=None, host_id=None):
        self.group = group
        self.messages: list[Message] = []
        self.problems: list[str] = []
        self._last_seq: dict[str, int] = {}
        self._bdseq: dict[str, int] = {}
        self._lock = threading.Lock()
        self.host_id = host_id
        self.c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"host-{id(self)}", protocol=mqtt.MQTTv5
        )
        if tls:
            self.c.tls_set(ca_certs=str(tls))
        if user:
            self.c.username_pw_set(user, password)
        self.c.on_message = self._on_message
        subscribed = threading.Event()
        self.c.on_subscribe = lambda *a, **k: subscribed.set()
        self.c.connect(getattr(broker, "host", "127.0.0.1"), broker.port)
        self.c.loop_start()
        self.c.subscribe(f"spBv1.0/{group}/#", qos=1)
        assert subscribed.wait(5), "the host could not subscribe"

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()

    # -- receiving -------------------------------------------------------------------------------
    def _on_message(self, _c, _u, msg) -> None:
        parts = msg.topic.split("/")
        kind = parts[2]
        node = parts[3]
        device = parts[4] if len(parts) > 4 else None
        if kind in ("NCMD", "DCMD"):  # the commands the tests send, echoed back
            return
        try:
            seq, ts, metrics = decode(msg.payload)
        except Exception as exc:  # noqa: BLE001 - any failure to decode is a finding
            with self._lock:
                self.problems.append(f"{msg.topic}: undecodable: {exc!r}")
            return
        m = Message(kind, node, device, seq, ts, metrics, msg.qos, msg.retain)
        with self._lock:
            self.problems += self._check(msg.topic, m)
            self.messages.append(m)

    def _check(self, topic: str, m: Message) -> list[str]:
        bad = []
        if (m.device is not None) != m.kind.startswith("D"):
            bad.append(f"{topic}: device id on the wrong message type")
        if m.retain:
            bad.append(f"{topic}: retained")
        if m.kind == "NDEATH":
            if m.seq is not None:
                bad.append(f"{topic}: NDEATH with a seq")
            if set(m.metrics) != {"bdSeq"} or m.metrics["bdSeq"][0] != INT64:
                bad.append(f"{topic}: NDEATH metrics {m.metrics}")
            elif m.metrics["bdSeq"][1] != self._bdseq.get(m.node):
                bad.append(
                    f"{topic}: NDEATH bdSeq {m.metrics['bdSeq'][1]} != NBIRTH's "
                    f"{self._bdseq.get(m.node)}"
                )
            if m.qos != 1:
                bad.append(f"{topic}: NDEATH at QoS {m.qos}")
            self._last_seq.pop(m.node, None)
            return bad
        if m.kind in ("NCMD", "DCMD"):
            return bad
        if m.qos != 0:
            bad.append(f"{topic}: QoS {m.qos}, not 0")
        if m.timestamp is None:
            bad.append(f"{topic}: no timestamp")
        if m.seq is None or not 0 <= m.seq <= 255:
            bad.append(f"{topic}: seq {m.seq}")
        if m.kind == "NBIRTH":
            if m.seq != 0:
                bad.append(f"{topic}: NBIRTH seq {m.seq}")
            bd = m.metrics.get("bdSeq")
            if bd is None or bd[0] != INT64 or not 0 <= (bd[1] or 0) <= 255:
                bad.append(f"{topic}: NBIRTH bdSeq {bd}")
            else:
                self._bdseq[m.node] = bd[1]
            if m.metrics.get("Node Control/Rebirth") != (BOOLEAN, False):
                bad.append(f"{topic}: no Node Control/Rebirth = false")
        else:
            before = self._last_seq.get(m.node)
            if before is None:
                bad.append(f"{topic}: {m.kind} before an NBIRTH")
            elif m.seq != (before + 1) % 256:
                bad.append(f"{topic}: seq {m.seq} after {before}")
        if m.kind.endswith("BIRTH"):
            for name, (datatype, _value) in m.metrics.items():
                if not name or datatype not in VALUE_FIELD:
                    bad.append(f"{topic}: metric {name!r} datatype {datatype}")
        if m.seq is not None:
            self._last_seq[m.node] = m.seq
        return bad

    # -- waiting -----------------------------------------------------------------------------------
    def of(self, kind: str) -> list[Message]:
        with self._lock:
            return [m for m in self.messages if m.kind == kind]

    def wait(self, kind: str, n: int = 1, timeout: float = 10.0) -> list[Message]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            got = self.of(kind)
            if len(got) >= n:
                return got
            time.sleep(0.01)
        return self.of(kind)

    def wait_value(self, name: str, want, timeout: float = 10.0) -> bool:
        """True once the device's view of ``name`` (births and data) equals ``want``."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.current(name) == want:
                return True
            time.sleep(0.02)
        return False

    def current(self, name: str):
        """The last value of a device metric the host heard (DBIRTH or DDATA)."""
        with self._lock:
            for m in reversed(self.messages):
                if m.kind in ("DBIRTH", "DDATA") and name in m.metrics:
                    return m.metrics[name][1]
        return None

    # -- sending -----------------------------------------------------------------------------------
    def ncmd(self, node: str, metrics: dict) -> None:
        self.c.publish(f"spBv1.0/{self.group}/NCMD/{node}", command(metrics), qos=0)

    def dcmd(self, node: str, device: str, metrics: dict) -> None:
        self.c.publish(f"spBv1.0/{self.group}/DCMD/{node}/{device}", command(metrics), qos=0)

    def state(self, online: bool, timestamp: int | None = None) -> None:
        body = {"online": online, "timestamp": timestamp or int(time.time() * 1000)}
        info = self.c.publish(f"spBv1.0/STATE/{self.host_id}", json.dumps(body), 1, retain=True)
        info.wait_for_publish(5)
