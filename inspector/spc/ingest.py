"""Verdicts, gate events and context in: from MQTT, and from the recordings' sidecars.

MQTT: a persistent session (the broker queues our QoS 1 messages while we are away) and
manual acknowledgement: a message is acknowledged only once it is committed to the store, so
a crash, a broker restart or a database that cannot be written re-delivers or keeps it rather
than losing it; the store's keys make the re-delivery (and a station's resend) count once.

What the service holds in memory (received, not yet stored) is bounded: the broker is asked for
``subscribe.max_unacked`` messages at a time (Receive Maximum), but Mosquitto hands a session
its whole queue after a restart, or on reconnecting, whatever it was asked. Beyond twice
``max_unacked`` the service keeps nothing more from that connection: every later QoS 1 message
is left unacknowledged (set aside, counted) and, once what it held is stored and acknowledged,
it connects again to the same session; the broker re-delivers what was set aside, oldest first,
so verdicts still reach the store and the charts in the order they were published.

Each message is checked against the store's ranges before it joins a batch (types, integers
within signed 64 bits, finite numbers, string lengths); one that fails is a dead letter: kept in
the store with why, counted, logged (throttled) and acknowledged, never in the way of the
others. A batch is written in one transaction; when the database refuses it, the writer keeps
it and retries with a bounded exponential backoff while ``/health`` says the store cannot be
written. When the database does take writes but refuses the batch, the batch is halved until
the message it refuses is found and kept as a dead letter.

Why one module: the MQTT session and the writer share one rule, that a message is acknowledged
on the connection it came in on and only after the writer stored it; split, that rule would
span two files.
"""

from __future__ import annotations

import logging
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
from .messages import BadMessage, parse_payload, parse_verdict, read_message, short
from .store import ContextRow, DeadLetter, GateRow, Store, VerdictRow

log = logging.getLogger(__name__)


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
    if not Path(root).is_dir():
        log.warning(
            "backfill %s: %s is not a folder: no recordings read (check backfill[].path; it "
            "is the station's recorder.path)",
            station,
            root,
        )
        return new, bad
    pending: list[VerdictRow] = []
    for path in sidecars(root):
        try:
            pending.append(
                parse_verdict(parse_payload(path.read_bytes()), station, origin="sidecar")
            )
        except (OSError, BadMessage) as exc:
            bad += 1
            log.warning("backfill: %s: %s", path, exc)
        if len(pending) >= batch:
            new += store.add_verdicts(pending)
            pending = []
    new += store.add_verdicts(pending)
    new.sort(key=lambda r: r.t_verdict)
    return new, bad


