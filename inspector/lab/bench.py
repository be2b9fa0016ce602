"""``inspector bench``: the model alone and the whole station, side by side, in one run.

- bare ONNX Runtime ``session.run`` on preprocessed inputs, batch 1 and batch N;
- the station at full speed (replay -> preprocess -> classify -> decide -> publish to a
  real Mosquitto -> received by a subscriber): throughput;
- the same station with its verdicts kept in-process (no JSON, no MQTT): what the pipeline
  costs beyond the model, told apart from what publishing costs;
- the station paced below its capacity: end-to-end latency (capture -> verdict received),
  to compare with bare batch-1 latency;
- the Keras baseline (``model(x)`` and ``predict`` per frame) when the caller passes one:
  the command line does when TensorFlow is installed and ``MODEL.keras`` (the twin that
  ``inspector export`` writes) lies beside the model; this module never imports TensorFlow.

Writes JSON and prints a table. Numbers on shared machines are noisy: read the ratios.

Why one module: the bench's runs share one set-up (station, sink, broker) and one report;
split, each part would repeat it.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import paho.mqtt.client as mqtt

from ..errors import InspectorError
from ..station.config import load_config
from .benchgate import VerdictSink, VerdictTimer
from .broker import local_broker
from .scorecard import accuracy, accuracy_line


def _pct(values, q) -> float:
    return round(float(np.percentile(values, q)), 3)


def _rss_kb() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _cpu_s(stat_path: str) -> float | None:
    """User + system CPU seconds of a process or thread, from /proc (None elsewhere)."""
    try:
        fields = Path(stat_path).read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _thread_cpu() -> dict[str, float]:
    """CPU seconds so far of this process's live threads, by name (numbered names summed:
    infer-1 and infer-2 become infer); threads Python did not start count as 'native'."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    out: dict[str, float] = {}
    for task in Path("/proc/self/task").glob("*"):
        sec = _cpu_s(str(task / "stat"))
        if sec is None or not task.name.isdigit():
            continue
        name = names.get(int(task.name), "native (ONNX Runtime, OpenCV)")
        name = name.rstrip("0123456789").rstrip("-") if name.startswith("infer-") else name
        out[name] = out.get(name, 0.0) + sec
    return out


def bare(session, input_name: str, inputs: np.ndarray, batch: int, frames: int) -> dict:
    n = len(inputs)
    lat = []
    done = 0
    t0 = time.perf_counter()
    i = 0
    while done < frames:
        idx = [(i + j) % n for j in range(batch)]
        x = inputs[idx]
        t = time.perf_counter()
        session.run(None, {input_name: x})
        lat.append((time.perf_counter() - t) * 1000.0)
        done += batch
        i += batch
    total = time.perf_counter() - t0
    return {
        "batch": batch,
        "frames": done,
        "throughput_fps": round(done / total, 1),
        "latency_ms": {"p50": _pct(lat, 50), "p99": _pct(lat, 99)},
    }


