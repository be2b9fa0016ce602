"""Counters and latency histograms, served on ``/metrics`` (``inspector.httpd``).

Every drop and every fail-safe verdict shows up here: nothing is lost silently.
``/health`` answers 200 only while frames flow and the broker is connected, 503
otherwise, with a JSON body that says why.
"""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ..contract.records import Verdict

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class Metrics:
    """The station's metrics, in a registry of its own (several stations can share a process)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.frames = Counter("inspector_frames", "frames captured", registry=r)
        self.frames_unused = Counter(
            "inspector_frames_unused", "frames captured while no trigger was waiting", registry=r
        )
        self.parts = Counter(
            "inspector_parts", "parts registered (triggered or free-run)", registry=r
        )
        self.verdicts = Counter(
            "inspector_verdicts", "verdicts decided", ["result", "reason"], registry=r
        )
        self.verdicts_sent = Counter(
            "inspector_verdicts_published",
            "verdicts acknowledged by the broker",
            ["result"],
            registry=r,
        )
        self.drops = Counter("inspector_drops", "things dropped, by what", ["what"], registry=r)
        self.triggers = Counter("inspector_triggers", "trigger messages", ["outcome"], registry=r)
        self.reconnects = Counter("inspector_mqtt_reconnects", "broker reconnections", registry=r)
        self.source_reopens = Counter(
            "inspector_source_reopens", "source reopened after a loss", registry=r
        )
        self.deadline_misses = Counter(
            "inspector_deadline_misses", "parts whose verdict could not be made in time", registry=r
        )
        self.stage = Histogram(
            "inspector_stage_seconds",
            "time per pipeline stage",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.e2e = Histogram(
            "inspector_e2e_seconds",
            "trigger to verdict handed to MQTT",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "inspector_parts_in_flight", "parts waiting for a verdict", registry=r
        )
        self.outbox = Gauge("inspector_outbox", "verdicts waiting for the broker", registry=r)
        self.mqtt_connected = Gauge("inspector_mqtt_connected", "1 while connected", registry=r)
        self.source_up = Gauge(
            "inspector_source_up", "1 while the source delivers frames", registry=r
        )
        self.quality = Gauge(
            "inspector_quality",
            "image-quality measures (median of the window)",
            ["measure"],
            registry=r,
        )
        self.quality_degraded = Gauge(
            "inspector_quality_degraded", "1 while image quality drifted", registry=r
        )
        self.batch = Histogram(
            "inspector_batch_size",
            "parts per inference batch",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=r,
        )
        # labelled children looked up once: a labels() call costs as much as the update
        self.stages = {
            s: self.stage.labels(stage=s)
            for s in ("preprocess", "queue", "inference", "decide_publish")
        }
        self._children: dict[tuple, object] = {}

    def camera_counters(self, stats) -> None:
        """``inspector_camera{counter}``: a camera source's counters (``stats()``: frames,
        incomplete, lost, resent packets, clock offset …), read when scraped."""
        self.registry.register(_CameraCollector(stats))

    def _child(self, metric, *values: str):
        key = (metric, *values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def drop(self, what: str) -> None:
        self._child(self.drops, what).inc()

    def decided(self, v: Verdict) -> None:
        self._child(self.verdicts, v.result, v.reason.value).inc()

    def published(self, v: Verdict) -> None:
        self._child(self.verdicts_sent, v.result).inc()

    def value(self, name: str, **labels: str) -> float:
        """Current value of a sample, e.g. ``value("inspector_drops_total", what="overflow")``."""
        v = self.registry.get_sample_value(name, labels)
        return 0.0 if v is None else v

    def total(self, name: str) -> float:
        """Sum over all label values of a counter sample such as ``inspector_verdicts_total``."""
        total = 0.0
        for metric in self.registry.collect():
            for s in metric.samples:
                if s.name == name:
                    total += s.value
        return total

    def snapshot(self) -> dict[str, float]:
        """Every counter and gauge sample as ``name{labels}: value`` (for summaries and tests)."""
        out = {}
        for metric in self.registry.collect():
            for s in metric.samples:
                if s.name.endswith(("_created", "_bucket")):
                    continue
                labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
                out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
        return out


class _CameraCollector:
    """The numeric counters of a camera source's ``stats()`` as one gauge family."""

    def __init__(self, stats) -> None:
        self.stats = stats

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        family = GaugeMetricFamily(
            "inspector_camera", "camera source counters and state", labels=["counter"]
        )
        try:
            values = self.stats()
        except Exception:  # a camera going away mid-scrape: no figures this time
            values = {}
        for key, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                family.add_metric([key], float(value))
        yield family
