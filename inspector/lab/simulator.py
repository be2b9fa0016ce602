"""``inspector simulate``: a conveyor in software, with the real inspector and the real gate.

Parts arrive at a set rate with ground truth from a labelled folder (``good/`` is good,
every other folder a defect). For each part the simulated sensor publishes a trigger;
20 ms later (at most a quarter of the part spacing) the simulated camera drops that part's image into the inspector's spool
folder. The inspector runs as its own process (``inspector run``), the gate
(``GateService``) sits ``travel_ms`` downstream, and an observer records every verdict
on the wire. Faults can be injected mid-run; at the end a scorecard says what
happened to every part. ``part_id_wrap`` makes the PLC's part counter come round, so the
same ids name new parts mid-run.

The PLC and the camera run in a process of their own (``conveyor.py``), fed a schedule this
module computes up front, so that nothing that pauses this process (a garbage collection,
other busy threads) pauses them.

Why one module: the run, the faults and the scorecard share one clock and one event record;
the faults are named in faults.py, the swap plan in swapfault.py, the devices in conveyor.py.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt

from ..contract.mqtt import MqttSection
from ..errors import InspectorError
from ..gate.config import GateConfig, GateHttpSection, GateSection
from ..gate.service import GateService
from ..station.sources import IMAGE_SUFFIXES
from .broker import Mosquitto, free_port
from .conveyor import ConveyorProcess
from .faults import FAULTS
from .scorecard import format_scorecard, scorecard  # noqa: F401 (re-exported for the CLI)
from .swapfault import ModelAdmin, model_variants

log = logging.getLogger(__name__)
CAMERA_DELAY_S = 0.02  # trigger -> exposure, at most a quarter of the part spacing
POISON = 7  # every pixel of the model-error fault's image: the model returns NaN for it
HOSTILE = [
    b"\xff\xfe\x00\x01",
    b"{not json",
    b"[1,2,3]",
    b'{"part_id": 42}',
    b'{"part_id": ""}',
    b"x" * 100_000,
    b'{"part_id": "a", "ts": "soon"}',
    b"null",
    b"\x00" * 64,
]


@dataclass
class SimOptions:
    data: Path
    model: Path
    parts: int = 100
    rate_ppm: float = 240.0
    fault: str = "none"
    out: Path | None = None
    broker: str | None = None  # HOST:PORT of an existing broker
    deadline_ms: float = 1000.0  # the inspector's deadline after the trigger
    timeout_margin_ms: float = 20.0  # the inspector fails a part this long before its deadline
    travel_ms: float = 1200.0  # trigger -> gate
    fault_at: float = 0.3  # fraction of the run when the fault starts
    fault_s: float = 2.0  # how long it lasts
    seed: int = 0
    work: Path | None = None
    part_id_wrap: int | None = None  # part ids count modulo this (a PLC counter that wraps)


def _camera_delay(o: SimOptions) -> float:
    return min(CAMERA_DELAY_S, 0.25 * 60.0 / o.rate_ppm)


def labelled_images(folder: Path) -> list[tuple[Path, bool]]:
    """(path, is_defect) for every image under folder/<class>/."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InspectorError(f"--data: folder not found: {folder}")
    items = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        for p in sorted(sub.rglob("*")):
            if p.suffix.lower() in IMAGE_SUFFIXES:
                items.append((p, sub.name != "good"))
    if not items:
        raise InspectorError(
            f"--data: no images in class folders under {folder} (expected good/, defect/ …)"
        )
    if not any(d for _, d in items) or all(d for _, d in items):
        log.warning("the data has only one class; the scorecard will be one-sided")
    return items


def _station_yaml(o: SimOptions, model: Path, host: str, port: int, work: Path) -> str:
    return f"""\
station: {{id: sim}}
source: {{type: spool, path: "{work / "camera"}"}}
trigger: {{type: mqtt, max_pending: 256, max_age_ms: 150, match_by: timestamp, max_frame_wait_ms: {_camera_delay(o) * 1000 + min(100.0, 0.5 * 60000 / o.rate_ppm)}}}
part: {{deadline_ms: {o.deadline_ms}, timeout_margin_ms: {o.timeout_margin_ms}}}
model: {{path: "{model.resolve()}", max_batch: 8}}
mqtt: {{host: {host}, port: {port}, keepalive_s: 1, reconnect_max_s: 0.25, status_interval_s: 0.5}}
recorder: {{path: "{work / "recordings"}", pass_sample_rate: 0.0}}
metrics: {{port: 0, max_frame_age_s: 3600}}
logging: {{level: WARNING}}
testing: {{model_delay_file: "{work / "slow-model"}"}}
"""


