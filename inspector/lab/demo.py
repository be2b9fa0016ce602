"""``inspector demo``: the whole station on one machine, no camera, no GPU, no external broker.

It makes synthetic parts (some with scratches or spots), takes the committed demo model
(``inspector/models/demo.onnx``: a small CNN that ``training/`` trained on such parts;
``make demo-model`` remakes it), starts a local broker (Mosquitto when installed, else
amqtt), runs a station that replays the parts from a folder, prints every verdict as
a subscriber receives it over MQTT, and ends with a summary.

The replay is a mixed stream as a line sees it: good and defective parts in a seeded
random order, the defect rate drifting once (from ``BASE_RATE`` to ``DRIFT_RATE`` at
``DRIFT_AT`` of the stream), so a p-chart over it raises one real alarm.

Everything stays in one named folder (``inspector-demo/`` in the working folder unless
``--keep DIR``), laid out as ``deploy/examples/review.yaml`` expects under
``INSPECTOR_HOME``: ``station.yaml``, ``recordings/``, ``models/current`` -> ``models/demo``,
``golden/demo/{pass,fail}``, the model once more in ``runs/demo`` (the workbench's registry,
to promote); the closing lines point the workbench at it.
"""

from __future__ import annotations

import json
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt

from ..errors import InspectorError
from .demospc import BASELINE, SUBGROUP, DemoSpc

SPC_ALARM = "inspector/spc/alarm"  # the SPC service's retained set of active alarms

DEMO_MODEL = Path(__file__).parents[1] / "models" / "demo.onnx"
DEMO_HOME = Path("inspector-demo")  # the demo's folder, relative to the working folder
STATION = "demo"  # the station id; deploy/examples/review.yaml names it so
BASE_RATE, DRIFT_RATE, DRIFT_AT = 0.08, 0.35, 0.6  # defect rate before/after the drift
GOLDEN_EACH = 4  # golden parts per verdict (pass/, fail/)


def _config_yaml(work: Path, host: str, port: int, protocol: str, rate: float) -> str:
    return f"""\
station:
  id: {STATION}
  name: Demo station (synthetic parts)
source:
  type: folder
  path: parts
  recursive: true
  loop: false
  rate_fps: {rate}
trigger:
  type: free-run
part:
  deadline_ms: 1000
model:
  path: models/current/model.onnx
  providers: [{{type: cpu}}]
  max_batch: 8
mqtt:
  host: {host}
  port: {port}
  protocol: "{protocol}"
recorder:
  path: recordings
  pass_sample_rate: 0.15  # enough good parts to review and train on
metrics:
  port: 0
"""


def prepare(folder: Path, parts: int = 60, seed: int = 7) -> dict[str, bool]:
    """Write the demo's model (``model/demo.onnx`` + ``demo.json``) and parts (``parts/``)."""
    from .modelkit import write_parts

    folder = Path(folder)
    if not DEMO_MODEL.is_file():
        raise InspectorError(f"the demo model is missing: {DEMO_MODEL} (make demo-model)")
    truth = write_parts(folder / "parts", parts, defect_rate=0.3, seed=seed)
    (folder / "model").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(DEMO_MODEL, folder / "model" / "demo.onnx")
    shutil.copyfile(DEMO_MODEL.with_suffix(".json"), folder / "model" / "demo.json")
    if DEMO_MODEL.with_suffix(".keras").is_file():  # its Keras twin, for the bench baseline
        shutil.copyfile(DEMO_MODEL.with_suffix(".keras"), folder / "model" / "demo.keras")
    return truth


def defect_schedule(count: int, seed: int = 7) -> list[bool]:
    """Which of ``count`` parts in line order are defective: a seeded random order at
    ``BASE_RATE`` that drifts once to ``DRIFT_RATE`` at ``DRIFT_AT`` of the stream."""
    rng = np.random.default_rng(seed)
    drift = int(count * DRIFT_AT)
    return [bool(rng.random() < (BASE_RATE if i < drift else DRIFT_RATE)) for i in range(count)]