@dataclass(slots=True)
class Message:
    """A message on its way to the store: acknowledged to the broker once ``stored``, and only
    on the connection (``session``) it came in on (the broker re-delivers what a lost
    connection left unacknowledged, and a packet id may name another message on the next)."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    session: int
    row: VerdictRow | GateRow | ContextRow | DeadLetter
    stored: bool = False


class StoreUnavailable(Exception):
    """The database takes no writes now (down, locked, read-only): retry later."""


@dataclass
class IngestCounts:
    verdicts: int = 0
    duplicates: int = 0
    gate_events: int = 0
    context: int = 0
    malformed: int = 0  # dead letters: failed the checks
    refused: int = 0  # dead letters: passed the checks, but the store refused them
    write_failures: int = 0  # transactions that failed (each retried)
    dropped_qos0: int = 0  # QoS 0 messages beyond what is held while the store was behind
    set_aside: int = 0  # QoS 1 messages left unacknowledged, for the broker to re-deliver
    renewals: int = 0  # connections made again for the broker to re-deliver what was set aside
    connects: int = 0
    by_topic_kind: dict = field(default_factory=dict)


class _Throttle:
    """The first warning of each kind at once, then one line per ``period`` with how many
    more there were (a flood of bad messages must not flood the journal)."""

    def __init__(self, period: float = 5.0) -> None:
        self.period = period
        self._state: dict[str, list] = {}  # kind -> [window start, suppressed]

    def warning(self, kind: str, msg: str, *args) -> None:
        now = time.monotonic()
        st = self._state.get(kind)
        if st is not None and now - st[0] < self.period:
            st[1] += 1
            return
        self.flush(kind)
        self._state[kind] = [now, 0]
        log.warning(msg, *args)

    def flush(self, only: str | None = None) -> None:
        now = time.monotonic()
        for kind, st in list(self._state.items()):
            if (only is None or kind == only) and now - st[0] >= self.period:
                del self._state[kind]
                if st[1]:
                    log.warning("... and %d more %s in the last %.0f s", st[1], kind, now - st[0])


class Ingest:
    """Subscribes, writes to the store in batches, acknowledges after commit, then hands the new
    verdicts to ``on_verdicts`` (the monitor). ``on_store(ok)`` hears when the store stops and
    starts taking writes again."""

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
        max_unacked: int = 2000,
        retry_max_s: float = 5.0,
        on_store: Callable[[bool], None] | None = None,
    ) -> None:
        self.store, self.cfg = store, mqtt_cfg
        self.on_verdicts = on_verdicts
        self.on_store = on_store or (lambda ok: None)
        self.topics = [(t, "verdict") for t in verdict_topics]
        self.topics += [(t, "gate") for t in gate_topics]
        self.topics += [(t, "context") for t in context_topics]
        self.batch = batch
        self.session_expiry_s = session_expiry_s
        self.max_unacked = max_unacked
        self.retry_min_s, self.retry_max_s = min(0.1, retry_max_s), retry_max_s
        self.counts = IngestCounts()
        self.connected = threading.Event()
        self.store_error: str | None = None  # why the store takes no writes now
        self.failing_since: float | None = None
        self._session = 0
        self._pending = 0
        self.hold_max = 2 * max_unacked  # received and not yet stored, at most
        self._held = 0
        self._held_lock = threading.Lock()
        self._overflow = False  # this connection set messages aside: it takes no more
        self._connection_lock = threading.Lock()
        self._q: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._warn = _Throttle()
        self._unreachable_since: float | None = None  # the broker could not be reached since
        self._last_unreachable_log = 0.0
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
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_subscribe = self._on_subscribe
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self._writer = threading.Thread(target=self._write_loop, name="spc-writer", daemon=True)

    # -- MQTT ------------------------------------------------------------------------------
    def start(self) -> None:
        self._writer.start()
        self._connect()

    def _connect(self) -> None:
        kw = {}
        if self.cfg.protocol == "5":
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = self.session_expiry_s
            # what we hold unacknowledged (in memory) at most; the broker queues the rest
            props.ReceiveMaximum = self.max_unacked
            kw = {"clean_start": False, "properties": props}
        try:
            self.client.connect_async(self.cfg.host, self.cfg.port, self.cfg.keepalive_s, **kw)
        except (OSError, ValueError) as exc:
            log.warning("broker %s:%d: %s (retrying)", self.cfg.host, self.cfg.port, exc)
        self.client.loop_start()

    def _renew_session(self) -> None:
        """Connect again to the same session: the broker re-delivers, in order, what this
        connection left unacknowledged once it held all it may."""
        log.warning(
            "stored what was held; connecting again for the broker to re-deliver the messages "
            "set aside (%d so far)",
            self.counts.set_aside,
        )
        with self._connection_lock:
            if self._stop.is_set():
                return
            self.client.disconnect()  # after the acknowledgements already sent
            self.client.loop_stop()
            self._overflow = False  # the old connection delivers nothing more
            self.counts.renewals += 1
            self._connect()

    def stop(self) -> None:
        with self._connection_lock:
            self._stop.set()
            self.client.disconnect()
            self.client.loop_stop()
        self._writer.join(5)

    def _on_connect_fail(self, _c, _u) -> None:
        """No broker at the address (nothing listens, no route): said at once, then once a
        minute while it lasts; paho alone retries without a word."""
        now = time.monotonic()
        first = self._unreachable_since is None
        if first or now - self._last_unreachable_log >= 60.0:
            self._last_unreachable_log = now
            since = "" if first else f" for {now - self._unreachable_since:.0f} s"
            log.warning(
                "cannot reach the MQTT broker at %s:%d%s: no verdicts are received or stored "
                "until it answers (retrying; check mqtt.host and mqtt.port)",
                self.cfg.host,
                self.cfg.port,
                since,
            )
        if first:
            self._unreachable_since = now

    def _on_connect(self, client, _u, flags, rc, _props=None) -> None:
        if rc.is_failure:
            log.error("broker refused the SPC service: %s", rc)
            return
        if self._unreachable_since is not None:
            log.warning(
                "reached the MQTT broker at %s:%d after %.0f s",
                self.cfg.host,
                self.cfg.port,
                time.monotonic() - self._unreachable_since,
            )
            self._unreachable_since = None
        self._session += 1
        self._overflow = False
        self.counts.connects += 1
        if getattr(flags, "session_present", False):
            # the session kept its subscriptions: connected now (a restored session's backlog
            # comes before the SUBACK, and may take a while)
            self.connected.set()
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
        if msg.qos > 0 and self._overflow:  # nothing newer may overtake what was set aside
            self.counts.set_aside += 1
            return
        with self._held_lock:
            full = self._held >= self.hold_max
            if not full:
                self._held += 1
        if full:
            if msg.qos == 0:  # not re-delivered: lost
                self.counts.dropped_qos0 += 1
                return
            self._overflow = True
            self.counts.set_aside += 1
            log.warning(
                "holding %d messages unstored, the most the SPC service holds: the broker sent "
                "more than asked; the rest stays with it, unacknowledged, until they are stored",
                self.hold_max,
            )
            return
        kind = next((k for t, k in self.topics if mqtt.topic_matches_sub(t, msg.topic)), "context")
        self._q.put(
            (
                kind,
                msg.topic,
                bytes(msg.payload),
                msg.mid,
                msg.qos,
                time.time(),
                self._session,
                bool(msg.retain),
            )
        )

    # -- writing ---------------------------------------------------------------------------
    @property
    def writable(self) -> bool:
        """False while the store refuses writes (the writer keeps retrying)."""
        return self.store_error is None

    def unstored(self) -> int:
        """Messages received and not yet stored (nor acknowledged): ``hold_max`` at most."""
        return self._held

    def _stored(self, n: int) -> None:
        with self._held_lock:
            self._held -= n

    def _take(self, n: int, wait: bool) -> list[Message]:
        out: list[Message] = []
        while len(out) < n:
            try:
                item = self._q.get(timeout=0.1) if wait and not out else self._q.get_nowait()
            except queue.Empty:
                break
            kind, topic, payload, mid, qos, received, session, retained = item
            try:
                row = read_message(kind, topic, payload, received, mid if qos else 0, retained)
            except Exception as exc:  # a reader's bug must not stop the writer: kept aside
                log.exception("could not read a message on %s", topic)
                why = f"could not be read: {short(exc)}"
                row = DeadLetter(topic, received, kind, why, payload, mid if qos else 0)
            out.append(Message(topic, payload, mid, qos, session, row))
        return out

    def _write_loop(self) -> None:
        pending: list[Message] = []
        delay = 0.0
        while True:
            if len(pending) < self.batch:
                pending += self._take(self.batch - len(pending), wait=not pending)
            self._pending = len(pending)
            self._warn.flush()
            if not pending:
                if self._stop.is_set():
                    return
                continue
            try:
                self._store(pending)
            except Exception as exc:  # noqa: BLE001 (StoreUnavailable, or a bug: retried alike)
                if not isinstance(exc, StoreUnavailable):
                    log.exception("the writer failed on %d messages", len(pending))
                held = len(pending)
                pending = [m for m in pending if not m.stored]
                self._stored(held - len(pending))
                self._cannot_write(exc.__cause__ or exc, len(pending))
                delay = min(max(delay * 2, self.retry_min_s), self.retry_max_s)
                if self._stop.wait(delay):  # stopping: the broker re-delivers what is left
                    log.warning("stopped with %d messages not stored", self.unstored())
                    return
                continue
            self._stored(len(pending))
            pending, delay = [], 0.0
            self._pending = 0
            if self.store_error is not None:
                self._can_write()
            if self._overflow and self._held == 0:
                self._renew_session()

    def _store(self, msgs: list[Message]) -> None:
        """Write ``msgs`` in one transaction; when the store refuses it but takes writes, halve
        until the message it refuses is found (kept as a dead letter)."""
        try:
            new = self._write([m.row for m in msgs])
        except Exception as exc:  # noqa: BLE001 (any failure rolls the batch back)
            self.counts.write_failures += 1
            if not self.store.writable():
                raise StoreUnavailable from exc
            if len(msgs) > 1:
                half = len(msgs) // 2
                self._store(msgs[:half])
                self._store(msgs[half:])
                return
            m = msgs[0]
            try:  # once more: the store may have come back just before the probe
                self._done(msgs, self._write([m.row]))
                return
            except Exception as again:  # noqa: BLE001
                exc = again
            kind = getattr(m.row, "kind", None) or {VerdictRow: "verdict", GateRow: "gate"}.get(
                type(m.row), "context"
            )
            refused = DeadLetter(
                m.topic,
                time.time(),
                kind,
                f"the store refused it: {short(exc, 300)}",
                m.payload,
                m.mid if m.qos else 0,
            )
            try:
                self.store.write(dead=[refused])
            except Exception as again:  # noqa: BLE001
                raise StoreUnavailable from again
            self.counts.refused += 1
            self._warn.warning(
                "messages the store refused",
                "the store refused a message on %s: %s (kept as a dead letter)",
                m.topic,
                short(exc, 300),
            )
            self._done([m], [], rows_counted=False)
            return
        self._done(msgs, new)

    def _write(self, rows: list) -> list[VerdictRow]:
        by_type: dict[type, list] = {VerdictRow: [], GateRow: [], ContextRow: [], DeadLetter: []}
        for r in rows:
            by_type[type(r)].append(r)
        return self.store.write(
            by_type[VerdictRow],
            by_type[GateRow],
            by_type[ContextRow],
            by_type[DeadLetter],
            context_window_s=self.session_expiry_s,
        )

    def _done(self, msgs: list[Message], new: list[VerdictRow], rows_counted: bool = True) -> None:
        c = self.counts
        session = self._session
        for m in msgs:
            m.stored = True
            if rows_counted:
                if isinstance(m.row, VerdictRow):
                    c.verdicts += 1
                elif isinstance(m.row, GateRow):
                    c.gate_events += 1
                elif isinstance(m.row, ContextRow):
                    c.context += 1
                else:
                    c.malformed += 1
                    self._warn.warning(
                        "unreadable messages",
                        "unreadable message on %s: %s (kept as a dead letter)",
                        m.topic,
                        m.row.error,
                    )
            if m.qos > 0 and m.session == session:
                self.client.ack(m.mid, m.qos)
        if rows_counted:
            dups = sum(isinstance(m.row, VerdictRow) for m in msgs) - len(new)
            c.verdicts -= dups
            c.duplicates += dups
        if new:
            new.sort(key=lambda r: r.t_verdict)
            try:
                self.on_verdicts(new)
            except Exception:  # stored and acknowledged: the charts' trouble is not the store's
                log.exception("the monitor failed on %d new verdicts", len(new))

    def _cannot_write(self, exc: BaseException, held: int) -> None:
        if self.store_error is None:
            self.failing_since = time.time()
            self.store_error = short(exc, 300)
            log.error(
                "cannot write to the SPC store (%s); holding %d messages unacknowledged and "
                "retrying",
                self.store_error,
                held,
            )
            self.on_store(False)
        else:
            self.store_error = short(exc, 300)
            self._warn.warning(
                "failed retries",
                "still cannot write to the SPC store (%s), %d messages held",
                self.store_error,
                self.unstored(),
            )

    def _can_write(self) -> None:
        log.warning(
            "the SPC store takes writes again after %.0f s (%d failed transactions so far)",
            time.time() - (self.failing_since or time.time()),
            self.counts.write_failures,
        )
        self.store_error = self.failing_since = None
        self.on_store(True)

    def write(self, items: list[tuple]) -> list[VerdictRow]:
        """Store messages given as (kind, topic, payload, mid, qos, received) at once, as the
        writer does (benchmarks, tests); returns the new verdicts. Raises StoreUnavailable."""
        got: list[VerdictRow] = []
        keep, self.on_verdicts = self.on_verdicts, lambda rows: (got.extend(rows), keep(rows))
        try:
            msgs = [
                Message(t, p, mid, 0, -1, read_message(k, t, p, rec, mid if qos else 0))
                for k, t, p, mid, qos, rec in items
            ]
            self._store(msgs)
        finally:
            self.on_verdicts = keep
        return got

    def idle(self) -> bool:
        return self._held == 0