class _Observer:
    """Sees the line as an outsider: every verdict and status on the wire, with receipt times.
    Verdicts are kept by part id and trigger time: a part id names a new part each time the
    PLC's counter comes round."""

    def __init__(self, host: str, port: int, prefix: str) -> None:
        self.verdicts: dict[tuple[str, float], dict] = {}
        self.duplicates = 0
        self.state = "unknown"
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id="sim-observer", protocol=mqtt.MQTTv5
        )
        self.client.reconnect_delay_set(0.05, 0.25)
        self.client.on_connect = lambda c, *a: c.subscribe(f"{prefix}/#", qos=1)
        self.client.on_message = self._on_message
        self.client.connect(host, port, keepalive=5)
        self.client.loop_start()

    def _on_message(self, _c, _u, msg) -> None:
        if msg.topic.endswith("/verdict"):
            v = json.loads(msg.payload)
            v["_received"] = time.time()
            key = (v["part_id"], v["t_trigger"])
            if key in self.verdicts:
                self.duplicates += 1
            else:
                self.verdicts[key] = v
        elif msg.topic.endswith("/status") and msg.payload:
            self.state = json.loads(msg.payload)["state"]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class _Inspector:
    """``inspector run`` as a child process (killable, restartable)."""

    def __init__(self, config: Path, work: Path) -> None:
        self.config = config
        self.log = open(work / "inspector.log", "ab")  # noqa: SIM115 (lives as long as the process)
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "inspector.cli", "run", str(self.config)],
            stdout=self.log,
            stderr=self.log,
        )

    def rss_kb(self) -> int | None:
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except (OSError, AttributeError):
            return None
        return None

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()


def simulate(o: SimOptions) -> dict:
    if o.fault not in FAULTS:
        raise InspectorError(f"--fault: unknown fault {o.fault!r} (one of {', '.join(FAULTS)})")
    if not Path(o.model).is_file():
        raise InspectorError(f"--model: file not found: {o.model}")
    if o.parts < 1 or o.rate_ppm <= 0:
        raise InspectorError("--parts and --rate must be positive")
    if o.part_id_wrap is not None and o.part_id_wrap < 1:
        raise InspectorError("--part-id-wrap must be positive")
    images = labelled_images(o.data)
    rng = random.Random(o.seed)
    work = Path(o.work or tempfile.mkdtemp(prefix="inspector-sim-"))
    (work / "camera").mkdir(parents=True, exist_ok=True)
    broker = None
    if o.broker:
        host, _, port_s = o.broker.rpartition(":")
        host, port = host or "127.0.0.1", int(port_s)
    else:
        broker = Mosquitto(port=free_port()).start()
        host, port = broker.host, broker.port
    prefix = "inspector/sim"
    model = Path(o.model)
    if o.fault == "model-error":
        model = _poisoned_model(model, work / "model" / model.name, work / "poison.png")
    (work / "station.yaml").write_text(_station_yaml(o, model, host, port, work))
    inspector = _Inspector(work / "station.yaml", work)
    gate = GateService(
        GateConfig(
            gate=GateSection(
                id="sim-gate", station_prefix=prefix, travel_ms=o.travel_ms, status_stale_s=2.0
            ),
            mqtt=MqttSection(host=host, port=port, reconnect_max_s=0.25),
            http=GateHttpSection(port=0),  # any free port: never clash with a real gate
        )
    )
    observer = _Observer(host, port, prefix)
    admin = None
    if o.fault == "model-swap":
        variants = model_variants(model, work / "models")
        admin = ModelAdmin(host, port, prefix, variants, o.parts)
    gate.start()
    inspector.start()
    try:
        t_online = _wait_for(lambda: observer.state == "online", 60)
        if t_online is None:
            raise InspectorError(f"the inspector did not come online; see {work / 'inspector.log'}")
        with _heap_frozen():
            card = _run_line(
                o, images, rng, work, prefix, (host, port), inspector, broker, observer, gate, admin
            )
        if admin is not None:
            admin.close()
            card["model_swap"] = admin.report(observer.verdicts, o.deadline_ms)
    finally:
        if admin is not None:
            admin.close()
        observer.close()
        gate.stop()
        inspector.stop()
        if broker is not None:
            broker.stop()
    card["work_dir"] = str(work)
    if o.out:
        Path(o.out).write_text(json.dumps(card, indent=2) + "\n")
    if o.work is None and not o.out:
        shutil.rmtree(work, ignore_errors=True)
    return card