def write_stream(folder: Path, count: int, seed: int = 7) -> dict[str, bool]:
    """The replay: ``count`` parts as ``NNNNN_<label>.png`` in one folder, read in line
    order (the name's number); returns {file name: is_defect}."""
    import cv2

    from .modelkit import synthetic_part

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed + 1)
    truth = {}
    for i, defect in enumerate(defect_schedule(count, seed)):
        name = f"{i:05d}_{'defect' if defect else 'good'}.png"
        cv2.imwrite(str(folder / name), synthetic_part(rng, defect))
        truth[name] = defect
    return truth


def write_home(folder: Path, parts: int, seed: int = 7) -> dict[str, bool]:
    """The demo's folder (see the module): the replay, the model behind ``models/current``,
    a golden set; returns the replay's truth."""
    import cv2

    from .modelkit import synthetic_part

    folder = Path(folder)
    if not DEMO_MODEL.is_file():
        raise InspectorError(f"the demo model is missing: {DEMO_MODEL} (make demo-model)")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".gitignore").write_text("# the demo's output, never committed\n*\n")
    shutil.rmtree(folder / "parts", ignore_errors=True)  # a rerun replays a fresh stream
    truth = write_stream(folder / "parts", parts, seed)
    model = folder / "models" / STATION
    model.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(DEMO_MODEL, model / "model.onnx")
    shutil.copyfile(DEMO_MODEL.with_suffix(".json"), model / "model.json")
    registry = folder / "runs" / STATION  # the workbench's registry: a model to promote
    registry.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(DEMO_MODEL, registry / "model.onnx")
    shutil.copyfile(DEMO_MODEL.with_suffix(".json"), registry / "model.json")
    link = folder / "models" / "current"
    if not link.is_symlink():
        link.unlink(missing_ok=True)
        link.symlink_to(STATION)
    rng = np.random.default_rng(seed + 2)
    for expected, defect in (("pass", False), ("fail", True)):
        golden = folder / "golden" / STATION / expected
        golden.mkdir(parents=True, exist_ok=True)
        for i in range(GOLDEN_EACH):
            cv2.imwrite(str(golden / f"{expected}_{i}.png"), synthetic_part(rng, defect))
    return truth


