"""``inspector spc --config spc.yaml``: store, ingest, monitor and alarms wired together, with
Prometheus gauges on ``/metrics`` and ``/health``."""

from __future__ import annotations

import json
import logging
import threading
import time

from prometheus_client import CollectorRegistry, Gauge

from ..httpd import HttpEndpoint
from .alarms import AlarmBoard
from .config import SpcConfig
from .ingest import Ingest, backfill
from .monitor import Monitor, Transition
from .store import Store

log = logging.getLogger(__name__)


class SpcMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        labels = ["station", "chart"]
        self.rate = Gauge("spc_rate", "rate of the last closed subgroup", labels, registry=r)
        self.center = Gauge("spc_center", "baseline rate (centre line)", labels, registry=r)
        self.upper = Gauge("spc_upper_limit", "upper control limit", labels, registry=r)
        self.ewma = Gauge("spc_ewma", "EWMA of the standardised rate", labels, registry=r)
        self.cusum = Gauge("spc_cusum", "upper CUSUM of the standardised rate", labels, registry=r)
        self.alarms = Gauge("spc_alarms_active", "alarms active now", registry=r)
        self.writable = Gauge("spc_store_writable", "1 while the store takes writes", registry=r)
        self.unstored = Gauge(
            "spc_unstored_messages",
            "messages received, not yet stored nor acknowledged",
            registry=r,
        )
        self.dead = Gauge(
            "spc_dead_letters", "messages kept as dead letters since start", ["why"], registry=r
        )
        self.failures = Gauge(
            "spc_store_write_failures", "failed write transactions since start", registry=r
        )
        self.late = Gauge(
            "spc_late_verdicts",
            "verdicts that arrived after newer ones had filled their subgroup, since start",
            registry=r,
        )
        self.held = Gauge(
            "spc_held_parts",
            "parts the plant held (reason halted): rejected uninspected, on no chart, since start",
            registry=r,
        )
        self.set_aside = Gauge(
            "spc_set_aside_messages",
            "messages left unacknowledged for the broker to re-deliver (more than the service "
            "holds), since start",
            registry=r,
        )

    def update(self, monitor: Monitor, ingest: Ingest | None) -> None:
        for st in list(monitor.stations.values()):
            for chart, v in list(st.last.items()):
                self.rate.labels(st.station, chart).set(v["rate"])
                self.center.labels(st.station, chart).set(v["center"])
                self.upper.labels(st.station, chart).set(v["upper"])
                if "ewma" in v:
                    self.ewma.labels(st.station, chart).set(v["ewma"])
                    self.cusum.labels(st.station, chart).set(v["cusum"])
        self.alarms.set(len(monitor.active()))
        self.late.set(monitor.late())
        self.held.set(monitor.held())
        if ingest is not None:
            c = ingest.counts
            self.writable.set(1 if ingest.writable else 0)
            self.unstored.set(ingest.unstored())
            self.dead.labels("unreadable").set(c.malformed)
            self.dead.labels("refused").set(c.refused)
            self.failures.set(c.write_failures)
            self.set_aside.set(c.set_aside)