@contextlib.contextmanager
def _heap_frozen():
    """The gate and the observer are threads of this process (the PLC and the camera have
    their own, ``conveyor``). A full garbage collection of a large heap (a process that has
    loaded TensorFlow and built models: a test run) stops them for 0.2 to 0.8 s measured
    here, and the gate would act late. The heap as it is before the run is frozen
    (``gc.freeze``): collections during the run look only at what the run allocates."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _wait_for(cond, timeout: float) -> float | None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return time.time()
        time.sleep(0.02)
    return None


def _schedule(o, images, rng, work, prefix, address, fault_window) -> tuple[dict, list]:
    """The conveyor's schedule (``conveyor``: every part's id, image, hostile payloads and
    whether the camera exposes it) and each part's truth, computed before the run."""
    parts, truth = [], []
    for k in range(o.parts):
        path, defect = images[rng.randrange(len(images))]
        if o.fault == "model-error" and fault_window and k == fault_window[0]:
            path, defect = work / "poison.png", True  # the model fails on this one's batch
        hostile = []
        if o.fault == "bad-payloads":
            hostile = [rng.choice(HOSTILE).hex() for _ in range(rng.randrange(1, 4))]
        lost = o.fault == "source-loss" and fault_window and fault_window[0] <= k < fault_window[1]
        name = f"{k:08d}{path.suffix.lower()}"
        parts.append(
            {
                "part_id": f"sim-{k % o.part_id_wrap if o.part_id_wrap else k:06d}",
                "src": str(path),
                "name": name,
                "hostile": hostile,
                "expose": not lost,
            }
        )
        truth.append((defect, name))
    schedule = {
        "host": address[0],
        "port": address[1],
        "prefix": prefix,
        "period_s": 60.0 / o.rate_ppm,
        "deadline_ms": o.deadline_ms,
        "camera": str(work / "camera"),
        "camera_delay_s": _camera_delay(o),
        "parts": parts,
    }
    return schedule, truth