def run_demo(
    parts: int = 60,
    rate: float = 15.0,
    broker: str = "auto",
    keep: Path | None = None,
    out=None,
    serve: int | None = None,
) -> int:
    """The replay through a station, then the summary. ``serve`` (a port): afterwards keep
    the broker, the station and SPC running and serve the QA workbench on that port
    (``demoreview``) until Ctrl-C or SIGTERM."""
    from .. import logs
    from ..station.config import load_config
    from ..station.pipeline import Station
    from .broker import local_broker

    out = out or sys.stdout
    logs.setup("WARNING")
    work = (Path(keep) if keep else DEMO_HOME).resolve()
    t_setup = time.monotonic()
    truth = write_home(work, parts)
    b = local_broker(broker)
    print(
        f"demo: {parts} synthetic parts in {work}/parts, broker {type(b).__name__} "
        f"on {b.host}:{b.port} (MQTT {b.protocol})",
        file=out,
    )
    (work / "station.yaml").write_text(_config_yaml(work, b.host, b.port, b.protocol, rate))
    cfg = load_config(work / "station.yaml")
    spc = DemoSpc(work, b.host, b.port, b.protocol)
    bench = None
    try:  # the SPC process ends with the demo, whatever stops it
        spc_up = spc.start()
        print(
            f"demo: SPC on the verdicts (subgroups of {SUBGROUP} parts, limits from the first "
            f"{BASELINE}), alarms on {SPC_ALARM}"
            if spc_up
            else f"demo: the SPC service did not start ({spc.log_path}); going on without it",
            file=out,
        )

        received: list[dict] = []
        alarms: list[dict] = []
        got_all = threading.Event()

        def on_message(_c, _u, msg):
            if msg.topic == SPC_ALARM:
                _on_alarm(msg.payload, alarms, len(received), out)
                return
            if not msg.topic.endswith("/verdict"):
                return
            v = json.loads(msg.payload)
            v["_received"] = time.time()
            received.append(v)
            truth_defect = truth.get(v.get("frame", ""), None)
            mark = (
                ""
                if truth_defect is None
                else ("  (correct)" if truth_defect == (v["result"] == "fail") else "  (WRONG)")
            )
            score = v["scores"].get("defect")
            print(
                f"  {v['part_id']:<28} {v['result'].upper():<4} {v['reason']:<16} "
                f"defect={'-' if score is None else f'{score:.3f}'}  "
                f"{(v['_received'] - v['t_trigger']) * 1000:6.1f} ms  {v.get('frame', '')}{mark}",
                file=out,
                flush=True,
            )
            if len(received) >= parts:
                got_all.set()

        sub = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id="demo-viewer",
            protocol=mqtt.MQTTv5 if b.protocol == "5" else mqtt.MQTTv311,
        )
        sub.on_message = on_message
        sub.connect(b.host, b.port)
        sub.subscribe(f"{cfg.prefix}/#", qos=1)
        sub.subscribe(SPC_ALARM, qos=1)
        sub.loop_start()

        station = Station(cfg)
        interrupted = False
        try:
            station.start()
            print(
                f"demo: station online (model {station.unit.classifier.model_id} on "
                f"{', '.join(station.unit.classifier.providers)}); verdicts as the gate sees them:",
                file=out,
            )
            while not (station.source_ended.is_set() and station.wait_idle(0)):
                time.sleep(0.05)
            got_all.wait(5)
            if serve is not None:
                time.sleep(1.0 if spc_up else 0.0)  # SPC closes the last subgroup
                ok = _report(received, truth, station, t_setup, out, work, spc_up, alarms, parts)
                bench = _serve(work, serve, b, cfg.prefix, out)
                return 0 if ok else 1
        except KeyboardInterrupt:
            interrupted = True
            print("\ndemo: interrupted, stopping", file=out)
        finally:
            if bench is not None:
                bench.stop()
            station.stop()
            time.sleep(1.0 if spc_up else 0.2)  # SPC closes the last subgroup
            spc.stop()
            sub.loop_stop()
            sub.disconnect()
            b.stop()
    finally:
        spc.stop()

    ok = _report(received, truth, station, t_setup, out, work, spc_up, alarms, parts)
    print("\n" + "\n".join(next_steps(work)), file=out)
    return 0 if ok or interrupted else 1


def _report(received, truth, station, t_setup, out, work, spc_up, alarms, parts) -> bool:
    """The summary and the SPC line; True when every verdict agreed with the truth."""
    ok = _summary(received, truth, station, time.monotonic() - t_setup, out, work)
    if spc_up:
        print(_spc_summary(alarms, int(parts * DRIFT_AT), Path(work) / "spc.log"), file=out)
    return ok


