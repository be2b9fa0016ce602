"""``python -m inspector.spc.bench --faults``: the SPC service end to end, under faults.

A seeded stream of verdicts from four stations (2 % rejects, two injected shifts) is published
at a steady rate to a real Mosquitto (persistent sessions, as deploy/mosquitto) and stored by
the service: once cleanly, then again while the database is unavailable twice for 30 s and the
broker restarts once. SQLite is made unavailable by another connection holding its write lock
(a backup, a vacuum, a stuck tool); PostgreSQL (``--store postgresql``, a throwaway server
from the local binaries) is stopped and started. Reported: published, stored, distinct keys,
verdicts counted by the charts, the alarms of each run (the faulted run must raise every
alarm of the clean one), /health while the store was away, and the service's resident
memory (start, peak, end).

Why one module: the broker, the database outages, the publishing process and the measurements
run on one timeline and make one report.
"""

from __future__ import annotations

import glob
import json
import logging
import multiprocessing as mp
import os
import random
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)
STATIONS = 4
TOPIC = "bench/{station}/verdict"


# -- the stream --------------------------------------------------------------------------------
def stream(n: int, seed: int = 7, t0: float = 1.7e9):
    """(topic, payload) of ``n`` verdicts; the reject rate is 2 %, 4 % on st2 for the parts
    40-60 % of the way in, 8 % on st3 for 70-75 %. Times are the stream's own, from ``t0``
    (100 parts/s): the same in every run, so the runs' alarms compare."""
    rng = np.random.default_rng(seed)
    u = rng.random(n)
    for i in range(n):
        station = f"st{i % STATIONS}"
        p = 0.02
        if station == "st2" and 0.4 * n <= i < 0.6 * n:
            p = 0.04
        if station == "st3" and 0.7 * n <= i < 0.75 * n:
            p = 0.08
        fail = bool(u[i] < p)
        t = t0 + i * 0.01
        payload = {
            "schema": 1,
            "station": station,
            "part_id": f"P{i}",
            "seq": i + 1,
            "result": "fail" if fail else "pass",
            "reason": "defect" if fail else "ok",
            "class": "crack" if fail else "good",
            "scores": {"crack": 0.9 if fail else 0.05},
            "threshold": {"crack": 0.5},
            "model_id": "m@1",
            "t_trigger": t,
            "t_capture": t,
            "t_verdict": t + 0.02,
            "deadline": t + 1,
            "latency_ms": {"e2e": 20.0},
            "detail": "",
            "frame": "",
        }
        yield TOPIC.format(station=station), json.dumps(payload).encode()


def _publisher(host, port, n, rate, seed, t0, sent, acked, stop) -> None:
    """A station in a process of its own: publishes the stream at ``rate`` per second, QoS 1;
    paho keeps what the broker has not acknowledged and sends it again after a restart."""
    import paho.mqtt.client as mqtt

    c = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id="spc-bench-station", protocol=mqtt.MQTTv5
    )
    c.max_queued_messages_set(0)
    c.max_inflight_messages_set(200)
    c.reconnect_delay_set(0.05, 0.5)

    def on_publish(*_a) -> None:
        acked.value += 1

    c.on_publish = on_publish
    c.connect(host, port, keepalive=10)
    c.loop_start()
    start = time.monotonic()
    for i, (topic, payload) in enumerate(stream(n, seed, t0)):
        if i % 50 == 0:
            ahead = start + i / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        c.publish(topic, payload, qos=1)
        sent.value = i + 1
    while acked.value < n and not stop.wait(0.1):
        pass
    c.loop_stop()
    c.disconnect()