class SpcService:
    def __init__(self, cfg: SpcConfig) -> None:
        self.cfg = cfg
        self.store = Store(cfg.store.url, busy_timeout_s=cfg.store.busy_timeout_s)
        self.metrics = SpcMetrics()
        self._publishing = False
        self.board = AlarmBoard(self.store, self._publish_alarms, cfg.alarms.context_window_s)
        self.monitor = Monitor(cfg.charts, self._on_transition)
        s = cfg.subscribe
        self.ingest = Ingest(
            self.store,
            cfg.mqtt,
            s.verdicts,
            s.gate_events,
            s.context,
            self.monitor.add,
            session_expiry_s=s.session_expiry_s,
            batch=cfg.store.batch,
            max_unacked=s.max_unacked,
            retry_max_s=cfg.store.retry_max_s,
            on_store=self._on_store,
        )
        self.http = (
            HttpEndpoint(self.metrics.registry, self.health, cfg.http.host, cfg.http.port)
            if cfg.http.enabled
            else None
        )
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick_loop, name="spc-tick", daemon=True)

    def _on_transition(self, t: Transition) -> None:
        self.board.on_transition(t)

    def _on_store(self, ok: bool) -> None:
        """The retained message says whether the store takes writes (``store``)."""
        self.board.store_error = None if ok else self.ingest.store_error
        if ok:
            self.board.keep_waiting()
        self.board.publish()

    def _publish_alarms(self, payload: bytes) -> None:
        if self._publishing:
            self.ingest.client.publish(self.cfg.alarm_topic, payload, qos=1, retain=True)

    def _publish_charts(self) -> None:
        """Each station's reject chart, retained, when a subgroup closed (the dashboard)."""
        if not self._publishing:
            return
        for station, chart in self.monitor.reject_charts().items():
            payload = json.dumps(chart, separators=(",", ":"))
            self.ingest.client.publish(self.cfg.chart_topic(station), payload, qos=1, retain=True)

    def prime(self) -> None:
        """Backfill from recordings, then replay each station's recent verdicts into the charts."""
        for b in self.cfg.backfill:
            new, bad = backfill(self.store, b.station, b.path)
            log.info(
                "backfill %s from %s: %d new verdicts, %d unreadable",
                b.station,
                b.path,
                len(new),
                bad,
            )
        c = self.cfg.charts
        keep = (c.history + c.baseline_subgroups) * c.subgroup_parts
        for station in self.store.stations():
            if c.subgroup_window_s:
                t0 = time.time() - (c.history + c.baseline_subgroups) * c.subgroup_window_s
                rows = [r for r in self.store.recent(station, 10**7) if r.t_verdict >= t0]
            else:
                rows = self.store.recent(station, keep)
            self.monitor.add(rows)
        self.monitor.flush()  # the replay is complete: nothing older is coming

    def start(self) -> None:
        self.prime()
        self._publishing = True
        self.ingest.start()
        self.ingest.connected.wait(self.cfg.mqtt.connect_timeout_s)
        self.board.publish()  # the state after priming, retained
        self._publish_charts()
        self._ticker.start()
        if self.http:
            self.http.start()

    def stop(self) -> None:
        self._stop.set()
        self.ingest.stop()
        if self.http:
            self.http.stop()
        self.store.close()

    def _tick_loop(self) -> None:
        next_prune = 0.0
        while not self._stop.wait(1.0):
            self.monitor.tick(time.time())
            self.metrics.update(self.monitor, self.ingest)
            self._publish_charts()
            if time.monotonic() >= next_prune:
                next_prune = time.monotonic() + 3600
                try:
                    n = self.store.prune(self.cfg.store.retention_days * 86400)
                except Exception as exc:  # noqa: BLE001 (the store is away: the writer says so)
                    log.warning("retention postponed by a minute: %s", exc)
                    next_prune = time.monotonic() + 60
                    continue
                if n:
                    log.info("retention: deleted %d rows", n)

    def health(self) -> tuple[bool, dict]:
        """Healthy while subscribed and the store takes writes."""
        ing = self.ingest
        c = ing.counts
        connected = ing.connected.is_set()
        error = ing.store_error
        store = "ok"
        if error is not None:
            since = time.strftime("%H:%M:%S", time.localtime(ing.failing_since or time.time()))
            store = f"cannot write since {since} ({error}); retrying"
        return connected and error is None, {
            "broker": "connected" if connected else "disconnected",
            "store": store,
            "unstored": ing.unstored(),
            "verdicts": c.verdicts,
            "duplicates": c.duplicates,
            "malformed": c.malformed,
            "refused": c.refused,
            "write_failures": c.write_failures,
            "alarms": len(self.monitor.active()),
        }