def _serve(work: Path, port: int, broker, prefix: str, out):
    """Start the workbench on the live line and wait for Ctrl-C or SIGTERM; returns the
    workbench to stop (the caller stops the line after it)."""
    import signal

    from .demoreview import DemoWorkbench

    def on_term(_sig, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    bench = DemoWorkbench(work, port, broker.host, broker.port, prefix)
    try:
        bench.start()
        print("\n" + "\n".join(bench.lines()), file=out, flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("\ndemo: stopping the workbench, the station, SPC and the broker", file=out)
    return bench


def _on_alarm(payload: bytes, alarms: list[dict], after: int, out) -> None:
    """Print each alarm the SPC service opens (its retained message lists the active ones)."""
    try:
        active = json.loads(payload).get("active") or []
    except (ValueError, AttributeError):
        return
    seen = {a["key"] for a in alarms}
    for a in active:
        key = (a.get("station"), a.get("chart"), a.get("rule"))
        if key in seen:
            continue
        what = f"station {key[0]}, {key[1]} chart, {a.get('description') or key[2]}"
        alarms.append({"key": key, "after": after, "what": what, "chart": key[1]})
        print(f"  SPC ALARM after {after} parts: {what}", file=out, flush=True)


def _spc_summary(alarms: list[dict], drift: int, log: Path) -> str:
    """One line: when SPC first alarmed against when the defect rate drifted."""
    if not alarms:
        return f"  SPC alarms           none (the defect rate drifted at part {drift}); log {log}"
    early = sum(a["after"] <= drift for a in alarms)
    charts = sorted({a["chart"] for a in alarms})
    return (
        f"  SPC alarms           first after {alarms[0]['after']} parts (the defect rate drifted "
        f"at part {drift}); {len(alarms)} signals on the {', '.join(charts)} charts; "
        f"{early or 'none'} before the drift; log {log}"
    )


def _shown(path: Path) -> str:
    """A path as the user types it from the working folder (relative when below it)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(Path(path).resolve())


def next_steps(work: Path) -> list[str]:
    """The closing lines: the workbench on the demo's folder, commands that work as
    printed from the working folder (the venv's ``inspector`` by its path)."""
    exe = Path(sys.executable).parent / "inspector"
    inspector = _shown(exe) if exe.is_file() else "inspector"
    example = Path(__file__).parents[2] / "deploy" / "examples" / "review.yaml"
    review = f"{inspector} review --config {_shown(example)}"
    spc = Path(work).resolve() / "spc.yaml"
    report = [
        "the SPC charts and alarms of the run, as a report (open its index.html):",
        f"  {inspector} spc report --config {_shown(spc)} --out {_shown(spc.parent / 'spc-report')}",
        "",
    ]
    return (report if spc.is_file() else []) + [
        "review what the line kept in the QA workbench:",
        f"  export INSPECTOR_HOME={Path(work).resolve()}",
        f"  {review} --add-user qa --role admin   # asks for a password (8+ characters) twice",
        f"  {review}   # then open http://127.0.0.1:8470/ and log in as qa",
    ]


def _summary(
    received: list[dict], truth: dict[str, bool], station, seconds: float, out, work: Path
) -> bool:
    ids = [v["part_id"] for v in received]
    fails = [v for v in received if v["result"] == "fail"]
    correct = sum(1 for v in received if truth.get(v.get("frame", "")) == (v["result"] == "fail"))
    escapes = sum(1 for v in received if truth.get(v.get("frame", "")) and v["result"] == "pass")
    lat = (
        np.array([(v["_received"] - v["t_trigger"]) * 1000 for v in received]) if received else None
    )
    m = station.metrics
    print("\ndemo summary", file=out)
    print(f"  parts captured       {int(m.value('inspector_parts_total'))}", file=out)
    print(f"  verdicts received    {len(received)} ({len(set(ids))} distinct part ids)", file=out)
    print(f"  passed / failed      {len(received) - len(fails)} / {len(fails)}", file=out)
    print(
        f"  agree with truth     {correct} of {len(received)}; escapes (defect passed): {escapes}",
        file=out,
    )
    if lat is not None:
        print(
            f"  latency (trigger -> verdict received)  p50 {np.percentile(lat, 50):.1f} ms, "
            f"p99 {np.percentile(lat, 99):.1f} ms",
            file=out,
        )
    drops = {k: v for k, v in m.snapshot().items() if k.startswith("inspector_drops_total") and v}
    print(f"  drops                {drops or 'none'}", file=out)
    if station.recorder:
        print(
            f"  images kept for QA   {station.recorder.kept} in {station.recorder.root}",
            file=out,
        )
    print(f"  took                 {seconds:.1f} s", file=out)
    expected = int(m.value("inspector_parts_total"))
    return len(received) == expected == len(set(ids)) and expected > 0
