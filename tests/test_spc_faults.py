"""SPC ingest under faults, through a real Mosquitto: a store that cannot be written (a SQLite
lock held by another process's connection, a PostgreSQL server stopped), a broker restart, a
poison verdict, a message the store itself refuses, redelivered context, and a flood of hostile
messages. Nothing is lost, nothing counted twice, and the service stays up."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from inspector.lab.broker import Mosquitto, free_port, wait_for_port
from inspector.spc.config import load_spc_config
from inspector.spc.service import SpcService

from .pg import pg_bin
from .spc_helpers import publisher, verdict
from .waiting import wait

# a service thread that dies (metrics and retention stop with it) fails the test
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")


def config(tmp_path, broker, url="spc.sqlite", extra="", subscribe="", charts=""):
    path = tmp_path / "spc.yaml"
    path.write_text(
        f"mqtt: {{host: {broker.host}, port: {broker.port}, reconnect_max_s: 0.3, prefix: plant}}\n"
        f"subscribe: {{context: [plant/line1/lot, plant/line1/temperature]{subscribe}}}\n"
        f"store: {{url: '{url}', batch: 200, retry_max_s: 0.5{extra}}}\n"
        f"charts: {{subgroup_parts: 50, baseline_subgroups: 4, per_class: false{charts}}}\n"
        "http: {port: 0}\n"
    )
    return load_spc_config(path)


def charted(svc, station="st1") -> int:
    """Parts the station's charts have counted."""
    st = svc.monitor.stations.get(station)
    if st is None:
        return 0
    groups = list(st.baseline) + list(st.closed)
    return sum(g.parts for g in groups) + (st.current.parts if st.current else 0)


def http_health(svc) -> tuple[int, dict]:
    url = f"http://127.0.0.1:{svc.http.port}/health"
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