def _run_line(
    o, images, rng, work, prefix, address, inspector, broker, observer, gate, admin=None
) -> dict:
    """The run: the conveyor process triggers and exposes the parts on its own clock; this
    process injects and clears the fault (half a part early, so that the part the window
    starts or ends at finds it in place), tells the model admin the part count, and scores."""
    period = 60.0 / o.rate_ppm
    n = o.parts
    fault_start = int(n * o.fault_at) if o.fault not in ("none", "model-swap") else None
    fault_parts = max(1, int(o.fault_s / period))
    fault_window = (fault_start, fault_start + fault_parts) if fault_start is not None else None
    camera, lost = work / "camera", work / "camera.unplugged"
    slow_flag = work / "slow-model"
    t_fault = t_clear = None
    rss_start = rss_end = None
    schedule, part_truth = _schedule(o, images, rng, work, prefix, address, fault_window)
    conveyor = ConveyorProcess(schedule, work)
    try:
        t0 = conveyor.start()
        for k in range(n):
            if fault_window and k in fault_window:
                time.sleep(max(0.0, t0 + (k - 0.5) * period - time.time()))
                if k == fault_window[0]:
                    t_fault = time.time()
                    _inject(o.fault, broker, inspector, camera, lost, slow_flag, o)
                else:
                    _clear(o.fault, broker, inspector, camera, lost, slow_flag)
                    t_clear = time.time()
            time.sleep(max(0.0, t0 + k * period - time.time()))
            if k == min(n - 1, max(50, n // 10)):  # after warm-up
                rss_start = inspector.rss_kb()
            if admin is not None:  # --fault model-swap: requests at set part counts
                admin.tick(k)
        sent = conveyor.triggers(timeout=10.0 + period)
        if fault_window and t_clear is None:  # the run ended inside the fault window
            _clear(o.fault, broker, inspector, camera, lost, slow_flag)
            t_clear = time.time()
        rss_end = inspector.rss_kb()
        truth = {(part_id, ts): part_truth[k] for k, part_id, ts in sent}
        _wait_for(lambda: not gate.core.waiting, o.travel_ms / 1000.0 + 5)
        time.sleep(0.3)
        return scorecard(o, truth, observer, gate, t_fault, t_clear, rss_start, rss_end)
    finally:
        conveyor.close()


def _poisoned_model(src: Path, dst: Path, image: Path) -> Path:
    """For ``--fault model-error``: a copy of the model that returns NaN for an image whose
    pixels all equal POISON (written to ``image``), so the station's classifier raises on the
    batch that holds it and on no other."""
    import cv2

    from ..contract.manifest import METADATA_KEY

    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError:
        raise InspectorError(
            "--fault model-error needs the onnx package: pip install 'defect-inspector[onnx]'"
        ) from None

    model = onnx.load(str(src))
    manifest = json.loads({p.key: p.value for p in model.metadata_props}[METADATA_KEY])
    g = model.graph
    x, out = manifest["input"]["name"], manifest["output"]["name"]
    raw = f"{out}/before-poison"
    for node in g.node:
        node.output[:] = [raw if name == out else name for name in node.output]
    dtype = onnx.helper.tensor_dtype_to_np_dtype(
        next(o.type.tensor_type.elem_type for o in g.output if o.name == out)
    )
    g.initializer.extend(
        [
            numpy_helper.from_array(np.array(POISON, np.float32), "poison/value"),
            numpy_helper.from_array(np.array(0.0, np.float32), "poison/zero"),
            numpy_helper.from_array(np.array(np.nan, dtype), "poison/nan"),
        ]
    )
    opset = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset >= 18:  # ReduceMax takes its axes as an input from opset 18
        g.initializer.append(numpy_helper.from_array(np.array([1], np.int64), "poison/axes"))
        reduce = helper.make_node("ReduceMax", ["poison/flat", "poison/axes"], ["poison/max"])
    else:
        reduce = helper.make_node("ReduceMax", ["poison/flat"], ["poison/max"], axes=[1])
    g.node.extend(
        [
            helper.make_node("Cast", [x], ["poison/x"], to=onnx.TensorProto.FLOAT),
            helper.make_node("Sub", ["poison/x", "poison/value"], ["poison/diff"]),
            helper.make_node("Abs", ["poison/diff"], ["poison/abs"]),
            helper.make_node("Flatten", ["poison/abs"], ["poison/flat"], axis=1),
            reduce,  # (batch, 1): how far each image is from all-POISON
            helper.make_node("Equal", ["poison/max", "poison/zero"], ["poison/hit"]),
            helper.make_node("Where", ["poison/hit", "poison/nan", raw], [out]),
        ]
    )
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dst))
    cv2.imwrite(str(image), np.full((64, 64, 3), POISON, np.uint8))
    return dst


def _inject(fault, broker, inspector, camera, lost, slow_flag, o) -> None:
    log.warning("fault: %s", fault)
    if fault == "broker-restart":
        if broker is None:
            raise InspectorError(
                "--fault broker-restart needs the simulator's own broker (no --broker)"
            )
        broker.kill()
    elif fault == "source-loss":
        camera.rename(lost)
    elif fault == "slow-model":
        slow_flag.write_text(str(o.deadline_ms * 1.5))
    elif fault == "kill-inspector":
        inspector.kill()


def _clear(fault, broker, inspector, camera, lost, slow_flag) -> None:
    log.warning("fault cleared: %s", fault)
    if fault == "broker-restart":
        broker.start()
    elif fault == "source-loss":
        lost.rename(camera)
    elif fault == "slow-model":
        slow_flag.unlink(missing_ok=True)
    elif fault == "kill-inspector":
        inspector.start()
