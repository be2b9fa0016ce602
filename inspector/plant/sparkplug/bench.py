"""What the edge node's work costs, operation by operation, in-process (no broker):

    python -m inspector.plant.sparkplug.bench [--rate 2000] [--json]

- the station's side: ``view.verdict(v)`` and ``view.status(s)`` (a deque append each), on
  the classifier worker that made the verdict;
- the node's thread: taking one verdict into the figures, and one report (every figure,
  the changes, the protobuf payload of a whole DBIRTH);
- from those, the node thread's share of one core at ``--rate`` verdicts per second.

The station-level comparison (``inspector run`` with and without ``plant.sparkplug``) is
``python -m inspector.lab.benchsparkplug``, which includes these figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from ...contract.mqtt import MqttSection
from ...contract.records import Reason, Verdict
from .config import SparkplugSection
from .figures import Figures
from .node import SparkplugView
from .payload import encode


def _verdict(i: int) -> Verdict:
    now = time.time()
    return Verdict(
        part_id=f"P-{i}",
        seq=i,
        result="pass",
        reason=Reason.OK,
        label="good",
        scores={"good": 0.9, "defect": 0.1},
        thresholds={"defect": 0.5},
        model_id="demo@0123456789ab",
        t_trigger=now,
        t_capture=now,
        t_verdict=now,
        deadline=now + 1,
        deadline_mono=time.monotonic() + 1,
        latency_ms={"e2e": 5.0 + i % 10},
    )


STATUS = {
    "state": "online",
    "model_id": "demo@0123456789ab",
    "anomaly_model_id": None,
    "model": {"path": "/models/demo.onnx", "shadow": None, "last_change": None},
    "camera": "ok",
    "detail": "",
    "quality": {"problems": [], "measures": {"focus": 120.0, "mean": 101.5}},
}


def _per_call_us(fn, n: int, repeat: int = 5) -> float:
    """The median over ``repeat`` rounds of ``n`` calls, in microseconds per call."""
    rounds = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        rounds.append((time.perf_counter() - t0) / n * 1e6)
    return round(statistics.median(rounds), 3)


def measure(rate: float = 2000.0, window: int = 1000, interval_s: float = 1.0) -> dict:
    view = SparkplugView(SparkplugSection(group_id="bench"), "bench", MqttSection())
    v = _verdict(1)
    limit = 200_000

    def station_side() -> None:
        view.verdict(v)
        if len(view._inbox) >= limit:  # an unstarted view: nobody drains it
            view._inbox.clear()

    figures = Figures(window, 0.5, 0.02)
    figures.status = dict(STATUS)
    for i in range(window):
        figures.verdict(_verdict(i))
    sent = figures.metrics()

    def report() -> None:
        now = figures.metrics()
        encode(figures.changed(now, sent), 3)

    def birth() -> None:
        encode(figures.metrics(), 1)

    out = {
        "station_thread_us_per_verdict": _per_call_us(station_side, 100_000),
        "station_thread_us_per_status": _per_call_us(lambda: view.status(STATUS), 10_000),
        "node_thread_us_per_verdict": _per_call_us(lambda: figures.verdict(v), 20_000),
        "node_thread_us_per_report": _per_call_us(report, 500),
        "node_thread_us_per_birth": _per_call_us(birth, 500),
        "rate_fps": rate,
        "report_interval_s": interval_s,
    }
    busy_us = rate * out["node_thread_us_per_verdict"] + out["node_thread_us_per_report"] / (
        interval_s
    )
    out["node_thread_core_share_pct"] = round(busy_us / 1e4, 3)
    out["station_threads_core_share_pct"] = round(
        rate * out["station_thread_us_per_verdict"] / 1e4, 4
    )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m inspector.plant.sparkplug.bench")
    p.add_argument("--rate", type=float, default=2000.0, help="verdicts per second to cost")
    p.add_argument("--json", action="store_true", help="one JSON object on standard output")
    a = p.parse_args(argv)
    r = measure(a.rate)
    if a.json:
        print(json.dumps(r))
    else:
        for k, value in r.items():
            print(f"{k:34} {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
