"""The gate on MQTT: subscribes to the station's triggers, verdicts and status, feeds
``GateCore`` and publishes its events (``PREFIX/gate``); /health and /metrics over HTTP."""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from types import SimpleNamespace

from ..contract.mqtt import new_client
from ..contract.topics import Topics
from ..plant.sparkplug.gatefigures import GateEvent
from .actuators import make_actuator
from .config import GateConfig
from .core import GateCore

log = logging.getLogger(__name__)


class GateService:
    """GateCore on MQTT: subscribes to the station's topics, publishes gate events."""

    def __init__(self, cfg: GateConfig) -> None:
        self.cfg = cfg
        g = cfg.gate
        t = Topics.of(g.station_prefix)
        self.topics = {
            "trigger": t.trigger,
            "verdict": t.verdict,
            "status": t.status,
            "gate": t.gate,
        }
        self.actuator = make_actuator(cfg.actuator)
        self.core = GateCore(g, self.actuator, self._emit)
        self.events: collections.deque[dict] = collections.deque(maxlen=100_000)
        self.connected = threading.Event()
        self.client = new_client(cfg.mqtt, cfg.mqtt.client_id or f"gate-{g.id}")
        self.client.reconnect_delay_set(0.05, max(0.1, cfg.mqtt.reconnect_max_s))
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick_loop, name="gate-tick", daemon=True)
        self._last_tick = 0.0
        self.http = None
        self.sparkplug = None
        if cfg.sparkplug is not None:  # the plant's view of the gate
            from ..plant.sparkplug.gatefigures import GateFigures
            from ..plant.sparkplug.node import SparkplugView

            self.sparkplug = SparkplugView(
                cfg.sparkplug, g.id, cfg.mqtt, figures=GateFigures(self.health)
            )

    def health(self) -> tuple[bool, dict]:
        """Healthy while connected to the broker and deciding (the ticker runs)."""
        ticking = time.monotonic() - self._last_tick < 1.0
        ok = self.connected.is_set() and ticking
        return ok, {
            "broker_connected": self.connected.is_set(),
            "ticking": ticking,
            "in_flight": len(self.core.waiting),
            "station_state": self.core.station_state,
            "reject_output_held": self.core.blind_since is not None,
        }

    def start(self) -> None:
        if self.cfg.http.enabled:
            from prometheus_client import CollectorRegistry

            from ..httpd import HttpEndpoint

            registry = CollectorRegistry()
            registry.register(_GateCollector(self))
            self.http = HttpEndpoint(
                registry,
                self.health,
                self.cfg.http.host,
                self.cfg.http.port,
                setting="http.port",
            )
            self.http.start()
        self.actuator.start()
        self.core.set_connected(False)  # blind until the broker answers
        self.client.connect_async(self.cfg.mqtt.host, self.cfg.mqtt.port, self.cfg.mqtt.keepalive_s)
        self.client.loop_start()
        self._ticker.start()
        if self.sparkplug is not None:
            self.sparkplug.start(SimpleNamespace(status=dict, command=None))

    def stop(self) -> None:
        self._stop.set()
        if self.sparkplug is not None:
            self.sparkplug.stop()
        self._ticker.join(2)
        if self.http is not None:
            self.http.stop()
        self.actuator.stop()
        self.client.loop_stop()
        self.client.disconnect()

    def _on_connect(self, client, _u, _f, rc, _p=None) -> None:
        if rc.is_failure:
            log.error("broker refused the gate: %s", rc)
            return
        subs = [(self.topics[t], 1) for t in ("trigger", "verdict", "status")]
        if self.cfg.gate.encoder_topic:
            subs.append((self.cfg.gate.encoder_topic, 1))
        client.subscribe(subs)
        self.connected.set()
        self.core.set_connected(True)
        log.info("gate %s watching %s/#", self.cfg.gate.id, self.cfg.gate.station_prefix)

    def _on_disconnect(self, *_args) -> None:
        self.connected.clear()
        self.core.set_connected(False)

    def _on_message(self, _c, _u, msg) -> None:
        handler = {
            self.topics["trigger"]: self.core.on_trigger,
            self.topics["verdict"]: self.core.on_verdict,
            self.topics["status"]: self.core.on_status,
        }.get(msg.topic)
        if handler is None and msg.topic == self.cfg.gate.encoder_topic:
            handler = self.core.on_encoder
        if handler is not None:
            try:
                handler(msg.payload)
            except Exception:
                log.exception("gate handler failed on %s", msg.topic)

    def _emit(self, event: dict) -> None:
        self.events.append(event)
        self.client.publish(self.topics["gate"], json.dumps(event), qos=1)
        if self.sparkplug is not None:
            self.sparkplug.verdict(GateEvent(event))

    def _tick_loop(self) -> None:
        while not self._stop.wait(0.005):
            self.core.tick()
            self._last_tick = time.monotonic()


class _GateCollector:
    """Prometheus view of the gate's counters (``inspector_gate_total{what=...}``)."""

    def __init__(self, service: GateService) -> None:
        self.service = service

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        counts = CounterMetricFamily(
            "inspector_gate", "gate decisions and anomalies", labels=["what"]
        )
        with self.service.core.lock:
            items = sorted(self.service.core.counts.items())
            waiting = len(self.service.core.waiting)
        for what, n in items:
            counts.add_metric([what], n)
        yield counts
        yield GaugeMetricFamily(
            "inspector_gate_in_flight", "parts waiting for a decision", value=waiting
        )
        yield GaugeMetricFamily(
            "inspector_gate_connected",
            "1 while connected to the broker",
            value=1 if self.service.connected.is_set() else 0,
        )
