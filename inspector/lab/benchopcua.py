"""What the plant's views cost the line, and how fast results reach an MES: ``inspector run``
with the OPC UA server and the Sparkplug B node on (``plant.opcua`` + ``plant.sparkplug``;
``--opcua-only``: the server alone) and with neither, side by side in one run.

    python -m inspector.lab.benchopcua --out docs/bench-opcua.json

The station runs as on the line PC: its own process (``inspector run``), the demo model, a
folder of parts in free-run, a real Mosquitto. This process is the reject gate (it
subscribes to the verdicts); with OPC UA on, an MES in a third process (an asyncua client
over Basic256Sha256 SignAndEncrypt, logged in as an operator) subscribes to the
VisionSystem's ``ResultReady`` events at publishing interval 0 and records, per event, its
arrival minus the event's Time (the moment the station decided the part): the result-event
latency. Two loads: flat out (throughput: classified parts per second) and paced at
``--paced-fps`` (the verdict's end-to-end latency as the station measured it, trigger to
arrival at the gate, and the event latency). Each load runs ``--reps`` times each way,
alternating the order so drift on a shared machine falls on both; the JSON keeps every run
and the medians. Numbers on a shared 2-core machine are noisy: read the medians and spread.

Why one module: the runs share one set-up (configs, the gate, the MES in its process, the
CPU accounting) and one report; split, each part would repeat it.
"""

from __future__ import annotations

import argparse
import asyncio
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
from .broker import Mosquitto, free_port
from .demo import prepare

CLASSIFIED = ("ok", "defect", "uncertain")
CLIENT_URI = "urn:defect-inspector:bench:mes"


def _yaml(
    model: Path, parts: Path, port: int, rate: float, opcua: dict | None, sparkplug: bool = False
) -> str:
    plant = ""
    if opcua is not None:
        plant = (
            "plant:\n  opcua:\n"
            f"    endpoint: opc.tcp://127.0.0.1:{opcua['port']}/inspector/\n"
            f'    pki_dir: "{opcua["pki"]}"\n'
            f'    users_file: "{opcua["users"]}"\n'
        )
        if sparkplug:  # both plant views on: the Sparkplug B node beside the server
            plant += "  sparkplug: {group_id: bench}\n"
    return station_yaml(model, parts, port, rate, plant)


class Gate:
    """The verdicts, with their arrival times."""

    def __init__(self, port: int) -> None:
        self.verdicts: list[tuple[float, bytes]] = []
        self._lock = threading.Lock()
        ready = threading.Event()
        self.c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id="bench-gate", protocol=mqtt.MQTTv5
        )
        self.c.on_message = self._on_message
        self.c.on_subscribe = lambda *a, **k: ready.set()
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        self.c.subscribe("inspector/bench/verdict", 1)
        if not ready.wait(10):
            raise RuntimeError("the bench's subscriber could not subscribe")

    def _on_message(self, _c, _u, msg) -> None:
        with self._lock:
            self.verdicts.append((time.time(), msg.payload))

    def take(self) -> list[tuple[float, bytes]]:
        with self._lock:
            v, self.verdicts = self.verdicts, []
        return v

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


# -- the MES (its own process) -------------------------------------------------------------
async def _mes(endpoint: str, cert: str, key: str, out: str) -> None:
    from asyncua import Client, ua
    from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256

    os.nice(19)  # the MES is another machine on a line: here it must not take the station's CPU
    got: list[tuple[float, float]] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)

    class Handler:
        def event_notification(self, event):
            got.append((time.time(), event.Time.timestamp()))

    # a server below the station's CPU priority answers slowly while the station runs flat
    # out: long timeouts, and no probe that calls the connection lost after 1 s
    client = Client(endpoint, timeout=60, watchdog_intervall=60.0)
    # asyncua's client takes a subscription at publishing interval 0 for lost after 1 s
    # without a publish response and recreates it, losing events; a measuring client
    # keeps its subscription and counts what arrives, however late
    client._stale_check_interval = 1e9
    client.application_uri = CLIENT_URI
    await client.set_security(
        SecurityPolicyBasic256Sha256, cert, key, mode=ua.MessageSecurityMode.SignAndEncrypt
    )
    client.set_user("mes")
    client.set_password("bench")
    async with client:
        mv = await client.get_namespace_index("http://opcfoundation.org/UA/MachineVision")
        ours = await client.get_namespace_index("urn:defect-inspector:opcua")
        system = await client.nodes.objects.get_child([f"{ours}:bench"])
        sub = await client.create_subscription(0, Handler())
        await sub.subscribe_events(system, client.get_node(ua.NodeId(1024, mv)))
        print("subscribed", flush=True)
        await stop.wait()
    Path(out).write_text(json.dumps(got))


