"""MQTT: verdicts out (QoS 1, never retained, never late), status out (retained, last-will), triggers in.

paho-mqtt keeps its own queue of unacknowledged messages and replays it after a
reconnect, however stale. We don't let it: every connection gets a fresh paho client
with automatic reconnection off, and the outbox is ours. While the broker is away,
verdicts wait in a bounded outbox; after reconnect each is sent only while its part's
deadline has not passed. Expired verdicts are counted and logged, never sent. A verdict
in flight when the connection dropped (no PUBACK) goes back to the outbox under the
same rule; the gate treats a duplicate part id as the same verdict.

Under MQTT 5 each verdict carries a message expiry interval: the whole seconds left
until its deadline, rounded up (the protocol's resolution), so the broker does not
deliver it much later either; the gate enforces the exact deadline itself.

One thread ("mqtt") owns the paho client and drives its network I/O (``mqttio``), instead
of paho's own loop thread: a publish is written at once, and every paho callback (PUBACKs,
triggers, the connection dropping) runs on this thread.

Why one module: the MQTT link owns one paho client and its outbox on one thread; its I/O pump
is in mqttio.py.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ..contract.mqtt import MqttSection, secure
from ..contract.records import Verdict, verdict_payload
from ..contract.topics import Topics
from .link import Handlers
from .metrics import Metrics
from .mqttio import ClientIO, close_socket, corked

log = logging.getLogger(__name__)
INFLIGHT = 100  # verdicts sent but not yet acknowledged (PUBACK) at most
EXTRA_QUEUE = 256  # other messages (shadow decisions, command replies) waiting; oldest go first


@dataclass
class _Item:
    verdict: Verdict
    payload: bytes


class MqttLink:
    """The MQTT link to the line (a ``link.LineLink``). Owns the broker connection.
    Thread-safe ``publish``; runs its own thread."""

    def __init__(
        self,
        cfg: MqttSection,
        station: str,
        topics: Topics,
        metrics: Metrics,
        handlers: Handlers,
        client_id: str | None = None,
    ) -> None:
        """``handlers``: the station's status payload, and what to do with triggers (on
        ``topics.trigger``) and model requests (on ``topics.cmd_model``; answered on the
        request's MQTT 5 response topic), both called on the mqtt thread."""
        self.cfg = cfg
        self.client_id = client_id or f"inspector-{station}"
        self.station = station
        self.topics = topics
        self.metrics = metrics
        self.status = handlers.status
        self.on_trigger = handlers.trigger
        self.on_command = handlers.command
        self._extra: collections.deque[tuple] = collections.deque(maxlen=EXTRA_QUEUE)
        self.protocol = mqtt.MQTTv5 if cfg.protocol == "5" else mqtt.MQTTv311
        self._outbox: collections.deque[_Item] = collections.deque()
        self._inflight: dict[tuple[int, int], _Item] = {}
        self._expiry: dict[int, Properties] = {}  # MQTT 5 expiry properties, by whole seconds
        self._connack = threading.Event()
        self._suback = threading.Event()
        self._lost = threading.Event()
        self._lock = threading.Lock()
        self._io = ClientIO()
        # publish() and status_changed() wake the mqtt thread only while it is idle (waiting
        # with nothing it could send)
        self._idle = False
        self._status_dirty = False
        self._last_status = 0.0
        self._stopping = threading.Event()
        self._client: mqtt.Client | None = None
        self._generation = 0
        self.connected = threading.Event()
        self.last_error = ""
        self._thread = threading.Thread(target=self._run, name="mqtt", daemon=True)
        metrics.outbox.set_function(lambda: len(self._outbox))  # read when scraped

    # -- public ------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def publish(self, verdict: Verdict) -> None:
        payload = json.dumps(verdict_payload(verdict, self.station), separators=(",", ":")).encode()
        dropped = None
        with self._lock:
            if len(self._outbox) >= self.cfg.outbox_size:
                dropped = self._outbox.popleft()
            self._outbox.append(_Item(verdict, payload))
            wake, self._idle = self._idle, False
        if wake:
            self._io.wake()
        if dropped is not None:
            self.metrics.drop("outbox_overflow")
            log.error("outbox full: verdict for part %r dropped", dropped.verdict.part_id)

    def _enqueue(
        self, topic: str, payload: bytes, qos: int = 0, properties: Properties | None = None
    ) -> None:
        """Any other message (shadow decisions, command replies), never retained: sent by the
        mqtt thread after the verdicts, dropped (oldest first) when the broker is away."""
        with self._lock:
            self._extra.append((topic, payload, qos, properties))
            wake, self._idle = self._idle, False
        if wake:
            self._io.wake()

    def status_changed(self) -> None:
        with self._lock:
            self._status_dirty = True
            wake, self._idle = self._idle, False
        if wake:
            self._io.wake()

    def pending(self) -> int:
        with self._lock:
            return len(self._outbox) + len(self._inflight)

    def stop(self, timeout: float = 3.0) -> None:
        """Send what is still valid, publish status offline, disconnect."""
        end = time.monotonic() + timeout
        while self.pending() and time.monotonic() < end and self.connected.is_set():
            time.sleep(0.01)
        self._stopping.set()
        self._io.wake()
        self._thread.join(timeout=max(0.5, end - time.monotonic() + 1.0))
        client = self._client
        if self._thread.is_alive():  # stuck (in a trigger handler): leave its client alone
            log.warning("MQTT thread did not stop; not publishing the offline status")
            self.connected.clear()
            return
        if client is not None and self.connected.is_set():  # the client is ours now
            offline = dict(self.status(), state="offline")
            try:
                info = client.publish(self.topics.status, json.dumps(offline), qos=1, retain=True)
                self._io.pump(client, info.is_published, 1.0, self._lost)
            except (RuntimeError, ValueError) as exc:
                log.warning("could not publish offline status: %s", exc)
            client.disconnect()
        close_socket(client)
        self._io.close()
        self.connected.clear()

    # -- connection management ---------------------------------------------------------------------
    def _run(self) -> None:
        backoff = 0.05
        while not self._stopping.is_set():
            if not self.connected.is_set():
                self._drop_client()
                if self._connect():
                    backoff = 0.05
                else:
                    self._expire_outbox()
                    self._stopping.wait(backoff)
                    backoff = min(backoff * 2, self.cfg.reconnect_max_s)
                continue
            self._serve()

    def _new_client(self) -> mqtt.Client:
        gen = self._generation = self._generation + 1
        kwargs = dict(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=self.protocol,
            reconnect_on_failure=False,
        )
        if self.protocol == mqtt.MQTTv311:
            kwargs["clean_session"] = True
        client = mqtt.Client(**kwargs)
        offline = json.dumps(dict(self.status(), state="offline", detail="connection lost"))
        client.will_set(self.topics.status, offline, qos=1, retain=True)
        secure(client, self.cfg)
        # the in-flight window is ours (INFLIGHT): paho's own (it rescans every message on
        # each PUBACK to find queued ones) would cost more than the rest of a publish
        client.max_inflight_messages_set(0)
        client.on_connect = lambda c, u, f, rc, p=None: self._on_connect(gen, rc)
        client.on_disconnect = lambda c, u, f, rc, p=None: self._on_disconnect(gen, rc)
        client.on_publish = lambda c, u, mid, rc=None, p=None: self._on_publish(gen, mid)
        client.on_message = lambda c, u, msg: self._on_message(msg)
        client.on_subscribe = lambda c, u, mid, rcs, p=None: self._suback.set()
        return client

    def _connect(self) -> bool:
        client = self._new_client()
        self._connack = threading.Event()
        self._suback = threading.Event()
        self._lost = threading.Event()  # this connection dropped (ends the pumps below)
        self._connack_rc = None
        try:
            if self.protocol == mqtt.MQTTv5:
                client.connect(self.cfg.host, self.cfg.port, self.cfg.keepalive_s, clean_start=True)
            else:
                client.connect(self.cfg.host, self.cfg.port, self.cfg.keepalive_s)
        except (OSError, ssl.SSLError, ValueError) as exc:
            self._connect_failed(f"cannot reach broker {self.cfg.host}:{self.cfg.port}: {exc}")
            return False
        if not self._io.pump(client, self._connack.is_set, self.cfg.connect_timeout_s, self._lost):
            close_socket(client)
            if self._lost.is_set():
                # accepted by a broker that was going down, or a socket connected to itself
                # (nothing listening on a port in the ephemeral range): retry, don't wait
                self._connect_failed(
                    f"broker {self.cfg.host}:{self.cfg.port} closed the connection before CONNACK"
                )
            else:
                self._connect_failed(f"no CONNACK from {self.cfg.host}:{self.cfg.port}")
            return False
        rc = self._connack_rc
        if rc is None or rc.is_failure:
            close_socket(client)
            self._connect_failed(
                f"broker {self.cfg.host}:{self.cfg.port} refused the connection: {rc}"
            )
            return False
        self._client = client
        subscriptions = [self.topics.trigger] if self.on_trigger is not None else []
        if self.on_command is not None:
            subscriptions.append(self.topics.cmd_model)
        if subscriptions:
            client.subscribe([(t, 1) for t in subscriptions])
            # "online" must mean triggers are being received: wait for the SUBACK
            subscribed = self._io.pump(
                client, self._suback.is_set, self.cfg.connect_timeout_s, self._lost
            )
            if not subscribed and not self._lost.is_set():
                log.warning("no SUBACK for %s", ", ".join(subscriptions))
        if self._lost.is_set():  # (on_disconnect runs on this thread: no race to guard)
            close_socket(client)
            self._client = None
            self._connect_failed(f"broker {self.cfg.host}:{self.cfg.port} dropped the connection")
            return False
        self.connected.set()
        self.metrics.mqtt_connected.set(1)
        if self.last_error:
            self.metrics.reconnects.inc()
            log.info("reconnected to broker %s:%s", self.cfg.host, self.cfg.port)
        else:
            log.info(
                "connected to broker %s:%s (MQTT %s)",
                self.cfg.host,
                self.cfg.port,
                self.cfg.protocol,
            )
        self.last_error = ""
        self._publish_status(client)
        return True

    def _connect_failed(self, why: str) -> None:
        if why != self.last_error:
            log.warning("%s", why)
        self.last_error = why

    def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        close_socket(client)
        with self._lock:  # verdicts without PUBACK go back to the outbox, oldest first
            stale = sorted(self._inflight.values(), key=lambda i: i.verdict.seq, reverse=True)
            self._inflight.clear()
            for item in stale:
                self._outbox.appendleft(item)

    # -- paho callbacks (the mqtt thread, inside loop_read/loop_write/loop_misc) --------------------
    def _on_connect(self, gen: int, rc) -> None:
        if gen == self._generation:
            self._connack_rc = rc
            self._connack.set()

    def _on_disconnect(self, gen: int, rc) -> None:
        if gen != self._generation:
            return
        self._lost.set()
        was_connected = self.connected.is_set()
        self.connected.clear()
        if was_connected and not self._stopping.is_set():
            self.last_error = f"connection lost ({rc})"
            log.warning("broker connection lost (%s)", rc)
        self.metrics.mqtt_connected.set(0)

    def _on_publish(self, gen: int, mid: int) -> None:
        # a verdict is in _inflight before its PUBACK can be read: both happen on this thread
        with self._lock:
            item = self._inflight.pop((gen, mid), None)
        if item is not None:  # (None: a status message)
            self.metrics.published(item.verdict)

    def _on_message(self, msg) -> None:
        if self.on_command is not None and msg.topic == self.topics.cmd_model:
            try:
                self.on_command(msg.payload, self._replier(msg))
            except Exception:  # nor a bad command
                log.exception("command handler failed")
            return
        if self.on_trigger is None:
            return
        try:
            self.on_trigger(msg.payload)
        except Exception:  # a bad trigger must never take down the MQTT thread
            log.exception("trigger handler failed")

    def _replier(self, msg) -> Callable[[dict], None]:
        """How the answer to a request reaches its requester: its response topic, with its
        correlation data (MQTT 5); nowhere without a response topic."""
        props = getattr(msg, "properties", None)
        response_topic = getattr(props, "ResponseTopic", None)
        correlation = getattr(props, "CorrelationData", None)

        def reply(outcome: dict) -> None:
            if not response_topic:
                return
            out = Properties(PacketTypes.PUBLISH)
            if correlation is not None:
                out.CorrelationData = correlation
            self._enqueue(response_topic, json.dumps(outcome).encode(), 1, out)

        return reply

    def send_shadow(self, payload: bytes) -> None:
        self._enqueue(self.topics.shadow, payload, 0, None)

    # -- sending (our thread) ------------------------------------------------------------------
    def _publish_status(self, client: mqtt.Client) -> None:
        with self._lock:
            self._status_dirty = False
        self._last_status = time.monotonic()
        client.publish(self.topics.status, json.dumps(self.status()), qos=1, retain=True)

    def _expiry_props(self, seconds: int) -> Properties:
        props = self._expiry.get(seconds)
        if props is None:
            props = Properties(PacketTypes.PUBLISH)
            props.MessageExpiryInterval = seconds
            if len(self._expiry) < 3600:
                self._expiry[seconds] = props
        return props

    def _expire_outbox(self) -> None:
        now = time.time()
        with self._lock:
            keep = collections.deque(i for i in self._outbox if i.verdict.deadline > now)
            expired = len(self._outbox) - len(keep)
            self._outbox = keep
        for _ in range(expired):
            self.metrics.drop("verdict_expired")
        if expired:
            log.warning("%d verdicts expired in the outbox while the broker was away", expired)

    def _serve(self) -> None:
        """One round while connected: send what may be sent, then wait for the broker (PUBACKs,
        triggers), a wake-up from publish()/status_changed()/stop(), or a timer."""
        client = self._client
        if client is not None:
            self._send(client)
        if client is None or client.socket() is None:  # lost while sending: reconnect
            self.connected.clear()
            return
        with self._lock:
            ready = bool(self._outbox) and len(self._inflight) < INFLIGHT
            busy = ready or bool(self._extra) or self._status_dirty or self._stopping.is_set()
            self._idle = not busy and not self._outbox  # a new verdict could go at once
        self._io.step(client, 0.0 if busy else 0.2)
        with self._lock:
            self._idle = False

    def _send(self, client: mqtt.Client) -> None:
        """Status when due; verdicts from the outbox while the in-flight window has room."""
        with self._lock:
            status_dirty = self._status_dirty
        heartbeat = time.monotonic() - self._last_status >= self.cfg.status_interval_s
        if status_dirty or heartbeat:
            self._publish_status(client)
        with self._lock:
            burst = min(len(self._outbox), INFLIGHT - len(self._inflight))
        with corked(client, burst > 1):
            self._send_verdicts(client)
        while self._extra and self.connected.is_set():  # after the verdicts: never before one
            with self._lock:
                topic, payload, qos, props = self._extra.popleft()
            try:
                client.publish(topic, payload, qos=qos, retain=False, properties=props)
            except (ValueError, RuntimeError) as exc:
                log.warning("could not send a message on %s: %s", topic, exc)

    def _send_verdicts(self, client: mqtt.Client) -> None:
        while self.connected.is_set():
            with self._lock:
                if not self._outbox or len(self._inflight) >= INFLIGHT:
                    break
                item = self._outbox.popleft()
            remaining = item.verdict.deadline - time.time()
            if remaining <= 0:
                self.metrics.drop("verdict_expired")
                log.warning(
                    "verdict for part %r expired before it could be sent (%.0f ms late)",
                    item.verdict.part_id,
                    -remaining * 1000,
                )
                continue
            props = None
            if self.protocol == mqtt.MQTTv5:
                props = self._expiry_props(max(1, math.ceil(remaining)))
            info = client.publish(
                self.topics.verdict, item.payload, qos=1, retain=False, properties=props
            )
            with self._lock:
                if info.rc != mqtt.MQTT_ERR_SUCCESS:
                    self._outbox.appendleft(item)
                    break
                self._inflight[(self._generation, info.mid)] = item


Publisher = MqttLink  # the name the bench and tools know
