"""Verdicts, gate events and context in: from MQTT, and from the recordings' sidecars.

MQTT: a persistent session (the broker queues our QoS 1 messages while we are away) and
manual acknowledgement: a message is acknowledged only once it is committed to the store, so
a crash or a broker restart re-delivers it rather than losing it; the store's key makes the
re-delivery (and a station's resend) count once. A payload that cannot be read is kept in the
store verbatim with the reason, logged and counted, and acknowledged: nothing is lost.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ..contract.mqtt import MqttSection, secure
from ..logs import Throttled
from .store import GateRow, Store, VerdictRow

log = logging.getLogger(__name__)
MAX_PAYLOAD_BYTES = 64 * 1024


class BadMessage(ValueError):
    """A payload that is not a readable verdict / gate event."""


def _obj(payload: bytes) -> dict:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise BadMessage(f"payload of {len(payload)} bytes (more than {MAX_PAYLOAD_BYTES})")
    try:
        obj = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadMessage(f"not UTF-8 JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise BadMessage("not a JSON object")
    return obj


def _field(obj: dict, key: str, kind, optional: bool = False):
    v = obj.get(key)
    if v is None and optional:
        return None
    ok = isinstance(v, kind) and not isinstance(v, bool)
    if ok and isinstance(v, float) and not math.isfinite(v):
        ok = False
    if not ok:
        raise BadMessage(f"{key}: expected {getattr(kind, '__name__', kind)}, got {v!r}")
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
        model_id=str(obj.get("model_id") or ""),
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


def sidecars(root: Path) -> Iterator[Path]:
    """The recorder's sidecars under ``root`` (DAY/pass|fail|uncertain/*.json), oldest day first."""
    yield from sorted(p for p in Path(root).rglob("*.json") if p.is_file())


def backfill(
    store: Store, station: str, root: Path, batch: int = 1000
) -> tuple[list[VerdictRow], int]:
    """Store the verdicts of a station's recordings (sidecars); returns (new rows, unreadable).
    Run at start-up: verdicts published while the service was away are not lost when the
    station kept them (rejects, uncertain and a sample of passes)."""
    new: list[VerdictRow] = []
    bad = 0
    pending: list[VerdictRow] = []
    for path in sidecars(root):
        try:
            pending.append(parse_verdict(_obj(path.read_bytes()), station, origin="sidecar"))
        except (OSError, BadMessage) as exc:
            bad += 1
            log.warning("backfill: %s: %s", path, exc)
        if len(pending) >= batch:
            new += store.add_verdicts(pending)
            pending = []
    new += store.add_verdicts(pending)
    new.sort(key=lambda r: r.t_verdict)
    return new, bad


@dataclass
class IngestCounts:
    verdicts: int = 0
    duplicates: int = 0
    gate_events: int = 0
    context: int = 0
    malformed: int = 0
    connects: int = 0
    by_topic_kind: dict = field(default_factory=dict)