class SqliteLock:
    """Another process's connection holding the write lock of the SQLite store."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(str(path), timeout=10, isolation_level=None)

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")
        return self

    def __exit__(self, *exc):
        self.db.execute("ROLLBACK")
        self.db.close()


def retained_store_state(broker, topic="plant/spc/alarm") -> str | None:
    """The ``store`` field of the retained alarm message, as a late subscriber sees it."""
    got: list[dict] = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    sub.on_message = lambda _c, _u, msg: got.append(json.loads(msg.payload))
    sub.connect(broker.host, broker.port)
    sub.loop_start()
    try:
        sub.subscribe(topic, qos=1)
        wait(lambda: got, 3)
    finally:
        sub.loop_stop()
        sub.disconnect()
    return got[-1].get("store") if got else None


# -- a failed write is retried, not dropped ---------------------------------------------------
def test_ten_published_with_one_failed_write_are_ten_stored(tmp_path, broker):
    cfg = config(tmp_path, broker, extra=", busy_timeout_s: 0.2")
    svc = SpcService(cfg)
    svc.start()
    pub = publisher(broker)
    try:
        pub.publish("inspector/st1/verdict", verdict(1), qos=1)
        assert wait(lambda: svc.store.count() == 1)
        assert http_health(svc)[0] == 200
        with SqliteLock(Path(cfg.store.url)):
            for seq in range(2, 11):
                pub.publish("inspector/st1/verdict", verdict(seq), qos=1)
            assert wait(lambda: not svc.ingest.writable)
            code, detail = http_health(svc)
            assert code == 503 and detail["store"].startswith("cannot write"), detail
            assert detail["unstored"] == 9
            assert (retained_store_state(broker) or "").startswith("cannot write")
        assert wait(lambda: svc.store.count() == 10), svc.health()
        assert {k[0] for k in svc.store.keys("st1")} == set(range(1, 11))
        assert wait(lambda: charted(svc) == 10), "the charts count every stored verdict"
        code, detail = http_health(svc)
        assert code == 200 and detail["store"] == "ok" and detail["unstored"] == 0
        assert wait(lambda: retained_store_state(broker) == "ok")
    finally:
        pub.loop_stop()
        svc.stop()


# -- one poison verdict -----------------------------------------------------------------------
def test_a_poison_verdict_is_a_dead_letter_and_never_returns(tmp_path, broker):
    cfg = config(tmp_path, broker)
    svc = SpcService(cfg)
    svc.start()
    pub = publisher(broker)
    try:
        for seq in range(1, 10):
            pub.publish("inspector/st1/verdict", verdict(seq), qos=1)
            if seq == 5:
                poison = json.loads(verdict(99))
                poison["seq"] = 2**64
                pub.publish("inspector/st1/verdict", json.dumps(poison), qos=1)
        assert wait(lambda: svc.store.count() == 9 and svc.store.count("dead_letters") == 1)
        assert wait(lambda: charted(svc) == 9), "the good verdicts are counted by the charts"
        assert svc.ingest.counts.malformed == 1 and svc.health()[0]
        svc.stop()

        svc = SpcService(cfg)  # a new connection to the same session: nothing left to deliver
        svc.start()
        pub.publish("inspector/st1/verdict", verdict(10), qos=1)
        assert wait(lambda: svc.store.count() == 10)
        time.sleep(0.5)
        assert svc.store.count("dead_letters") == 1, "the poison does not come back"
        assert svc.ingest.counts.malformed == 0
    finally:
        pub.loop_stop()
        svc.stop()


def test_a_message_the_store_refuses_is_found_and_kept_aside(tmp_path, broker):
    """A rule of the database (here a trigger a plant's DBA might add) refuses one verdict
    of a batch: the others are stored and counted, the refused one is a dead letter."""
    cfg = config(tmp_path, broker)
    svc = SpcService(cfg)
    db = sqlite3.connect(cfg.store.url)
    db.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON verdicts WHEN NEW.part_id = 'p7' "
        "BEGIN SELECT RAISE(ABORT, 'part p7 is refused by the plant rule'); END"
    )
    db.commit()
    db.close()
    svc.start()
    pub = publisher(broker)
    try:
        svc.ingest.connected.wait(5)
        for seq in range(1, 21):
            pub.publish("inspector/st1/verdict", verdict(seq), qos=1)
        assert wait(lambda: svc.store.count() == 19 and svc.store.count("dead_letters") == 1)
        assert wait(lambda: charted(svc) == 19)
        assert 7 not in {k[0] for k in svc.store.keys("st1")}
        assert svc.ingest.counts.refused == 1 and svc.health()[0]
    finally:
        pub.loop_stop()
        svc.stop()


# -- redelivery ---------------------------------------------------------------------------------
def test_redelivered_context_verdicts_and_dead_letters_are_stored_once(tmp_path):
    """The store is locked when a context message, a verdict and an unreadable message arrive;
    the broker restarts (its persistent session re-delivers them); then the lock goes."""
    broker = Mosquitto(persistence=True).start()
    cfg = config(tmp_path, broker)
    svc = SpcService(cfg)
    svc.start()
    pub = publisher(broker)
    try:
        pub.publish("plant/line1/temperature", "20.5", qos=1, retain=True)
        assert wait(lambda: svc.store.count("context") == 1)
        with SqliteLock(Path(cfg.store.url)):
            pub.publish("plant/line1/lot", "L1", qos=1).wait_for_publish(5)
            pub.publish("inspector/st1/verdict", verdict(1), qos=1).wait_for_publish(5)
            pub.publish("inspector/st1/verdict", b"\xff not JSON", qos=1).wait_for_publish(5)
            assert wait(lambda: svc.ingest.unstored() >= 3)
            broker.stop()
            broker.start()
            assert wait(lambda: svc.ingest.connected.is_set() and pub.is_connected())
            time.sleep(0.5)  # the redelivered copies arrive
        assert wait(lambda: svc.store.count() == 1 and svc.ingest.idle())
        time.sleep(0.5)
        assert svc.ingest.counts.duplicates >= 1, "the verdict was re-delivered"
        rows = svc.store.context(0, time.time() + 1)
        assert sorted(v for _t, _ts, v in rows) == ["20.5", "L1"], rows
        assert svc.store.count("context") == 2
        assert svc.store.count("dead_letters") == 1, "a re-delivered dead letter is kept once"
    finally:
        pub.loop_stop()
        svc.stop()
        broker.stop()


def test_what_the_service_holds_is_bounded_and_the_backlog_comes_in_order(tmp_path):
    """While the store is locked the broker restarts, and the restored session gets the
    broker's whole queue at once (Mosquitto sends it whatever the Receive Maximum): the service
    holds at most twice subscribe.max_unacked, leaves the rest with the broker, and has it
    re-delivered once it has stored what it held; the charts see the verdicts in the order
    they were published (arrival order alone: charts.reorder_parts 0)."""
    broker = Mosquitto(persistence=True).start()
    cfg = config(
        tmp_path,
        broker,
        extra=", busy_timeout_s: 0.2",
        subscribe=", max_unacked: 20",
        charts=", reorder_parts: 0",
    )
    svc = SpcService(cfg)
    svc.start()
    pub = publisher(broker)
    held: list[int] = []
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.wait(0.005):
            held.append(svc.ingest.unstored())

    threading.Thread(target=sample, daemon=True).start()
    n = 600
    try:
        with SqliteLock(Path(cfg.store.url)):
            for seq in range(1, n + 1):
                pub.publish("inspector/st1/verdict", verdict(seq, seq % 7 == 0), qos=1)
            assert wait(lambda: svc.ingest.unstored() >= 20)
            broker.stop()
            broker.start()
            assert wait(lambda: svc.ingest.connected.is_set() and pub.is_connected())
            time.sleep(1.0)  # the broker's backlog arrives
        assert wait(lambda: svc.store.count() == n, 30), svc.health()
        assert {k[0] for k in svc.store.keys("st1")} == set(range(1, n + 1))
        assert wait(lambda: charted(svc) == n)
        sampling.set()
        assert max(held) <= 40, f"held {max(held)} messages unstored"
        assert svc.ingest.counts.set_aside > 0, "the broker sent more than it was asked for"
        st = svc.monitor.stations["st1"]
        assert st.late == 0, "no verdict came after newer ones"
        groups = [(g.parts, g.rejects) for g in list(st.baseline) + list(st.closed)]
        assert groups == [(50, sum(s % 7 == 0 for s in range(i, i + 50))) for i in range(1, n, 50)]
    finally:
        sampling.set()
        pub.loop_stop()
        svc.stop()
        broker.stop()


# -- the fault test: PostgreSQL stopped, the broker restarted, 1,000 hostile messages -------
class Postgres:
    """A throwaway PostgreSQL server that the test can stop and start."""

    def __init__(self) -> None:
        self.bindir = pg_bin()
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.tmp = Path(tempfile.mkdtemp(prefix="spc-pg-faults-"))
        if os.geteuid() == 0:
            shutil.chown(self.tmp, "postgres")
        self.data = self.tmp / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._ctl(
            [str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust"]
        )

    def _ctl(self, args) -> None:
        subprocess.run([*self.as_user, *args], check=True, capture_output=True)

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.tmp} -c listen_addresses=127.0.0.1 -c fsync=off"
        ctl = str(self.bindir / "pg_ctl")
        self._ctl(
            [ctl, "-D", str(self.data), "-l", str(self.tmp / "log"), "-w", "-o", opts, "start"]
        )
        assert wait_for_port("127.0.0.1", self.port)

    def stop(self) -> None:
        self._ctl([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"])

    def remove(self) -> None:
        subprocess.run(
            [
                *self.as_user,
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.data),
                "-m",
                "immediate",
                "stop",
            ],
            capture_output=True,
        )
        shutil.rmtree(self.tmp, ignore_errors=True)


def hostile(i: int) -> tuple[str, bytes]:
    """The i-th of a set of messages no station sends: wrong types, numbers beyond any column,
    NaN and infinity, deep JSON, 1 MB payloads, NUL characters, not JSON at all."""
    good = json.loads(verdict(100_000 + i))
    kind = i % 20
    topic = "inspector/st1/verdict" if i % 5 else "inspector/st1/gate"
    if kind == 0:
        return topic, b"x" * (1024 * 1024)
    if kind == 1:
        return topic, ("[" * 30_000 + "]" * 30_000).encode()
    if kind == 2:
        return topic, ('{"a":' * 20_000 + "1" + "}" * 20_000).encode()
    if kind == 3:
        return topic, b'{"seq": NaN, "t_verdict": Infinity}'
    if kind == 4:
        return topic, b"\xff\xfe garbage"
    if kind == 5:
        return topic, b"[]"
    if kind == 6:
        return topic, b"1" * 5000  # an integer of 5,000 digits
    field, value = [
        ("seq", 2**64),
        ("seq", -(2**63) - 1),
        ("seq", "12"),
        ("seq", 1.5),
        ("seq", True),
        ("t_verdict", 1e308 * 10),
        ("t_verdict", float("nan")),
        ("result", 3),
        ("part_id", "p\x00x"),
        ("part_id", "p" * 10_000),
        ("station", {"nested": [1, 2, 3]}),
        ("reason", None),
        ("model_id", ["m"]),
    ][kind - 7]
    good[field] = value
    return topic, json.dumps(good).encode()  # NaN and Infinity as JSON's usual extension


def test_fault_broker_restart_store_outage_and_hostile_flood(tmp_path):
    if pg_bin() is None:
        pytest.skip("PostgreSQL is not installed (apt-get install -y postgresql)")
    pytest.importorskip("psycopg", reason="pip install 'psycopg[binary]' (the spc extra)")
    pg = Postgres()
    pg.start()
    broker = Mosquitto(persistence=True).start()
    svc = SpcService(config(tmp_path, broker, url=pg.url))
    svc.start()
    pub = publisher(broker)
    seqs = iter(range(1, 2001))
    bad = iter(range(1000))

    def burst(verdicts: int, hostiles: int) -> None:
        for _ in range(verdicts):
            pub.publish("inspector/st1/verdict", verdict(next(seqs)), qos=1)
        for _ in range(hostiles):
            pub.publish(*hostile(next(bad)), qos=1)

    try:
        assert svc.ingest.connected.wait(5)
        burst(500, 250)
        assert wait(lambda: svc.store.count() >= 400)
        pg.stop()  # the database goes away with the stream still coming
        burst(500, 250)
        assert wait(lambda: http_health(svc)[0] == 503)
        assert "cannot write" in http_health(svc)[1]["store"]
        broker.stop()  # and the broker restarts while the database is away
        broker.start()
        assert wait(lambda: svc.ingest.connected.is_set() and pub.is_connected())
        burst(500, 250)
        time.sleep(1.0)
        assert http_health(svc)[0] == 503, "unhealthy for as long as it cannot write"
        pg.start()
        burst(500, 250)
        missing = lambda: sorted(set(range(1, 2001)) - {k[0] for k in svc.store.keys("st1")})  # noqa: E731
        assert wait(lambda: svc.store.count() >= 2000, 40), missing()[:20]
        assert wait(lambda: svc.ingest.idle() and svc.store.count("dead_letters") >= 1000, 20)
        time.sleep(0.5)
        assert svc.store.count() == 2000 and missing() == [], "0 verdicts lost"
        assert wait(lambda: charted(svc) == 2000, 5), "every verdict counted by the charts"
        time.sleep(0.5)
        assert charted(svc) == 2000, "0 duplicates: every verdict counted once by the charts"
        assert svc.ingest.counts.malformed >= 1000, "every hostile message kept aside"
        code, detail = http_health(svc)
        assert code == 200 and detail["store"] == "ok", detail
        assert detail["write_failures"] >= 1
    finally:
        pub.loop_stop()
        svc.stop()
        broker.stop()
        pg.remove()