# -- the broker and the databases ------------------------------------------------------------
def _free_port() -> int:
    """A free port below the ephemeral range (a reconnecting client could otherwise be handed
    the very port it connects to)."""
    for _ in range(100):
        port = random.randrange(20000, 30000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


def _wait_port(port: int, timeout: float = 15.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


class Broker:
    """Mosquitto with persistent sessions, a queue deep enough for a 30 s database outage."""

    def __init__(self, root: Path, queue: int) -> None:
        self.port = _free_port()
        self.dir = root / "mosquitto"
        self.dir.mkdir()
        user = "user root\n" if os.geteuid() == 0 else ""
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n{user}allow_anonymous true\npersistence true\n"
            f"persistence_location {self.dir}/\nmax_queued_messages {queue}\n"
        )
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        with open(self.dir / "log", "ab") as out:
            self.proc = subprocess.Popen([binary, "-c", str(self.conf)], stdout=out, stderr=out)
        _wait_port(self.port)

    def stop(self) -> None:
        """SIGTERM: Mosquitto saves its sessions and queues, as on a systemctl restart."""
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(15)
            self.proc = None


class SqliteOutage:
    """SQLite that cannot be written: another connection holds the write lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db: sqlite3.Connection | None = None

    def begin(self) -> None:
        self.db = sqlite3.connect(str(self.path), timeout=30, isolation_level=None)
        self.db.execute("BEGIN IMMEDIATE")

    def end(self) -> None:
        self.db.execute("ROLLBACK")
        self.db.close()


class Postgres:
    """A throwaway PostgreSQL from the local binaries; the outage stops and starts it."""

    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        ctl = found[-1] if found else shutil.which("pg_ctl")
        if not ctl:
            raise RuntimeError("--store postgresql needs PostgreSQL (apt-get install postgresql)")
        self.bin = Path(ctl).parent
        self.root = Path(tempfile.mkdtemp(prefix="spc-bench-pg-"))
        self.as_user = []
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            self.as_user = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.root, "postgres")
        self.port = _free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._run("initdb", "-D", str(self.root / "data"), "-U", "postgres", "-A", "trust")

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(
            [*self.as_user, str(self.bin / tool), *args], check=True, capture_output=True
        )

    def begin(self) -> None:
        self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "fast", "-w", "stop")

    def end(self) -> None:
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        log_file = str(self.root / "log")
        self._run(
            "pg_ctl", "-D", str(self.root / "data"), "-l", log_file, "-w", "-o", opts, "start"
        )
        _wait_port(self.port)

    def remove(self) -> None:
        subprocess.run(
            [
                *self.as_user,
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.root / "data"),
                "-m",
                "immediate",
                "stop",
            ],
            capture_output=True,
        )
        shutil.rmtree(self.root, ignore_errors=True)


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# -- one run ---------------------------------------------------------------------------------
def run_once(
    root: Path,
    store: str,
    verdicts: int,
    rate: float,
    faults: bool,
    outage_s: float = 30.0,
    seed: int = 7,
    t0: float = 1.7e9,
    timeout_s: float = 900.0,
) -> dict:
    """Publish the stream through a fresh broker into a fresh service; with ``faults``: the
    database away at 15 % and 60 % of the publishing time (``outage_s`` each), the broker
    restarted at 30 % (during the first outage, with messages held unacknowledged)."""
    from ..contract.mqtt import MqttSection
    from .config import SpcConfig, SpcHttpSection, StoreSection, SubscribeSection
    from .service import SpcService

    root.mkdir(parents=True)
    broker = Broker(root, queue=max(verdicts, 1000))
    broker.start()
    pg = Postgres() if store == "postgresql" else None
    if pg is not None:
        pg.end()  # start it
    url = pg.url if pg is not None else str(root / "spc.sqlite")
    cfg = SpcConfig(
        mqtt=MqttSection(
            host="127.0.0.1", port=broker.port, client_id="spc-bench", reconnect_max_s=0.5
        ),
        subscribe=SubscribeSection(verdicts=["bench/+/verdict"], gate_events=[], context=[]),
        store=StoreSection(url=url, retry_max_s=2.0),
        http=SpcHttpSection(enabled=False),
    )
    svc = SpcService(cfg)
    opened: list[tuple] = []
    board = svc.monitor.on_transition

    def on_transition(t) -> None:
        if t.cleared is None:
            a = t.alarm
            opened.append((a.station, a.chart, a.rule, round(a.since, 3)))
        board(t)

    svc.monitor.on_transition = on_transition
    svc.start()
    rss: list[tuple[float, float]] = []
    unhealthy: list[float] = []
    held: list[int] = [0]  # messages received and not yet stored, sampled each second
    events: list[tuple[float, str]] = []
    sampling = threading.Event()
    t_start = time.monotonic()

    def sample() -> None:
        while not sampling.wait(1.0):
            now = round(time.monotonic() - t_start, 1)
            rss.append((now, round(_rss_mb(), 1)))
            held.append(svc.ingest.unstored())
            if not svc.health()[0]:
                unhealthy.append(now)

    rss.append((0.0, round(_rss_mb(), 1)))
    threading.Thread(target=sample, name="spc-bench-rss", daemon=True).start()
    ctx = mp.get_context("spawn")
    sent, acked, stop = ctx.Value("q", 0, lock=False), ctx.Value("q", 0, lock=False), ctx.Event()
    pub = ctx.Process(
        target=_publisher,
        args=("127.0.0.1", broker.port, verdicts, rate, seed, t0, sent, acked, stop),
        daemon=True,
    )
    pub.start()
    outage = pg if pg is not None else SqliteOutage(Path(url))
    duration = verdicts / rate
    plan = []
    if faults:
        plan = [
            (0.15 * duration, "database away", outage.begin),
            (0.15 * duration + outage_s, "database back", outage.end),
            (0.3 * duration, "broker restart", lambda: (broker.stop(), broker.start())),
            (0.6 * duration, "database away", outage.begin),
            (0.6 * duration + outage_s, "database back", outage.end),
        ]
    try:
        for at, what, act in sorted(plan, key=lambda p: p[0]):
            time.sleep(max(0.0, at - (time.monotonic() - t_start)))
            events.append((round(time.monotonic() - t_start, 1), what))
            log.info("bench: %s", what)
            act()
        end = time.monotonic() + timeout_s
        while time.monotonic() < end and not (
            sent.value == verdicts and svc.store.count() >= verdicts and svc.ingest.idle()
        ):
            time.sleep(0.5)
        stored_at = round(time.monotonic() - t_start, 1)
        time.sleep(2.0)  # anything late (a redelivery) would show now
        stop.set()
        pub.join(30)
        sampling.set()
        rss.append((round(time.monotonic() - t_start, 1), round(_rss_mb(), 1)))
        keys = set()
        for st in range(STATIONS):
            keys |= {(f"st{st}", k[0]) for k in svc.store.keys(f"st{st}")}
        svc.monitor.flush()  # the stream has ended: the verdicts still waiting are counted
        charted = svc.monitor.counted()
        c = svc.ingest.counts
        out = {
            "store": store,
            "faults": [{"at_s": at, "what": what} for at, what in events],
            "published": sent.value,
            "acknowledged_by_broker": acked.value,
            "stored": svc.store.count(),
            "distinct_keys": len(keys),
            "missing": verdicts - len(keys),
            "counted_by_charts": charted,
            "redeliveries_absorbed": c.duplicates,
            "set_aside_for_redelivery": c.set_aside,
            "connections_renewed": c.renewals,
            "late_to_the_charts": svc.monitor.late(),
            "dead_letters": svc.store.count("dead_letters"),
            "failed_write_transactions": c.write_failures,
            "unhealthy_s": len(unhealthy),
            "held_unstored_peak": max(held),
            "max_unacked": cfg.subscribe.max_unacked,
            "all_stored_after_s": stored_at,
            "publishing_s": round(duration, 1),
            "alarms_opened": sorted(opened),
            "rss_mb": {
                "start": rss[0][1],
                "peak": max(v for _, v in rss),
                "end": rss[-1][1],
                "samples_every_5_s": [v for t, v in rss if int(t) % 5 == 0][:200],
            },
        }
    finally:
        stop.set()
        if pub.is_alive():
            pub.terminate()
        sampling.set()
        svc.stop()
        broker.stop()
        if pg is not None:
            pg.remove()
    return out


def _child(results, *args) -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        results.put(run_once(*args))
    except BaseException as exc:
        log.exception("the run failed")
        results.put({"error": repr(exc)})


def _in_process(*args) -> dict:
    """``run_once`` in a fresh process: its resident memory is the service's alone."""
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    proc = ctx.Process(target=_child, args=(results, *args))
    proc.start()
    out = results.get()
    proc.join()
    if "error" in out:
        raise RuntimeError(f"the benchmark run failed: {out['error']}")
    return out


def run_faults(
    verdicts: int = 100_000,
    rate: float = 1000.0,
    outage_s: float = 30.0,
    stores: tuple[str, ...] = ("sqlite",),
) -> dict:
    """A clean run and a faulted run of the same seeded stream, per store; the comparison."""
    import platform

    t = time.perf_counter()
    # the stream's times: yesterday, within the store's retention (older verdicts are pruned)
    t0 = float(int(time.time()) // 86400 * 86400 - 86400)
    runs = {}
    with tempfile.TemporaryDirectory(prefix="spc-bench-faults-") as tmp:
        for store in stores:
            clean = _in_process(
                Path(tmp) / f"{store}-clean", store, verdicts, rate, False, outage_s, 7, t0
            )
            faulted = _in_process(
                Path(tmp) / f"{store}-faults", store, verdicts, rate, True, outage_s, 7, t0
            )
            missed = sorted(
                set(map(tuple, clean["alarms_opened"])) - set(map(tuple, faulted["alarms_opened"]))
            )
            runs[store] = {
                "stored_equals_published": faulted["stored"] == faulted["published"] == verdicts,
                "duplicate_rows": faulted["stored"] - faulted["distinct_keys"],
                "counted_twice_by_charts": faulted["counted_by_charts"] - faulted["distinct_keys"],
                "clean_alarms": len(clean["alarms_opened"]),
                "faulted_alarms": len(faulted["alarms_opened"]),
                "clean_alarms_missed_under_faults": missed,
                "rss_mb": {k: faulted["rss_mb"][k] for k in ("start", "peak", "end")},
                "rss_mb_clean_run": {k: clean["rss_mb"][k] for k in ("start", "peak", "end")},
                "rss_peak_over_clean_run_mb": round(
                    faulted["rss_mb"]["peak"] - clean["rss_mb"]["peak"], 1
                ),
                "unhealthy_s": faulted["unhealthy_s"],
                "held_unstored_peak": faulted["held_unstored_peak"],
                "held_unstored_cap": 2 * faulted["max_unacked"],
                "clean": clean,
                "faults": faulted,
            }
    return {
        "what": "python -m inspector.spc.bench --faults",
        "stream": {
            "verdicts": verdicts,
            "stations": STATIONS,
            "rate_per_s": rate,
            "seed": 7,
            "shifts": "st2 2 % -> 4 % for 40-60 % of the stream, st3 -> 8 % for 70-75 %",
        },
        "faults": f"database unavailable for {outage_s:g} s at 15 % and 60 % of the publishing "
        "time (SQLite: another connection holds the write lock; PostgreSQL: pg_ctl stop/start), "
        "the broker restarted (SIGTERM, persistent sessions) at 30 %, during the first outage; "
        "each run in a fresh process (its resident memory is the service's)",
        "runs": runs,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "seconds": round(time.perf_counter() - t, 1),
    }