class Ingest:
    """Subscribes, writes to the store in batches, acknowledges after commit, then hands the new
    verdicts to ``on_verdicts`` (the monitor)."""

    def __init__(
        self,
        store: Store,
        mqtt_cfg: MqttSection,
        verdict_topics: list[str],
        gate_topics: list[str],
        context_topics: list[str],
        on_verdicts: Callable[[list[VerdictRow]], None],
        session_expiry_s: int = 3600,
        batch: int = 500,
        client_id: str | None = None,
    ) -> None:
        self.store, self.cfg = store, mqtt_cfg
        self.on_verdicts = on_verdicts
        self.topics = [(t, "verdict") for t in verdict_topics]
        self.topics += [(t, "gate") for t in gate_topics]
        self.topics += [(t, "context") for t in context_topics]
        self.batch = batch
        self.session_expiry_s = session_expiry_s
        self.counts = IngestCounts()
        self.connected = threading.Event()
        self._q: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._warn = Throttled(log)
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or mqtt_cfg.client_id or "inspector-spc",
            protocol=mqtt.MQTTv5 if mqtt_cfg.protocol == "5" else mqtt.MQTTv311,
            manual_ack=True,
            clean_session=None if mqtt_cfg.protocol == "5" else False,
        )
        secure(self.client, mqtt_cfg)
        self.client.reconnect_delay_set(0.1, max(mqtt_cfg.reconnect_max_s, 0.1))
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self._writer = threading.Thread(target=self._write_loop, name="spc-writer", daemon=True)

    # -- MQTT ------------------------------------------------------------------------------
    def start(self) -> None:
        self._writer.start()
        kw = {}
        if self.cfg.protocol == "5":
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = self.session_expiry_s
            kw = {"clean_start": False, "properties": props}
        try:
            self.client.connect_async(self.cfg.host, self.cfg.port, self.cfg.keepalive_s, **kw)
        except (OSError, ValueError) as exc:
            log.warning("broker %s:%d: %s (retrying)", self.cfg.host, self.cfg.port, exc)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self._stop.set()
        self._writer.join(5)

    def _on_connect(self, client, _u, _flags, rc, _props=None) -> None:
        if rc.is_failure:
            log.error("broker refused the SPC service: %s", rc)
            return
        self.counts.connects += 1
        client.subscribe([(t, 1) for t, _ in self.topics])

    def _on_subscribe(self, _c, _u, _mid, reason_codes, _props=None) -> None:
        # connected means subscribed: what is published before the broker has the subscription
        # of a new session is not routed to it
        refused = [str(rc) for rc in reason_codes if getattr(rc, "is_failure", False)]
        if refused:
            log.error("the broker refused the SPC service's subscriptions: %s", ", ".join(refused))
            return
        self.connected.set()
        log.info("subscribed to %s", ", ".join(t for t, _ in self.topics))

    def _on_disconnect(self, _c, _u, _flags, rc, _props=None) -> None:
        self.connected.clear()
        if rc != 0:
            log.warning("lost the broker (%s); reconnecting", rc)

    def _on_message(self, _c, _u, msg) -> None:
        kind = next((k for t, k in self.topics if mqtt.topic_matches_sub(t, msg.topic)), "context")
        self._q.put((kind, msg.topic, bytes(msg.payload), msg.mid, msg.qos, time.time()))

    # -- writing ---------------------------------------------------------------------------
    def _write_loop(self) -> None:
        while not (self._stop.is_set() and self._q.empty()):
            try:
                first = self._q.get(timeout=0.1)
            except queue.Empty:
                continue
            items = [first]
            while len(items) < self.batch:
                try:
                    items.append(self._q.get_nowait())
                except queue.Empty:
                    break
            try:
                self.write(items)
            except Exception:  # the store failed: do not ack; the broker re-delivers
                log.exception("could not store %d messages (not acknowledged)", len(items))
                time.sleep(0.5)
                continue
            for _kind, _topic, _payload, mid, qos, _t in items:
                if qos > 0:
                    self.client.ack(mid, qos)

    def write(self, items: list[tuple]) -> list[VerdictRow]:
        verdicts, gates, context, bad = [], [], [], []
        for kind, topic, payload, _mid, _qos, received in items:
            if kind == "context":
                context.append((topic, received, payload.decode("utf-8", "replace")))
                continue
            try:
                obj = _obj(payload)
                if kind == "verdict":
                    verdicts.append(parse_verdict(obj))
                else:
                    gates.append(parse_gate_event(obj))
            except BadMessage as exc:
                bad.append((topic, received, payload, str(exc)))
                self._warn.warning("malformed", topic, "unreadable message on %s: %s", topic, exc)
        self.store.add_rejected(bad)
        self.store.add_gate_events(gates)
        self.store.add_context(context)
        new = self.store.add_verdicts(verdicts)
        c = self.counts
        c.verdicts += len(new)
        c.duplicates += len(verdicts) - len(new)
        c.gate_events += len(gates)
        c.context += len(context)
        c.malformed += len(bad)
        if new:
            new.sort(key=lambda r: r.t_verdict)
            self.on_verdicts(new)
        return new

    def idle(self) -> bool:
        return self._q.empty()
