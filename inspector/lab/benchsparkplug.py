"""What the Sparkplug B edge node costs the line: ``inspector run`` with and without
``plant.sparkplug``, side by side in one run.

    python -m inspector.lab.benchsparkplug --out docs/bench-sparkplug.json

The station runs as on the line PC: its own process (``inspector run``), the demo model, a
folder of parts in free-run, a real Mosquitto; this process is the reject gate and the
SCADA (it subscribes to the verdicts and to ``spBv1.0/#``). Two loads: flat out (throughput:
verdicts per second of classified parts) and paced at ``--paced-fps`` (the verdict's
end-to-end latency, trigger to verdict, as the station measured it, and trigger to arrival
at the gate). Each load runs ``--reps`` times each way, alternating the order (off-on,
on-off, ...) so drift on a shared machine falls on both; the JSON keeps every run and the
medians. Numbers on a shared 2-core machine are noisy: read the medians and the spread.
``cost_model`` (``python -m inspector.plant.sparkplug.bench``) adds what the node's work costs
operation by operation, in-process, and the share of a core it takes at the measured rate:
figures that hold still where the station-level runs do not.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from .benchstats import cpu_s, median_at, pct, station_yaml
from .broker import Mosquitto
from .demo import prepare

CLASSIFIED = ("ok", "defect", "uncertain")


def _yaml(model: Path, parts: Path, port: int, rate: float, sparkplug: bool) -> str:
    plant = "plant: {sparkplug: {group_id: bench}}\n" if sparkplug else ""
    return station_yaml(model, parts, port, rate, plant)


class Gate:
    """The verdicts (arrival time, payload) and the Sparkplug messages, by type."""

    def __init__(self, port: int) -> None:
        self.verdicts: list[tuple[float, bytes]] = []
        self.sparkplug: dict[str, int] = {}
        self._lock = threading.Lock()
        ready = threading.Event()
        self.c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id="bench-gate", protocol=mqtt.MQTTv5
        )
        self.c.on_message = self._on_message
        self.c.on_subscribe = lambda *a, **k: ready.set()
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        self.c.subscribe([("inspector/bench/verdict", 1), ("spBv1.0/bench/#", 0)])
        if not ready.wait(10):
            raise RuntimeError("the bench's subscriber could not subscribe")

    def _on_message(self, _c, _u, msg) -> None:
        if msg.topic.startswith("spBv1.0/"):
            kind = msg.topic.split("/")[2]
            with self._lock:
                self.sparkplug[kind] = self.sparkplug.get(kind, 0) + 1
            return
        with self._lock:
            self.verdicts.append((time.time(), msg.payload))

    def take(self) -> tuple[list[tuple[float, bytes]], dict[str, int]]:
        with self._lock:
            v, s = self.verdicts, self.sparkplug
            self.verdicts, self.sparkplug = [], {}
        return v, s

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def one_run(cfg: Path, gate: Gate, warmup_s: float, seconds: float) -> dict:
    """``inspector run cfg``; verdicts that arrive in the ``seconds`` after ``warmup_s``."""
    gate.take()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "inspector.cli", "run", str(cfg)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        end = time.monotonic() + 60
        while not gate.verdicts:
            if proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"the station gave no verdict: {proc.stderr.read()[-2000:]!r}")
            time.sleep(0.05)
        time.sleep(warmup_s)
        gate.take()
        cpu0, t0 = cpu_s(proc.pid), time.time()
        time.sleep(seconds)
        cpu1, t1 = cpu_s(proc.pid), time.time()
        verdicts, sparkplug = gate.take()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    e2e, arrival, classified = [], [], 0
    for t, raw in verdicts:
        v = json.loads(raw)
        if v["reason"] in CLASSIFIED:
            classified += 1
        e2e.append(v["latency_ms"]["e2e"])
        arrival.append((t - v["t_trigger"]) * 1000.0)
    if not e2e:
        raise RuntimeError("no verdicts in the measured window")
    return {
        "verdicts": len(e2e),
        "throughput_fps": round(classified / (t1 - t0), 1),
        "e2e_ms": {"p50": pct(e2e, 50), "p99": pct(e2e, 99)},
        "trigger_to_gate_ms": {"p50": pct(arrival, 50), "p99": pct(arrival, 99)},
        # CPU seconds the station's process spent per verdict: less at the mercy of other
        # tenants of a shared machine than the wall-clock throughput
        "station_cpu_us_per_verdict": None
        if cpu0 is None or cpu1 is None
        else round((cpu1 - cpu0) / len(e2e) * 1e6, 1),
        "sparkplug_messages": sparkplug,
    }


def run(
    work: Path, reps: int, seconds: float, warmup_s: float, paced_fps: float, model: Path | None
) -> dict:
    prepare(work / "demo", parts=60)
    parts = work / "demo" / "parts"
    model = model or work / "demo" / "model" / "demo.onnx"
    load_before = os.getloadavg()
    broker = Mosquitto().start()
    gate = Gate(broker.port)
    loads = {"flat_out": 100000.0, "paced": paced_fps}
    out: dict = {"runs": {}}
    try:
        for load, rate in loads.items():
            runs: dict[str, list[dict]] = {"off": [], "on": []}
            for rep in range(reps):
                order = ("off", "on") if rep % 2 == 0 else ("on", "off")
                for mode in order:
                    cfg = work / f"{load}-{mode}.yaml"
                    cfg.write_text(_yaml(model, parts, broker.port, rate, mode == "on"))
                    runs[mode].append(one_run(cfg, gate, warmup_s, seconds))
            out["runs"][load] = runs
    finally:
        gate.close()
        broker.stop()
    flat, paced = out["runs"]["flat_out"], out["runs"]["paced"]
    summary = {}
    for mode in ("off", "on"):
        summary[mode] = {
            "flat_out_throughput_fps_median": median_at(flat[mode], "throughput_fps"),
            "flat_out_e2e_p99_ms_median": median_at(flat[mode], "e2e_ms", "p99"),
            "flat_out_cpu_us_per_verdict_median": median_at(
                flat[mode], "station_cpu_us_per_verdict"
            ),
            "paced_cpu_us_per_verdict_median": median_at(paced[mode], "station_cpu_us_per_verdict"),
            "paced_e2e_p50_ms_median": median_at(paced[mode], "e2e_ms", "p50"),
            "paced_e2e_p99_ms_median": median_at(paced[mode], "e2e_ms", "p99"),
            "paced_trigger_to_gate_p99_ms_median": median_at(
                paced[mode], "trigger_to_gate_ms", "p99"
            ),
        }
    off, on = summary["off"], summary["on"]
    summary["throughput_cost_pct"] = round(
        100.0 * (1 - on["flat_out_throughput_fps_median"] / off["flat_out_throughput_fps_median"]),
        2,
    )
    summary["flat_out_cpu_cost_pct"] = round(
        100.0
        * (
            on["flat_out_cpu_us_per_verdict_median"] / off["flat_out_cpu_us_per_verdict_median"] - 1
        ),
        2,
    )
    summary["paced_e2e_p99_cost_ms"] = round(
        on["paced_e2e_p99_ms_median"] - off["paced_e2e_p99_ms_median"], 3
    )
    summary["paced_trigger_to_gate_p99_cost_ms"] = round(
        on["paced_trigger_to_gate_p99_ms_median"] - off["paced_trigger_to_gate_p99_ms_median"], 3
    )
    summary["goal"] = "throughput cost <= 2 %, verdict p99 cost <= 1 ms"
    out["summary"] = summary
    # the node's work operation by operation, at the flat-out rate measured without it (its
    # own process: the lab does not import the plant's code)
    rate = str(off["flat_out_throughput_fps_median"])
    cost = subprocess.run(
        [sys.executable, "-m", "inspector.plant.sparkplug.bench", "--json", "--rate", rate],
        capture_output=True,
        text=True,
        check=True,
    )
    out["cost_model"] = json.loads(cost.stdout)
    out["setup"] = {
        "reps_each_way": reps,
        "seconds_measured": seconds,
        "warmup_s": warmup_s,
        "paced_fps": paced_fps,
        "model": model.name,
        "sparkplug": "plant.sparkplug defaults (report_interval_s 1.0), group 'bench'",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            # other tenants' load: above the CPU count, the wall-clock figures are mostly noise
            "load_average_1min_before_after": [
                round(load_before[0], 2),
                round(os.getloadavg()[0], 2),
            ],
        },
        "command": "python -m inspector.lab.benchsparkplug",
    }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m inspector.lab.benchsparkplug")
    p.add_argument("--model", type=Path, default=None, help="default: the demo model")
    p.add_argument("--reps", type=int, default=3, help="runs each way, per load")
    p.add_argument("--seconds", type=float, default=8.0, help="measured time of one run")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds after the first verdict")
    p.add_argument("--paced-fps", type=float, default=100.0)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        r = run(Path(tmp), a.reps, a.seconds, a.warmup, a.paced_fps, a.model)
    text = json.dumps(r, indent=2)
    print(json.dumps({**r["summary"], "cost_model": r["cost_model"]}, indent=2))
    if a.out:
        a.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
