"""The bench's reject gate: a subscriber in another process that records when each verdict
arrives, and reads the latencies (end to end, per stage, delivery) out of what it got.

``mosquitto_sub`` (C, from mosquitto-clients) when installed, so the instrument takes
little of the CPU the station is measured on (~14 µs per verdict vs ~120 µs for paho);
else a paho client writing the same lines.

``VerdictSink`` stands in for MQTT altogether (verdicts kept in the station's process, not
serialised or sent): the bench's run of the pipeline alone, to tell its cost from MQTT's.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt

from ..errors import InspectorError


def time_limit(frames: int) -> float:
    """Seconds a run of ``frames`` verdicts may take before the bench gives up on the rest."""
    return max(60.0, frames / 50.0)


def paho_main(host: str, port: int, protocol: str, topic: str, frames: int, out: str) -> None:
    """The bench's 'reject gate' in Python (when mosquitto_sub is not installed): writes one
    line per verdict, arrival time then payload, as ``mosquitto_sub -F '%U %p'`` does."""
    lines: list[bytes] = []
    done = threading.Event()

    def on_message(_c, _u, msg):
        lines.append(b"%.6f %s" % (time.time(), msg.payload))
        if len(lines) >= frames:
            done.set()

    sub = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id="bench-sub",
        protocol=mqtt.MQTTv5 if protocol == "5" else mqtt.MQTTv311,
    )
    sub.on_message = on_message
    sub.on_subscribe = lambda *a: print("subscribed", flush=True)
    sub.connect(host, port)
    sub.subscribe(topic, qos=1)
    sub.loop_start()
    done.wait(time_limit(frames))
    sub.loop_stop()
    Path(out).write_bytes(b"\n".join(lines) + b"\n")


PROBE = b'{"probe":1}'


class VerdictTimer:
    """The bench's 'reject gate', in another process as on a line: it records when each
    verdict arrives. ``mosquitto_sub`` (C, from mosquitto-clients) when installed, so the
    instrument takes little of the CPU the station is measured on; else a paho client."""

    def __init__(self, broker, topic: str, frames: int, work: Path) -> None:
        self.frames, self.topic = frames, topic
        self.out = work / f"sub-{time.monotonic_ns()}.txt"
        self._pos = self._lines = 0
        self._t0 = time.monotonic()
        binary = shutil.which("mosquitto_sub")
        stdbuf = shutil.which("stdbuf")
        self.kind = "mosquitto_sub" if binary and stdbuf else "paho"
        if self.kind == "mosquitto_sub":
            cmd = [stdbuf, "-oL", binary, "-h", broker.host, "-p", str(broker.port)]
            cmd += ["-V", "5" if broker.protocol == "5" else "311", "-q", "1", "-t", topic]
            cmd += ["-F", "%U %p"]  # arrival time (s, ns resolution), then the payload
            self.file = self.out.open("wb")
            self.proc = subprocess.Popen(cmd, stdout=self.file, stderr=subprocess.DEVNULL)
            self._wait_subscribed(broker)
        else:
            code = (
                f"from inspector.lab.benchgate import paho_main; paho_main({broker.host!r}, "
                f"{broker.port}, {broker.protocol!r}, {topic!r}, {frames}, {str(self.out)!r})"
            )
            self.proc = subprocess.Popen(
                [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True
            )
            if self.proc.stdout.readline().strip() != "subscribed":
                raise InspectorError("the benchmark's subscriber did not start")

    def _wait_subscribed(self, broker) -> None:
        """Publish probes until the subscriber prints one: then it is subscribed."""
        probe = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-probe")
        probe.connect(broker.host, broker.port)
        probe.loop_start()
        try:
            end = time.monotonic() + 10.0
            while time.monotonic() < end:
                probe.publish(self.topic, PROBE, qos=1).wait_for_publish(1.0)
                time.sleep(0.05)
                if self.out.stat().st_size:
                    return
            raise InspectorError("the benchmark's subscriber (mosquitto_sub) did not start")
        finally:
            probe.loop_stop()
            probe.disconnect()

    def running(self) -> bool:
        if self.kind == "paho":
            return self.proc.poll() is None  # it exits once it has them all
        if self.proc.poll() is not None:
            return False
        # one line per verdict: count them until all have arrived (or the time is up)
        with self.out.open("rb") as f:
            f.seek(self._pos)
            chunk = f.read()
        self._pos += len(chunk)
        self._lines += chunk.count(b"\n") - chunk.count(PROBE)
        return self._lines < self.frames and not self._late()

    def _late(self) -> bool:
        return time.monotonic() - self._t0 > time_limit(self.frames)

    def result(self) -> dict:
        if self.kind == "mosquitto_sub":
            time.sleep(0.2)  # the last lines
            self.proc.terminate()
            self.proc.wait(5)
            self.file.close()
        return _received(self.out.read_bytes(), self.frames)


STAGES = ("preprocess", "queue", "inference", "decide")


class VerdictSink:
    """The station's publisher replaced by preallocated arrays: trigger -> verdict decided,
    no MQTT. The same ``running``/``result`` as ``VerdictTimer`` (no ``delivery`` stage);
    it allocates nothing per verdict, so the run's memory figures stay the station's."""

    kind = "in-process sink (no MQTT)"
    proc = None

    def __init__(self, frames: int) -> None:
        self.frames = frames
        self.connected = threading.Event()
        self.connected.set()
        self._times = np.full((frames, 1 + len(STAGES)), np.nan)  # e2e, then STAGES (ms)
        self._reasons: dict[str, int] = {}
        self._n = 0
        self._lock = threading.Lock()
        self._t_last = time.time()
        self._t0 = time.monotonic()

    # the part of Publisher's interface the station uses
    def publish(self, verdict) -> None:  # from every classifier worker
        lat = verdict.latency_ms
        with self._lock:
            i = self._n
            if i >= self.frames:
                return
            self._n = i + 1
            self._t_last = time.time()
            reason = verdict.reason.value
            self._reasons[reason] = self._reasons.get(reason, 0) + 1
            row = self._times[i]
            row[0] = lat["e2e"]
            for j, k in enumerate(STAGES, 1):
                if k in lat:
                    row[j] = lat[k]

    def start(self) -> None:
        pass

    def stop(self, timeout: float = 0.0) -> None:
        pass

    def status_changed(self) -> None:
        pass

    def pending(self) -> int:
        return 0

    def running(self) -> bool:
        late = time.monotonic() - self._t0 > time_limit(self.frames)
        return self._n < self.frames and not late

    def result(self) -> dict:
        got = self._times[: self._n]
        stages = {k: [x for x in got[:, j] if x == x] for j, k in enumerate(STAGES, 1)}
        return {
            "latency_ms": got[:, 0].tolist(),
            "t_last": self._t_last,
            "reasons": dict(self._reasons),
            "stages": stages,
        }


def _received(text: bytes, frames: int) -> dict:
    """Latencies from the subscriber's lines (arrival time, verdict JSON), first ``frames``:
    end to end (trigger -> received), each stage from the verdict's ``latency_ms``, and
    delivery (verdict decided -> received: outbox, MQTT, broker, subscriber)."""
    e2e: list[float] = []
    stages: dict[str, list[float]] = {k: [] for k in (*STAGES, "delivery")}
    reasons: dict[str, int] = {}
    t_last = time.time()
    for line in text.splitlines():
        t, _, payload = line.partition(b" ")
        if not payload:
            continue
        v = json.loads(payload)
        if "probe" in v:
            continue
        if len(e2e) >= frames:
            break
        received = float(t)
        reasons[v["reason"]] = reasons.get(v["reason"], 0) + 1
        t_last = received
        e2e.append((received - v["t_trigger"]) * 1000.0)
        for k in STAGES:
            if k in v["latency_ms"]:
                stages[k].append(v["latency_ms"][k])
        stages["delivery"].append((received - v["t_verdict"]) * 1000.0)
    return {"latency_ms": e2e, "t_last": t_last, "reasons": reasons, "stages": stages}
