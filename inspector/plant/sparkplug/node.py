"""The Sparkplug B edge node: a ``LineView`` that speaks Sparkplug B 3.0 to the plant's SCADA.

One thread owns everything: its own paho client (client id ``inspector-spb-STATION``; the
MQTT will is the NDEATH), the session (bdSeq, seq), the figures and the commands. The
station hands it verdicts and status payloads through a bounded deque (``verdict`` and
``status`` never block and never take a lock); the thread drains it every tick and sends
what changed at most every ``report_interval_s``.

Session (spec 3.0, chapter 5): CONNECT with clean start and the NDEATH will (QoS 1, not
retained, metric ``bdSeq`` Int64, one more than the last CONNECT's, 0-255, also across
restarts: ``bdseq.py`` keeps it in a file); subscribe NCMD and DCMD (QoS 1), and the
primary host's STATE when configured; once subscribed (and the
host is online) NBIRTH (seq 0, every node metric, ``bdSeq``, ``Node Control/Rebirth``) and
DBIRTH (seq 1, every device metric); then NDATA/DDATA, seq +1 mod 256. A rebirth request
starts again at NBIRTH with the same bdSeq. A clean stop sends DDEATH and NDEATH, then
DISCONNECT. An offline STATE from the primary host (timestamp not older than the last one)
ends the session the same way and starts the next. The broker gone: reconnect with backoff.

Commands: NCMD ``Node Control/Rebirth`` = true; DCMD ``Commands/Reset Counters`` = true
and ``Commands/Promote Model`` = PATH, or a model id NAME@DIGEST of a file beside the live
model (the station's one promotion path: ``handlers.command({"action": "promote", "path":
PATH})``). Anything else is refused and
logged, and so is a payload that is not Sparkplug B; ``Commands/Last Result`` says what
happened.

Why one module: connecting, births, data, deaths, commands and the host's STATE all read and
change one session's state (bdSeq, seq, born, the client) on one thread; split, each part
would reach into the others'. The figures (``figures.py``) and payloads (``payload.py``) are
apart.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import threading
import time
from dataclasses import replace
from typing import Any

import paho.mqtt.client as mqtt

from ... import __version__
from ...contract.mqtt import MqttSection, new_client
from ...contract.records import Verdict
from ..recipes import RecipeFolder, by_model_id
from .bdseq import BdSeqStore, default_path
from .config import SparkplugSection
from .figures import PROMOTE, RESET, Figures, Metrics
from .payload import BOOLEAN, INT64, STRING, UINT64, BadPayload, Topics, decode_command, encode

log = logging.getLogger(__name__)

REBIRTH = "Node Control/Rebirth"
DROPPED = "Node Info/Dropped Events"
TICK_S = 0.05  # the thread's longest sleep: commands and replies wait at most this long
DRAIN_CHUNK = 64  # verdicts handled between two offers of the GIL to the station
STOP_WAIT_S = 2.0  # for the NDEATH's PUBACK on a clean stop


class SparkplugView:
    """``plant.sparkplug``: the station as a Sparkplug B edge node with one device."""

    def __init__(
        self, section: SparkplugSection, station_id: str, mqtt_cfg: MqttSection, figures=None
    ) -> None:
        self.section = section
        self.station_id = station_id
        node = section.edge_node_id or station_id
        self.topics = Topics(section.group_id, node, section.device_id)
        self.mqtt = _login(mqtt_cfg, section)
        self.client_id = section.client_id or f"inspector-spb-{station_id}"
        self.interval = section.report_interval_s
        self.tick = min(TICK_S, self.interval)
        # a station's figures, or another process's (the gate's: gatefigures.GateFigures)
        self.figures = figures or Figures(
            section.latency_window, section.deadband_latency_ms, section.deadband_quality
        )
        self.handlers = None
        self.connected = threading.Event()  # MQTT session up
        self.born = threading.Event()  # NBIRTH and DBIRTH sent in this session
        self.bdseq_store = BdSeqStore(section.state_file or default_path(section.group_id, node))
        self.bdseq = -1  # the will's bdSeq of the current (or last) CONNECT; kept across restarts
        self.seq = 0
        self.dropped = 0
        self._inbox: collections.deque = collections.deque()
        self._limit = section.queue_size
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sparkplug", daemon=True)
        self._client: mqtt.Client | None = None
        self._sub_mid: int | None = None
        self._host_online = section.primary_host_id is None
        self._host_ts = -1  # the newest STATE timestamp seen (ms)
        self._sent_device: Metrics = {}
        self._sent_node: Metrics = {}
        self._next_report = 0.0
        self._backoff = 0.1
        self._next_attempt = 0.0
        self._rebirth = False
        self._recipes = RecipeFolder(None)  # the live model's folder: ids to files
        self._leave = False  # the primary host went offline: end this session
        self._connect_deadline = 0.0
        self._unreachable = False  # said once that the broker cannot be reached

    # -- LineView ------------------------------------------------------------------------------
    def start(self, handlers) -> None:
        self.handlers = handlers
        self.bdseq = self.bdseq_store.load()  # the next CONNECT says one more
        try:
            self.figures.status = dict(handlers.status())
        except Exception:  # the station's own status must not keep the view from starting
            log.exception("sparkplug: no first status")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(STOP_WAIT_S + 3.0)

    def verdict(self, verdict: Verdict) -> None:
        if len(self._inbox) < self._limit:
            self._inbox.append(verdict)
        else:
            self.dropped += 1

    def status(self, payload: dict) -> None:
        if len(self._inbox) < self._limit:
            self._inbox.append(payload)
        else:
            self.dropped += 1

    # -- the node's thread ---------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._step()
            except Exception:  # a bug must not end the plant's view for good
                log.exception("sparkplug: edge node step failed; starting a new session")
                self._drop_session()
                time.sleep(self.tick)
        self._goodbye()

    def _step(self) -> None:
        c = self._client
        if c is None:
            if time.monotonic() >= self._next_attempt:
                self._connect()
            else:
                time.sleep(self.tick)
        else:
            rc = c.loop(timeout=self.tick)
            if rc != mqtt.MQTT_ERR_SUCCESS and self._client is c:
                log.warning("sparkplug: connection to %s lost (%s)", self._where(), rc)
                self._drop_session()
            elif not self.connected.is_set() and time.monotonic() > self._connect_deadline:
                log.warning("sparkplug: no CONNACK from %s in time", self._where())
                self._drop_session()
        if self._leave:
            self._leave = False
            c, self._client = self._client, None
            if c is not None:
                self._end_session(c)
            self._drop_session()
            self._next_attempt = 0.0  # reconnect at once, then wait for the host again
        self._drain()
        if self._rebirth and self.born.is_set():
            self._birth()
        if self.born.is_set() and time.monotonic() >= self._next_report:
            self._report()

    def _drain(self) -> None:
        inbox, figures = self._inbox, self.figures
        n = 0
        while inbox:
            n += 1
            if n % DRAIN_CHUNK == 0:
                time.sleep(0)  # let the station's threads have the GIL between chunks
            item = inbox.popleft()
            if isinstance(item, dict):
                figures.status = item
            elif isinstance(item, tuple):  # (label, outcome) of a model request
                label, outcome = item
                figures.last_result = _outcome_text(label, outcome)
                log.info("sparkplug: %s", figures.last_result)
            else:  # a station's verdict, a gate's event
                figures.verdict(item)

    # -- session -------------------------------------------------------------------------------
    def _where(self) -> str:
        return f"{self.mqtt.host}:{self.mqtt.port}"

    def _connect(self) -> None:
        self.bdseq = (self.bdseq + 1) % 256
        c = new_client(self.mqtt, self.client_id)
        c.on_connect = self._on_connect
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        will = encode({"bdSeq": (INT64, self.bdseq)}, seq=None)
        c.will_set(self.topics.node_topic("NDEATH"), will, qos=1, retain=False)
        kwargs: dict[str, Any] = {"keepalive": self.mqtt.keepalive_s}
        if self.mqtt.protocol == "5":
            kwargs["clean_start"] = True  # and no session expiry: the spec's non-persistent
        try:
            c.connect(self.mqtt.host, self.mqtt.port, **kwargs)
        except (OSError, ValueError) as exc:
            level = logging.DEBUG if self._unreachable else logging.WARNING  # once per outage
            log.log(level, "sparkplug: cannot reach broker %s: %s", self._where(), exc)
            self._unreachable = True
            self.bdseq = (self.bdseq - 1) % 256  # no CONNECT went out: the number is unused
            self._retry_later()
            return
        self.bdseq_store.save(self.bdseq)  # the CONNECT went out with it
        self._client = c
        self._unreachable = False
        self._connect_deadline = time.monotonic() + self.mqtt.connect_timeout_s

    def _retry_later(self) -> None:
        self._next_attempt = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, self.mqtt.reconnect_max_s)

    def _drop_session(self) -> None:
        c, self._client = self._client, None
        self.connected.clear()
        self.born.clear()
        self._sub_mid = None
        self._host_online = self.section.primary_host_id is None
        if c is not None:  # closed without DISCONNECT: the broker sends the will (NDEATH)
            with contextlib.suppress(Exception):
                sock = c.socket()
                if sock is not None:
                    sock.close()
        self._retry_later()

    def _on_connect(self, c, _u, _flags, reason, _props=None) -> None:
        if reason.is_failure:
            log.error("sparkplug: broker %s refused the edge node: %s", self._where(), reason)
            self._drop_session()
            return
        self.connected.set()
        self._backoff = 0.1
        subs = [(self.topics.node_topic("NCMD"), 1), (self.topics.device_topic("DCMD"), 1)]
        if self.section.primary_host_id:
            subs.append((Topics.state(self.section.primary_host_id), 1))
        _, self._sub_mid = c.subscribe(subs)
        log.info(
            "sparkplug: edge node %s/%s connected to %s (bdSeq %d)",
            self.topics.group,
            self.topics.node,
            self._where(),
            self.bdseq,
        )

    def _on_subscribe(self, _c, _u, mid, reason_codes, _props=None) -> None:
        if mid != self._sub_mid:
            return
        refused = [r for r in reason_codes if getattr(r, "is_failure", False)]
        if refused:  # the ACL: without NCMD/DCMD the node is a view only, still useful
            log.warning("sparkplug: the broker refused some subscriptions: %s", refused)
        self._sub_mid = -1  # subscribed
        if self._host_online:
            self._birth()

    def _birth(self) -> None:
        """NBIRTH (seq 0) and DBIRTH (seq 1): every metric, its datatype and value."""
        c = self._client
        if c is None or self._sub_mid != -1 or not self._host_online:
            return
        self._rebirth = False
        self._drain()
        self.seq = 0
        node = self._node_metrics()
        self._publish(self.topics.node_topic("NBIRTH"), node)
        device = self.figures.metrics()
        self._publish(self.topics.device_topic("DBIRTH"), device)
        self._sent_node, self._sent_device = node, device
        self._next_report = time.monotonic() + self.interval
        self.born.set()
        log.info("sparkplug: NBIRTH and DBIRTH sent (bdSeq %d)", self.bdseq)

    def _node_metrics(self) -> Metrics:
        return {
            "bdSeq": (INT64, self.bdseq),
            REBIRTH: (BOOLEAN, False),
            "Node Info/Station": (STRING, self.station_id),
            "Node Info/Software Version": (STRING, __version__),
            DROPPED: (UINT64, self.dropped),
        }

    def _publish(self, topic: str, metrics: Metrics) -> None:
        payload = encode(metrics, self.seq)
        self.seq = (self.seq + 1) % 256
        self._client.publish(topic, payload, qos=0, retain=False)

    def _report(self) -> None:
        """NDATA/DDATA with what changed since the host last heard; a metric the DBIRTH did
        not name (a quality figure that appeared) needs a new birth instead."""
        self._next_report = time.monotonic() + self.interval
        now = self.figures.metrics()
        if now.keys() != self._sent_device.keys():
            self._birth()
            return
        device = self.figures.changed(now, self._sent_device)
        if device:
            self._publish(self.topics.device_topic("DDATA"), device)
            self._sent_device = {**self._sent_device, **device}
        if self.dropped != self._sent_node[DROPPED][1]:
            node = {DROPPED: (UINT64, self.dropped)}
            self._publish(self.topics.node_topic("NDATA"), node)
            self._sent_node = {**self._sent_node, **node}

    def _goodbye(self) -> None:
        """A clean stop: what changed last, DDEATH, NDEATH (QoS 1, acknowledged), DISCONNECT."""
        c = self._client
        if c is None:
            return
        self._drain()
        if self.born.is_set():
            self._report()
            self._publish(self.topics.device_topic("DDEATH"), {})
        self._end_session(c)
        self._client = None
        self.connected.clear()
        self.born.clear()

    def _end_session(self, c: mqtt.Client) -> None:
        death = encode({"bdSeq": (INT64, self.bdseq)}, seq=None)
        info = c.publish(self.topics.node_topic("NDEATH"), death, qos=1, retain=False)
        end = time.monotonic() + STOP_WAIT_S
        while not info.is_published() and time.monotonic() < end:
            if c.loop(timeout=0.05) != mqtt.MQTT_ERR_SUCCESS:
                break
        c.disconnect()
        c.loop(timeout=0.05)

    # -- what arrives (on the node's thread, inside loop()) -------------------------------------
    def _on_message(self, _c, _u, msg) -> None:
        try:
            if msg.topic == self.topics.node_topic("NCMD"):
                self._node_command(msg.payload)
            elif msg.topic == self.topics.device_topic("DCMD"):
                self._device_command(msg.payload)
            elif self.section.primary_host_id and msg.topic == Topics.state(
                self.section.primary_host_id
            ):
                self._host_state(msg.payload)
        except Exception:  # a hostile message must not end the session
            log.exception("sparkplug: message on %s ignored", msg.topic)

    def _node_command(self, raw: bytes) -> None:
        try:
            metrics = decode_command(raw)
        except BadPayload as exc:
            log.warning("sparkplug: NCMD ignored: %s", exc)
            return
        for m in metrics:
            if m.name == REBIRTH and m.datatype == BOOLEAN and m.value is True:
                log.info("sparkplug: rebirth requested")
                self._rebirth = True
            else:
                log.warning("sparkplug: NCMD metric %r refused (only %s = true)", m.name, REBIRTH)

    def _device_command(self, raw: bytes) -> None:
        try:
            metrics = decode_command(raw)
        except BadPayload as exc:
            log.warning("sparkplug: DCMD ignored: %s", exc)
            self.figures.last_result = f"refused: {exc}"
            return
        for m in metrics:
            want = self.figures.writable.get(m.name)
            if want is None or m.datatype != want:
                why = "not writable" if want is None else "wrong datatype"
                log.warning("sparkplug: DCMD metric %r refused (%s)", m.name, why)
                self.figures.last_result = f"refused: {m.name or '(no name)'} is {why}"
            elif m.name == RESET and m.value is True:
                self.figures.reset()
                self.figures.last_result = "counters reset"
                log.warning("sparkplug: counters reset by DCMD")
            elif m.name == PROMOTE and isinstance(m.value, str) and m.value.strip():
                self._promote(m.value.strip())
            else:
                self.figures.last_result = f"refused: {m.name} = {m.value!r} does nothing"
                log.warning("sparkplug: DCMD %s = %r ignored", m.name, m.value)

    def _promote(self, path: str) -> None:
        if "@" in path and "/" not in path:  # a model id: the file beside the live model
            live = (self.figures.status.get("model") or {}).get("path")
            found = by_model_id(self._recipes.scan(live), path)
            if len(found) != 1:
                where = self._recipes.folder(live) or "(no live model)"
                why = "no model file" if not found else f"{len(found)} model files"
                self.figures.last_result = f"refused: {why} in {where} with id {path}"
                log.warning("sparkplug: promote %s refused: %s in %s", path, why, where)
                return
            path = str(found[0].path)
        command = getattr(self.handlers, "command", None)
        if command is None:
            self.figures.last_result = "refused: this station takes no model requests"
            log.warning("sparkplug: promote %s refused: the station takes no model requests", path)
            return
        log.warning("sparkplug: promote %s requested by DCMD", path)
        self.figures.last_result = f"promote {path}: requested"
        label = f"promote {path}"

        def reply(outcome: dict) -> None:  # on the station's models thread
            self._inbox.append((label, outcome))

        command(json.dumps({"action": "promote", "path": path}).encode(), reply)

    def _host_state(self, raw: bytes) -> None:
        try:
            state = json.loads(raw)
            online, ts = state["online"], state["timestamp"]
            if not isinstance(online, bool) or not isinstance(ts, (int, float)):
                raise ValueError("online must be a boolean and timestamp a number")
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("sparkplug: STATE of %s ignored: %s", self.section.primary_host_id, exc)
            return
        if ts < self._host_ts:
            log.info("sparkplug: an older STATE of the primary host ignored")
            return
        self._host_ts = ts
        if online and not self._host_online:
            log.info("sparkplug: primary host %s online", self.section.primary_host_id)
            self._host_online = True
            self._birth()
        elif not online and self._host_online:
            log.warning(
                "sparkplug: primary host %s offline: NDEATH, and a new session",
                self.section.primary_host_id,
            )
            self._host_online = False
            self._leave = True  # after this callback: paho's loop can't run inside it


def _login(cfg: MqttSection, s: SparkplugSection) -> MqttSection:
    """The station's broker settings, with the node's own user when it has one."""
    if not s.own_login:
        return cfg
    return replace(
        cfg,
        username=s.username,
        password=s.password,
        password_env=s.password_env,
        password_file=s.password_file,
    )


def _outcome_text(label: str, outcome: dict) -> str:
    text = f"{label}: {outcome.get('outcome', '?')}"
    if outcome.get("reason"):
        text += f" ({outcome['reason']})"
    elif outcome.get("model_id"):
        text += f" ({outcome['model_id']})"
    return text