def bare_parallel(clf, inputs: np.ndarray, batch: int, frames: int) -> dict:
    """The model alone run the way the station runs it: ``clf.workers`` threads side by side on
    one session, each with batches of ``batch``. What a hand-written loop could reach with the
    station's parallelism, for comparison with the plain loop in ``bare``."""
    name = clf.manifest.input_name
    per_worker = max(batch, frames // clf.workers)
    done = [0] * clf.workers
    start = threading.Barrier(clf.workers + 1)

    def work(w: int) -> None:
        start.wait()
        i = w * batch
        while done[w] < per_worker:
            clf.session.run(None, {name: inputs[[(i + j) % len(inputs) for j in range(batch)]]})
            done[w] += batch
            i += batch

    threads = [threading.Thread(target=work, args=(w,)) for w in range(clf.workers)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    total = time.perf_counter() - t0
    return {
        "batch": batch,
        "workers": clf.workers,
        "intra_op_threads": clf.session.get_session_options().intra_op_num_threads or "default",
        "frames": sum(done),
        "throughput_fps": round(sum(done) / total, 1),
    }


def _station_yaml(
    model: Path,
    parts: Path,
    host: str,
    port: int,
    protocol: str,
    rate: float,
    max_batch: int,
    when_full: str = "fail",
    workers: int = 0,
) -> str:
    return f"""\
station: {{id: bench}}
source: {{type: folder, path: "{parts}", recursive: true, rate_fps: {rate}, loop: true}}
trigger: {{type: free-run}}
part: {{deadline_ms: 5000}}
pipeline: {{queue_size: 64, when_full: {when_full}}}
model: {{path: "{model}", max_batch: {max_batch}, warmup_runs: 5, workers: {workers}}}
mqtt: {{host: {host}, port: {port}, protocol: "{protocol}", outbox_size: 100000}}
recorder: {{enabled: false}}
metrics: {{enabled: false}}
"""


def station_run(cfg_path: Path, frames: int, broker, mqtt_out: bool = True) -> dict:
    """The station on ``cfg_path`` until ``frames`` verdicts: received by a subscriber through
    ``broker``, or (``mqtt_out=False``) kept in-process, to time the pipeline alone."""
    from ..station.pipeline import Station

    cfg = load_config(cfg_path)
    if mqtt_out:
        sub = VerdictTimer(broker, cfg.prefix + "/verdict", frames, cfg_path.parent)
        station = Station(cfg)
        others = {"mosquitto": getattr(getattr(broker, "proc", None), "pid", None)}
        others["subscriber"] = sub.proc.pid
    else:
        sub = VerdictSink(frames)
        station = Station(cfg, publisher=sub)
        others = {}
    others_before = {k: _cpu_s(f"/proc/{pid}/stat") for k, pid in others.items() if pid}
    cpu_before = _thread_cpu()
    station.start()
    t_start = time.time()
    rss_warm = None
    while sub.running():
        if rss_warm is None and station.metrics.total("inspector_verdicts_total") >= frames / 10:
            rss_warm = _rss_kb()
        time.sleep(0.05)
    rss_end = _rss_kb()
    cpu = {k: v - cpu_before.get(k, 0.0) for k, v in _thread_cpu().items()}
    for k, before in others_before.items():
        after = _cpu_s(f"/proc/{others[k]}/stat")
        if before is not None and after is not None:
            cpu[k] = after - before
    decided = station.metrics.total("inspector_verdicts_total")
    station.stop()
    data = sub.result()
    lat = data["latency_ms"]
    if not lat:
        raise InspectorError("the station delivered no verdicts in the benchmark")
    stages = {
        k: {"p50": _pct(v, 50), "p99": _pct(v, 99), "mean": round(float(np.mean(v)), 4)}
        for k, v in data["stages"].items()
        if v
    }
    batches = station.metrics.value("inspector_batch_size_count")
    growth = round(rss_end / rss_warm - 1.0, 4) if rss_warm and rss_end else None
    # throughput counts the parts the model classified; parts failed safe because the
    # station could not keep up (overflow, timeout) are verdicts, but not work done
    classified = sum(data["reasons"].get(r, 0) for r in ("ok", "defect", "uncertain"))
    return {
        "frames": len(lat),
        "classified": classified,
        "failed_safe": {
            r: n for r, n in data["reasons"].items() if r not in ("ok", "defect", "uncertain")
        },
        "throughput_fps": round(classified / (data["t_last"] - t_start), 1),
        "e2e_latency_ms": {"p50": _pct(lat, 50), "p99": _pct(lat, 99)},
        "stage_latency_ms": stages,
        "mean_batch": round(station.metrics.value("inspector_batch_size_sum") / batches, 2)
        if batches
        else None,
        "rss_kb": {"after_10pct": rss_warm, "end": rss_end, "growth": growth},
        "subscriber": sub.kind,
        # where the CPU went: seconds of CPU per verdict, by thread of this process (the
        # station's and the bench's own main thread) and by the broker and subscriber
        "cpu_us_per_part": {
            k: round(v / decided * 1e6, 1) for k, v in sorted(cpu.items(), key=lambda kv: -kv[1])
        }
        if decided
        else None,
    }


def run_bench(
    model: Path | None,
    frames: int,
    out: Path | None,
    batch: int = 8,
    paced_fps: float = 100.0,
    broker_kind: str = "auto",
    keras_baseline=None,
    workers: int = 0,
) -> dict:
    from .demo import prepare

    work = Path(tempfile.mkdtemp(prefix="inspector-bench-"))
    truth = prepare(work, parts=64)
    if str(model) in ("random-cnn", "big-cnn"):  # line-sized CNNs (random weights): the
        from .modelkit import build_random_cnn  # cost ratios for models heavier than the demo's

        shape = {"random-cnn": {}, "big-cnn": {"size": 300, "widths": (24, 48, 96, 192, 384)}}
        model = build_random_cnn(work / f"{model}.onnx", name=str(model), **shape[str(model)])
    model = Path(model) if model else work / "model" / "demo.onnx"
    if not model.is_file():
        raise InspectorError(f"--model: file not found: {model}")
    from ..contract.preprocess import preprocess
    from ..station.classifier import Classifier
    from ..station.config import ModelSection

    # bare: the loop a user would write, ONNX Runtime's default session options
    clf = Classifier(ModelSection(path=model, workers=1))
    import cv2

    paths = sorted((work / "parts").rglob("*.png"))
    images = [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in paths]
    inputs = np.stack([preprocess(im, clf.spec) for im in images])
    judged = accuracy_of(clf, inputs, [truth[p.name] for p in paths])
    session = clf.session
    for _ in range(20):
        session.run(None, {clf.manifest.input_name: inputs[:1]})
    b1 = bare(session, clf.manifest.input_name, inputs, 1, frames)
    bn = bare(session, clf.manifest.input_name, inputs, batch, frames)
    station_clf = Classifier(ModelSection(path=model, max_batch=batch, workers=workers))
    station_clf.warmup(5)
    par = bare_parallel(station_clf, inputs, batch, frames)
    keras = keras_baseline(model, inputs, min(frames, 2000)) if keras_baseline else None
    broker = local_broker(broker_kind)
    try:
        full_cfg = work / "full.yaml"
        full_cfg.write_text(
            # a replay at full speed waits for room instead of failing parts it could not
            # take: the run measures capacity, not how fast overflow verdicts go out
            _station_yaml(
                model,
                work / "parts",
                broker.host,
                broker.port,
                broker.protocol,
                0.0,
                batch,
                when_full="wait",
                workers=workers,
            )
        )
        full = station_run(full_cfg, frames, broker)
        # the same run with verdicts kept in-process instead of published: what the
        # pipeline costs beyond the model, told apart from what MQTT costs
        alone = station_run(full_cfg, frames, broker, mqtt_out=False)
        # the model alone again, right after the station: on a shared machine the speed
        # drifts; the ratio uses the mean of before and after, and the drift is reported
        bn_after = bare(session, clf.manifest.input_name, inputs, batch, frames)
        paced_cfg = work / "paced.yaml"
        paced_cfg.write_text(
            _station_yaml(
                model,
                work / "parts",
                broker.host,
                broker.port,
                broker.protocol,
                paced_fps,
                1,
                workers=workers,
            )
        )
        paced = station_run(paced_cfg, min(frames, int(paced_fps * 20)), broker)
    finally:
        broker.stop()
    bare_fps = round((bn["throughput_fps"] + bn_after["throughput_fps"]) / 2.0, 1)
    result = {
        "model": str(model),
        "model_id": clf.model_id,
        "bare": {
            "batch1": b1,
            f"batch{batch}": bn,
            f"batch{batch}_after_station": bn_after,
            # batch N, mean of the runs before and after the station's
            "throughput_fps": bare_fps,
            "drift": round(bn_after["throughput_fps"] / bn["throughput_fps"] - 1.0, 4),
            "parallel": par,
        },
        "station": {
            "full_speed": full,
            "paced": dict(paced, rate_fps=paced_fps),
            "throughput_fps": full["throughput_fps"],
            "without_mqtt": alone,
        },
        "keras": keras,
        # the bench's parts decided as the station decides them, each rate with k of n
        # and its interval, beside the bounds the model's threshold reported
        "accuracy": judged,
        "ratios": {
            "station_over_bare_throughput": round(full["throughput_fps"] / bare_fps, 4),
            "station_over_bare_parallel_throughput": round(
                full["throughput_fps"] / par["throughput_fps"], 4
            ),
            "station_without_mqtt_over_bare_throughput": round(
                alone["throughput_fps"] / bare_fps, 4
            ),
            # machine time per part that publishing adds (serialising, paho, Mosquitto and the
            # subscriber, all on the same cores): the gap between the two station runs
            "mqtt_us_per_part": round(
                1e6 / full["throughput_fps"] - 1e6 / alone["throughput_fps"], 1
            ),
            "e2e_p99_minus_bare_p99_ms": round(
                paced["e2e_latency_ms"]["p99"] - b1["latency_ms"]["p99"], 3
            ),
            "ort_over_keras_batch1": round(
                b1["throughput_fps"] / keras["call_batch1"]["throughput_fps"], 2
            )
            if keras
            else None,
        },
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "onnxruntime": ort.__version__,
            "providers": clf.providers,
            "ort_intra_op_threads": clf.session.get_session_options().intra_op_num_threads
            or "default (one per core)",
            "station_workers": station_clf.workers,
            "station_intra_op_threads": par["intra_op_threads"],
            "versions": _versions(),
            "broker": type(broker).__name__,
        },
    }
    if out:
        Path(out).write_text(json.dumps(result, indent=2) + "\n")
    return result


def accuracy_of(clf, inputs: np.ndarray, defect: list[bool]) -> dict:
    """The parts decided with the station's ``Decider`` on the model's manifest (its
    thresholds, no uncertain band), against their truth: ``scorecard.accuracy``."""
    from ..station.decision import Decider

    decider = Decider(clf.manifest)
    failed = [decider.decide(p).result == "fail" for p in clf.run_all(inputs)]
    return accuracy(defect, failed, clf.manifest.data)


def _versions() -> dict:
    import cv2

    return {
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "paho-mqtt": getattr(mqtt, "__version__", None) or _dist_version("paho-mqtt"),
    }


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def format_bench(r: dict) -> str:
    b1, full, paced = r["bare"]["batch1"], r["station"]["full_speed"], r["station"]["paced"]
    alone = r["station"]["without_mqtt"]
    bn = r["bare"][next(k for k in r["bare"] if k.startswith("batch") and k != "batch1")]
    par = r["bare"]["parallel"]
    lines = [
        f"{'':32} {'fps':>10} {'p50 ms':>9} {'p99 ms':>9}",
        f"{'bare ORT, batch 1':32} {b1['throughput_fps']:>10} {b1['latency_ms']['p50']:>9} {b1['latency_ms']['p99']:>9}",
        f"{'bare ORT, batch ' + str(bn['batch']):32} {bn['throughput_fps']:>10} {bn['latency_ms']['p50']:>9} {bn['latency_ms']['p99']:>9}",
        f"{'bare ORT, same, after station':32} {r['bare']['batch' + str(bn['batch']) + '_after_station']['throughput_fps']:>10}   (drift {r['bare']['drift']:+.1%}; the ratio uses the mean)",
        f"{'bare ORT, ' + str(par['workers']) + ' workers x batch ' + str(par['batch']):32} {par['throughput_fps']:>10}",
        f"{'station, full speed':32} {full['throughput_fps']:>10} {full['e2e_latency_ms']['p50']:>9} {full['e2e_latency_ms']['p99']:>9}",
        f"{'station without MQTT (decided)':32} {alone['throughput_fps']:>10} {alone['e2e_latency_ms']['p50']:>9} {alone['e2e_latency_ms']['p99']:>9}",
        f"{'station, paced ' + str(paced['rate_fps']) + ' fps (e2e)':32} {paced['throughput_fps']:>10} {paced['e2e_latency_ms']['p50']:>9} {paced['e2e_latency_ms']['p99']:>9}",
        f"station/bare throughput {r['ratios']['station_over_bare_throughput']} "
        f"(vs the same parallelism: {r['ratios']['station_over_bare_parallel_throughput']}; "
        f"without MQTT: {r['ratios']['station_without_mqtt_over_bare_throughput']}, MQTT "
        f"{r['ratios']['mqtt_us_per_part']} µs/part); "
        f"e2e p99 - bare p99 {r['ratios']['e2e_p99_minus_bare_p99_ms']} ms; "
        f"ORT/Keras {r['ratios']['ort_over_keras_batch1']}",
        "stage p50/p99 ms (paced): "
        + ", ".join(f"{k} {v['p50']}/{v['p99']}" for k, v in paced["stage_latency_ms"].items()),
        "stage p50/p99 ms (full speed): "
        + ", ".join(f"{k} {v['p50']}/{v['p99']}" for k, v in full["stage_latency_ms"].items())
        + f"; mean batch {full['mean_batch']}",
    ]
    if r.get("accuracy"):
        lines.append(
            f"on the bench's {r['accuracy']['parts']} parts: {accuracy_line(r['accuracy'])}"
        )
    return "\n".join(lines)