def _start_mes(endpoint: str, pki: dict, out: Path) -> subprocess.Popen:
    code = (
        "import asyncio; from inspector.lab.benchopcua import _mes; "
        f"asyncio.run(_mes({endpoint!r}, {str(pki['cert'])!r}, {str(pki['key'])!r}, "
        f"{str(out)!r}))"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    if proc.stdout.readline().strip() != "subscribed":
        proc.kill()
        raise RuntimeError("the bench's MES client could not subscribe")
    return proc


def _client_pki(work: Path) -> dict:
    from asyncua.crypto.cert_gen import setup_self_signed_certificate
    from cryptography.x509.oid import ExtendedKeyUsageOID

    cert, key = work / "mes-cert.der", work / "mes-key.pem"
    asyncio.run(
        setup_self_signed_certificate(
            key,
            cert,
            CLIENT_URI,
            "localhost",
            [ExtendedKeyUsageOID.CLIENT_AUTH],
            {"commonName": "mes"},
        )
    )
    users = work / "opcua-users.yaml"
    subprocess.run(  # the users file as a plant writes it (its command, not its code)
        [sys.executable, "-m", "inspector.plant.opcua.users", "add", str(users), "mes", "operator"],
        input="bench\n",
        text=True,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return {"cert": cert, "key": key, "users": users, "pki": work / "server-pki"}


# -- one run -------------------------------------------------------------------------------
def one_run(
    cfg: Path, gate: Gate, warmup_s: float, seconds: float, mes: tuple | None = None
) -> dict:
    """``inspector run cfg``; verdicts (and events) of the ``seconds`` after ``warmup_s``."""
    gate.take()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "inspector.cli", "run", str(cfg)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    client = None
    events_file = None
    try:
        end = time.monotonic() + 90
        while not gate.verdicts:
            if proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"the station gave no verdict: {proc.stderr.read()[-2000:]!r}")
            time.sleep(0.05)
        if mes is not None:
            endpoint, pki, events_file = mes
            client = _start_mes(endpoint, pki, events_file)
        time.sleep(warmup_s)
        gate.take()
        kids = _children(proc.pid)
        cpu0 = {"station": cpu_s(proc.pid), **{f"child-{k}": cpu_s(k) for k in kids}}
        t0 = time.time()
        time.sleep(seconds)
        t1 = time.time()
        verdicts = gate.take()
        cpu1 = {"station": cpu_s(proc.pid), **{f"child-{k}": cpu_s(k) for k in kids}}
    finally:
        for p in filter(None, (client, proc)):  # the MES first: it writes what it received
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    e2e, arrival, classified = [], [], 0
    ids = set()
    for t, raw in verdicts:
        v = json.loads(raw)
        if v["reason"] in CLASSIFIED:
            classified += 1
        ids.add((v["part_id"], v["seq"]))
        e2e.append(v["latency_ms"]["e2e"])
        arrival.append((t - v["t_trigger"]) * 1000.0)
    if not e2e:
        raise RuntimeError("no verdicts in the measured window")
    out = {
        "verdicts": len(e2e),
        "throughput_fps": round(classified / (t1 - t0), 1),
        "e2e_ms": {"p50": pct(e2e, 50), "p99": pct(e2e, 99)},
        "trigger_to_gate_ms": {"p50": pct(arrival, 50), "p99": pct(arrival, 99)},
    }
    spent = {k: cpu1[k] - cpu0[k] for k in cpu0 if cpu0[k] is not None and cpu1[k] is not None}
    # CPU per verdict at the gate, by process: the station's own (every thread), and the
    # OPC UA server's process (the station's child) where there is one
    out["cpu_us_per_verdict"] = {
        "station_process": round(spent.pop("station", 0.0) / len(e2e) * 1e6, 1),
        "opcua_server_process": round(sum(spent.values()) / len(e2e) * 1e6, 1) if spent else None,
    }
    if events_file is not None:
        got = json.loads(Path(events_file).read_text())
        window = [(r, e) for r, e in got if t0 <= e <= t1]
        lat = [(r - e) * 1000.0 for r, e in window]
        out["result_events"] = {
            "received": len(window),
            "per_verdict_at_gate": round(len(window) / len(e2e), 4),
            "latency_ms": {"p50": pct(lat, 50), "p99": pct(lat, 99), "max": pct(lat, 100)}
            if lat
            else None,
        }
    return out


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def run(
    work: Path,
    reps: int,
    seconds: float,
    warmup_s: float,
    paced_fps: float,
    model: Path | None,
    sparkplug: bool = True,
) -> dict:
    """``sparkplug``: the 'on' runs have the Sparkplug B node too (both plant views)."""
    prepare(work / "demo", parts=60)
    parts = work / "demo" / "parts"
    model = model or work / "demo" / "model" / "demo.onnx"
    pki = _client_pki(work)
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
                    mes = None
                    opcua = None
                    if mode == "on":
                        port = free_port()
                        opcua = {**pki, "port": port}
                        endpoint = f"opc.tcp://127.0.0.1:{port}/inspector/"
                        mes = (endpoint, pki, work / f"events-{load}-{rep}.json")
                    cfg.write_text(_yaml(model, parts, broker.port, rate, opcua, sparkplug))
                    runs[mode].append(one_run(cfg, gate, warmup_s, seconds, mes))
            out["runs"][load] = runs
    finally:
        gate.close()
        broker.stop()
    flat, paced = out["runs"]["flat_out"], out["runs"]["paced"]
    summary: dict = {}
    for mode in ("off", "on"):
        summary[mode] = {
            "flat_out_throughput_fps_median": median_at(flat[mode], "throughput_fps"),
            "flat_out_e2e_p99_ms_median": median_at(flat[mode], "e2e_ms", "p99"),
            "paced_e2e_p50_ms_median": median_at(paced[mode], "e2e_ms", "p50"),
            "paced_e2e_p99_ms_median": median_at(paced[mode], "e2e_ms", "p99"),
            "paced_trigger_to_gate_p99_ms_median": median_at(
                paced[mode], "trigger_to_gate_ms", "p99"
            ),
            "flat_out_station_cpu_us_per_verdict_median": median_at(
                flat[mode], "cpu_us_per_verdict", "station_process"
            ),
            "paced_station_cpu_us_per_verdict_median": median_at(
                paced[mode], "cpu_us_per_verdict", "station_process"
            ),
        }
    for load, runs in (("flat_out", flat["on"]), ("paced", paced["on"])):
        server_cpu = [r for r in runs if r["cpu_us_per_verdict"]["opcua_server_process"]]
        if server_cpu:
            summary["on"][f"{load}_opcua_server_cpu_us_per_verdict_median"] = median_at(
                server_cpu, "cpu_us_per_verdict", "opcua_server_process"
            )
    off, on = summary["off"], summary["on"]
    summary["throughput_cost_pct"] = round(
        100.0 * (1 - on["flat_out_throughput_fps_median"] / off["flat_out_throughput_fps_median"]),
        2,
    )
    summary["station_cpu_cost_pct_flat_out"] = round(
        100.0
        * (
            on["flat_out_station_cpu_us_per_verdict_median"]
            / off["flat_out_station_cpu_us_per_verdict_median"]
            - 1
        ),
        2,
    )
    summary["paced_e2e_p99_cost_ms"] = round(
        on["paced_e2e_p99_ms_median"] - off["paced_e2e_p99_ms_median"], 3
    )
    summary["paced_trigger_to_gate_p99_cost_ms"] = round(
        on["paced_trigger_to_gate_p99_ms_median"] - off["paced_trigger_to_gate_p99_ms_median"], 3
    )
    for load, runs in (("paced", paced["on"]), ("flat_out", flat["on"])):
        ev = [r["result_events"] for r in runs]
        timed = [e for e in ev if e["latency_ms"]]
        summary[f"{load}_result_event_p99_ms_median"] = (
            median_at(timed, "latency_ms", "p99") if timed else None
        )
        summary[f"{load}_result_events_per_verdict_median"] = median_at(ev, "per_verdict_at_gate")
    summary["goal"] = (
        "throughput cost <= 2 %, verdict p99 cost <= 1 ms, result-event latency p99 <= 20 ms"
    )
    out["summary"] = summary
    out["setup"] = {
        "reps_each_way": reps,
        "seconds_measured": seconds,
        "warmup_s": warmup_s,
        "paced_fps": paced_fps,
        "model": model.name,
        "opcua": "Basic256Sha256 SignAndEncrypt, one MES session (operator) subscribed to "
        "ResultReady at publishing interval 0, in its own process",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "command": "python -m inspector.lab.benchopcua",
    }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m inspector.lab.benchopcua")
    p.add_argument("--model", type=Path, default=None, help="default: the demo model")
    p.add_argument("--reps", type=int, default=3, help="runs each way, per load")
    p.add_argument("--seconds", type=float, default=8.0, help="measured time of one run")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds after the MES subscribed")
    p.add_argument("--paced-fps", type=float, default=100.0)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument(
        "--opcua-only",
        action="store_true",
        help="'on' runs the OPC UA server alone (default: with the Sparkplug B node beside it)",
    )
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        r = run(Path(tmp), a.reps, a.seconds, a.warmup, a.paced_fps, a.model, not a.opcua_only)
    r["plant_views_on"] = ["opcua"] if a.opcua_only else ["opcua", "sparkplug"]
    print(json.dumps(r["summary"], indent=2))
    if a.out:
        a.out.write_text(json.dumps(r, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
