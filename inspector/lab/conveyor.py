"""The simulated line's sensor/PLC and camera, in a process of their own.

On a real line the PLC and the camera are devices: nothing the inspection PC does can pause
them. In the simulator they were threads of the simulating process, so whatever paused that
process (a full garbage collection of a large heap, other busy threads of a test run) paused
them too: a trigger stamped before the pause reached the station stale, a frame was exposed
late, and the station rightly failed the part with ``timeout``, for a fault of the
simulator's. Here they run in a small process of their own (``python -m
inspector.lab.conveyor SCHEDULE``), fed a schedule the simulator computes up front: for every
part, its id, its image and file name, the hostile payloads sent after its trigger, and
whether the camera exposes it (``source-loss`` takes the camera away for a window). The
simulator keeps the faults, the model swaps, the gate and the observer.

The two talk over the child's stdin and stdout, one line at a time::

    child  -> ready               (connected to the broker)
    parent -> start <epoch s>     (part k is triggered at start + k x period)
    child  -> {"triggers": [[k, part_id, ts], ...]}   (after the last exposure)
    parent -> stop                (after the scorecard; the PLC keeps republishing
                                   unacknowledged triggers until then)

``ConveyorProcess`` is the simulator's side of it. Importing this module loads paho-mqtt
and the standard library only, so the process starts in a fraction of a second and its heap
stays small.
"""

from __future__ import annotations

import json
import os
import queue
import select
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from ..errors import InspectorError


class Plc:
    """The sensor/PLC that publishes triggers. It keeps every trigger until the broker has
    acknowledged it and publishes the unacknowledged ones again after a reconnect (the
    gate and the inspector treat a repeated part id as the same part)."""

    def __init__(self, host: str, port: int) -> None:
        self.unacked: dict[int, tuple[str, bytes]] = {}
        self.lock = threading.Lock()
        self.was_connected = False
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id="sim-plc", protocol=mqtt.MQTTv5
        )
        self.client.reconnect_delay_set(0.05, 0.25)
        self.client.on_publish = self._on_publish
        self.client.on_connect = self._on_connect
        self.client.connect(host, port)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes, track: bool = True) -> None:
        info = self.client.publish(topic, payload, qos=1)
        if track:
            with self.lock:
                self.unacked[info.mid] = (topic, payload)

    def _on_publish(self, _c, _u, mid, _rc=None, _p=None) -> None:
        with self.lock:
            self.unacked.pop(mid, None)

    def _on_connect(self, _c, _u, _f, rc, _p=None) -> None:
        if self.was_connected and not rc.is_failure:
            with self.lock:
                again, self.unacked = list(self.unacked.values()), {}
            for topic, payload in again:
                threading.Thread(target=self.publish, args=(topic, payload), daemon=True).start()
        self.was_connected = True

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class Camera:
    """A triggered camera: exposes each part at its time, in order, and stamps the image with
    that time (the file's mtime), as industrial cameras timestamp frames in hardware."""

    def __init__(self) -> None:
        self.queue: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._run, name="sim-camera", daemon=True)
        self.thread.start()

    def expose(self, src: Path, dst: Path, at: float) -> None:
        self.queue.put((src, dst, at))

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join(5)

    def _run(self) -> None:
        while (job := self.queue.get()) is not None:
            src, dst, at = job
            time.sleep(max(0.0, at - time.time()))
            tmp = dst.with_suffix(".tmp")
            try:  # atomically, so the inspector never reads half a file
                shutil.copyfile(src, tmp)
                os.utime(tmp, (at, at))
                os.replace(tmp, dst)
            except OSError:
                pass  # the camera is unplugged: no image


def run(schedule: dict, start_at: float, plc: Plc) -> list[list]:
    """Trigger and expose every part of ``schedule`` on time; returns ``[k, part_id, ts]``
    per trigger (``ts``: the time in its payload, the part's key in the scorecard)."""
    period, prefix = schedule["period_s"], schedule["prefix"]
    camera, delay = Path(schedule["camera"]), schedule["camera_delay_s"]
    deadline_s = schedule["deadline_ms"] / 1000.0
    cam = Camera()
    sent = []
    try:
        for k, part in enumerate(schedule["parts"]):
            time.sleep(max(0.0, start_at + k * period - time.time()))
            now = time.time()
            payload = {"part_id": part["part_id"], "ts": now, "deadline": now + deadline_s}
            plc.publish(f"{prefix}/trigger", json.dumps(payload).encode())
            for hostile in part.get("hostile", []):
                plc.publish(f"{prefix}/trigger", bytes.fromhex(hostile), track=False)
            if part["expose"]:
                cam.expose(Path(part["src"]), camera / part["name"], now + delay)
            sent.append([k, part["part_id"], now])
    finally:
        cam.close()
    return sent


class ConveyorProcess:
    """The simulator's side: the conveyor as a child process (``python -m
    inspector.lab.conveyor``), out of reach of whatever pauses the simulator."""

    def __init__(self, schedule: dict, work: Path) -> None:
        path = work / "schedule.json"
        path.write_text(json.dumps(schedule))
        self.log = open(work / "conveyor.log", "ab")  # noqa: SIM115 (lives as long as the process)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "inspector.lab.conveyor", str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        if self._line(30.0) != "ready":
            self.close()
            raise InspectorError(
                f"the simulated conveyor did not start; see {work / 'conveyor.log'}"
            )

    def _line(self, timeout: float) -> str:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        return self.proc.stdout.readline().strip() if ready else ""

    def start(self, lead_s: float = 0.3) -> float:
        """Start the parts ``lead_s`` from now; returns when the first is triggered."""
        at = time.time() + lead_s
        self.proc.stdin.write(f"start {at!r}\n")
        self.proc.stdin.flush()
        return at

    def triggers(self, timeout: float) -> list:
        """``[k, part_id, ts]`` of every trigger sent, once the last part is exposed."""
        line = self._line(timeout)
        if not line:
            raise InspectorError("the simulated conveyor stopped before the last part")
        return json.loads(line)["triggers"]

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("stop\n")
                self.proc.stdin.flush()
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    schedule = json.loads(Path(argv[0]).read_text())
    plc = Plc(schedule["host"], schedule["port"])
    try:
        print("ready", flush=True)
        word, _, at = sys.stdin.readline().partition(" ")
        if word != "start":
            return 1
        sent = run(schedule, float(at), plc)
        print(json.dumps({"triggers": sent}), flush=True)
        sys.stdin.readline()  # stop (or the parent gone): the PLC has served its turn
    finally:
        plc.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
