"""SPC on the verdict stream: charts on hand-made sequences, the store (SQLite and a real
PostgreSQL), ingest through a real Mosquitto that restarts mid-stream, backfill, alarms, report."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import paho.mqtt.client as mqtt
import pytest

from inspector.errors import ConfigError
from inspector.spc import charts
from inspector.spc.alarms import AlarmBoard, context_changes
from inspector.spc.config import ChartsSection, load_spc_config
from inspector.spc.ingest import backfill
from inspector.spc.monitor import Monitor
from inspector.spc.store import DeadLetter, Store, VerdictRow

from .pg import postgres_url  # noqa: F401 (fixture)


def fired(z, rule, side="both"):
    return list(np.nonzero(charts.run_rules(np.array(z, float), (rule,), side)[rule])[0])


# -- charts: each rule fires exactly where it should ------------------------------------------
def test_rule_1_one_point_beyond_3_sigma():
    z = [0, 1, 3.1, 0, -3.2, 2.9]
    assert fired(z, "we1_beyond_3s") == [2, 4]
    assert fired(z, "we1_beyond_3s", side="upper") == [2]


def test_rule_2_two_of_three_beyond_2_sigma_same_side():
    z = [0, 2.5, 0, 2.1, 0, 0, 2.2, -2.3, 2.4, 0, -2.1, -2.2]
    # 1 & 3 complete a pattern at 3; 6 & 8 at 8 (7 is on the other side); 10 & 11 at 11
    assert fired(z, "we2_2of3_beyond_2s") == [3, 8, 11]
    assert fired(z, "we2_2of3_beyond_2s", side="upper") == [3, 8]


def test_rule_3_four_of_five_beyond_1_sigma():
    z = [1.5, 1.2, 0, 1.1, 1.3, 0, 0, 0]
    assert fired(z, "we3_4of5_beyond_1s") == [4]
    assert fired([1.5, 1.2, -1.3, 1.1, 0.2], "we3_4of5_beyond_1s") == []


def test_rule_4_eight_on_one_side_and_the_nelson_rules():
    assert fired([0.1] * 7 + [-0.1] + [0.2] * 8, "we4_8_same_side") == [15]
    assert fired([0.1] * 10, "we4_8_same_side") == [7, 8, 9]
    assert fired([0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.4], "n3_6_trend") == [5]
    alt = [(-1) ** i * 0.5 for i in range(14)]
    assert fired(alt, "n4_14_alternating") == [13]
    assert fired([0.2] * 15 + [1.5], "n7_15_within_1s") == [14]
    assert fired([1.5, -1.5] * 4 + [0], "n8_8_outside_1s") == [7]
    with pytest.raises(ValueError):
        charts.run_rules(np.zeros(3), ("nope",))


def test_binomial_z_keeps_the_3_sigma_tail_and_limits_follow_subgroup_size():
    # np = 4: 12 rejects is the first count beyond 3 sigma (chance 0.09 %), 11 is not
    z = charts.binomial_z(np.array([4, 11, 12]), np.array([200, 200, 200]), 0.02)
    assert abs(z[0]) < 0.2 and z[1] < 3 < z[2]
    assert charts.p_probability_limits(0.02, np.array([200]))[0] == pytest.approx(12 / 200)
    centre, lo, hi = charts.p_limits(0.02, np.array([200, 800]))
    assert hi[0] > hi[1] > centre[0] == 0.02 and lo[0] == 0
    u, _, uhi = charts.u_chart(np.array([2, 30]), np.array([100, 100]), 0.05)
    assert u[0] < uhi[0] and u[1] > uhi[1]


def test_ewma_and_cusum_find_a_small_sustained_shift():
    z = np.r_[np.zeros(20), np.full(20, 1.5)]
    sig = charts.evaluate(z)
    ooc = sig.out_of_control()
    first_ewma = int(np.argmax(ooc["ewma"]))
    first_cusum = int(np.argmax(ooc["cusum"]))
    assert 20 < first_ewma < 35 and 20 < first_cusum < 35
    assert not ooc["ewma"][:20].any() and not ooc["cusum"][:20].any()


# -- the monitor: an injected shift detected, then cleared ------------------------------------
def verdict_row(station, seq, fail, t0=1000.0, label="scratch"):
    """One stored verdict, part ``seq``, 0.1 s after the one before."""
    t = t0 + seq * 0.1
    return VerdictRow(
        station,
        seq,
        f"p{seq}",
        t,
        t,
        "fail" if fail else "pass",
        "defect" if fail else "ok",
        label if fail else "good",
        int(fail),
        "m@1",
    )


def rows(station, rates, n=200, seed=0, t0=1000.0, seq0=0, label="scratch"):
    rng = np.random.default_rng(seed)
    out, seq = [], seq0
    for p in rates:
        fails = set(rng.choice(n, rng.binomial(n, p), replace=False).tolist())
        for i in range(n):
            out.append(verdict_row(station, seq, i in fails, t0, label))
            seq += 1
    return out


def test_an_injected_shift_is_detected_and_cleared(tmp_path):
    store = Store(tmp_path / "spc.sqlite")
    published = []
    board = AlarmBoard(store, published.append, context_window_s=600)
    mon = Monitor(ChartsSection(baseline_subgroups=25, per_class=False), board.on_transition)
    store.add_context([("line/lot", 900.0, "A"), ("line/lot", 1890.0, "B")])
    mon.add(rows("s1", [0.02] * 45, seed=1))
    assert not board.active, "no alarm on an in-control process"
    mon.add(rows("s1", [0.08] * 10, seed=2, seq0=45 * 200))
    active = {a.rule for a in board.active.values()}
    assert active & {"ewma", "cusum", "we1_beyond_3s"}, active
    alarm = next(iter(board.active.values()))
    assert alarm.chart == "reject" and alarm.subgroups and alarm.since >= 1000 + 45 * 20 - 200
    assert any(c["topic"] == "line/lot" and c["to"] == "B" for c in alarm.context)
    retained = json.loads(published[-1])
    assert retained["active"] and retained["active"][0]["station"] == "s1"
    mon.add(rows("s1", [0.02] * 80, seed=3, seq0=55 * 200))
    assert not board.active, "cleared when back in control"
    assert json.loads(published[-1])["active"] == []
    history = store.alarms(0, 1e12)
    assert history and all(row[4] is not None for row in history)  # every alarm has cleared


def test_fail_safe_reasons_go_to_the_health_chart_not_the_reject_rate():
    mon = Monitor(ChartsSection(baseline_subgroups=5, per_class=False), lambda t: None)
    base = rows("s1", [0.02] * 10, seed=4)
    mon.add(base)
    t = base[-1].t_verdict
    timeouts = [
        VerdictRow("s1", 10_000 + i, f"t{i}", t + i, t + i, "fail", "timeout", None, 0, "m")
        for i in range(200)
    ]
    mon.add(timeouts)
    mon.flush()  # the newest verdicts wait for late ones until then (or charts.reorder_s)
    st = mon.stations["s1"]
    assert st.last["health"]["rate"] == 1.0 and st.last["reject"]["rate"] == 0.0
    assert ("health", "we1_beyond_3s") in st.active and ("reject", "we1_beyond_3s") not in st.active


def test_context_changes_lists_only_changes():
    rows_ = [("t", 1.0, "20"), ("t", 5.0, "20"), ("t", 6.0, "25"), ("lot", 7.0, "L2")]
    assert context_changes(rows_, 2.0) == [
        {"topic": "t", "ts": 6.0, "from": "20", "to": "25"},
        {"topic": "lot", "ts": 7.0, "from": None, "to": "L2"},
    ]


# -- the store ---------------------------------------------------------------------------------
def check_store(store: Store):
    assert store.schema_version() == 4
    batch = rows("a", [0.05] * 2, n=50)
    assert len(store.add_verdicts(batch)) == 100
    assert store.add_verdicts(batch[:10] + batch[-5:]) == [], "a redelivery counts once"
    again = VerdictRow("a", 0, "p0", 5000.0, 5000.0, "pass", "ok", None, 0, "m")
    assert len(store.add_verdicts([again])) == 1, "same seq and id, new trigger time: a new part"
    cols = store.verdicts("a")
    assert len(cols["seq"]) == 101 and np.all(np.diff(cols["t_verdict"]) >= 0)
    assert store.stations() == ["a"]
    store.add_context([("lot", 1.0, "x"), ("lot", 2.0, "y")])
    assert store.context(1.5, 3.0) == [("lot", 1.0, "x"), ("lot", 2.0, "y")]
    assert store.add_dead_letters([DeadLetter("a/verdict", 1.0, "verdict", "bad", b"\xff{")]) == 1
    assert store.prune(older_than_s=10, now=1100.0) == 103  # all but the 5000 s part
    assert store.count() == 1 and store.count("context") == 0


def test_sqlite_store_dedups_migrates_and_keeps_retention(tmp_path):
    store = Store(tmp_path / "x" / "spc.sqlite")
    check_store(store)
    store.close()
    assert Store(tmp_path / "x" / "spc.sqlite").migrate() == 4, "reopening migrates nothing"


def test_postgresql_store_same_schema(postgres_url):  # noqa: F811
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    store = Store(postgres_url)
    check_store(store)
    store.close()


# -- backfill ----------------------------------------------------------------------------------
def sidecar(seq, fail=False):
    return {
        "part_id": f"p{seq}",
        "seq": seq,
        "result": "fail" if fail else "pass",
        "reason": "defect" if fail else "ok",
        "class": "crack" if fail else "good",
        "scores": {"crack": 0.9 if fail else 0.1, "good": 0.1},
        "threshold": {"crack": 0.5},
        "model_id": "m@1",
        "t_trigger": 100.0 + seq,
        "t_capture": 100.0 + seq,
        "t_verdict": 100.1 + seq,
        "deadline": 101.0 + seq,
        "detail": "",
        "image": f"{seq}.png",
    }


def test_backfill_from_sidecars_counts_each_part_once(tmp_path):
    rec = tmp_path / "rec" / "2024-05-01"
    for seq in range(30):
        folder = rec / ("fail" if seq % 3 == 0 else "pass")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{seq}.json").write_text(json.dumps(sidecar(seq, seq % 3 == 0)))
    (rec / "fail" / "broken.json").write_text("{not json")
    store = Store(tmp_path / "spc.sqlite")
    new, bad = backfill(store, "st1", tmp_path / "rec")
    assert len(new) == 30 and bad == 1
    assert new[0].origin == "sidecar" and sum(r.defects for r in new) == 10
    assert backfill(store, "st1", tmp_path / "rec")[0] == [], "read twice, stored once"
    assert store.count() == 30


# -- config ------------------------------------------------------------------------------------
def test_bad_config_names_the_key_and_line(tmp_path):
    path = tmp_path / "spc.yaml"
    path.write_text(
        "charts:\n  rules: [we1_beyond_3s, sometimes]\n  subgroup_parts: 3\nstore:\n  nope: 1\n"
    )
    with pytest.raises(ConfigError) as err:
        load_spc_config(path)
    text = "\n".join(err.value.problems)
    assert "charts.rules: unknown rule 'sometimes'" in text
    assert "charts.subgroup_parts: must be at least 10" in text
    assert ":5: store.nope: unknown key" in text
    path.write_text("store: {url: data/spc.sqlite}\n")
    assert load_spc_config(path).store.url == str(tmp_path / "data" / "spc.sqlite")


# -- the service through a real Mosquitto that restarts mid-stream -----------------------------
def spc_yaml(tmp_path, broker, extra=""):
    path = tmp_path / "spc.yaml"
    path.write_text(
        f"mqtt: {{host: {broker.host}, port: {broker.port}, reconnect_max_s: 0.3, prefix: plant}}\n"
        f"subscribe: {{context: [plant/line1/lot]}}\n"
        f"store: {{url: spc.sqlite, batch: 200}}\n"
        f"charts: {{subgroup_parts: 50, baseline_subgroups: 4, per_class: false}}\n"
        f"http: {{port: 0}}\n{extra}"
    )
    return load_spc_config(path)


T0 = float(int(time.time()) - 86400)  # within the store's retention (the service prunes at start)


def verdict(seq, fail=False, station="st1"):
    t = T0 + seq
    return json.dumps(
        {
            "schema": 1,
            "station": station,
            "part_id": f"p{seq}",
            "seq": seq,
            "result": "fail" if fail else "pass",
            "reason": "defect" if fail else "ok",
            "class": "crack" if fail else "good",
            "scores": {},
            "threshold": {"crack": 0.5},
            "model_id": "m@1",
            "t_trigger": t,
            "t_capture": t,
            "t_verdict": t + 0.05,
            "deadline": t + 1,
            "latency_ms": {},
            "detail": "",
            "frame": "",
        }
    )


def publisher(broker):
    c = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id="fake-station", protocol=mqtt.MQTTv5
    )
    c.reconnect_delay_set(0.05, 0.2)
    c.max_queued_messages_set(0)
    c.connect(broker.host, broker.port, keepalive=5)
    c.loop_start()
    return c


def wait(cond, timeout=15.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def test_broker_restart_mid_stream_loses_and_duplicates_nothing(tmp_path):
    """The plant's broker keeps sessions across a restart (persistence, as
    deploy/mosquitto/mosquitto.conf); the station resends what it was not sure of."""
    from inspector.lab.broker import Mosquitto
    from inspector.spc.service import SpcService

    broker = Mosquitto(persistence=True).start()

    svc = SpcService(spc_yaml(tmp_path, broker))
    svc.start()
    assert svc.ingest.connected.wait(5)
    pub = publisher(broker)
    try:
        pub.publish("plant/line1/lot", "L1", qos=1).wait_for_publish(5)
        for seq in range(300):
            pub.publish("inspector/st1/verdict", verdict(seq, seq % 50 == 0), qos=1)
        pub.publish("inspector/st1/verdict", b"\xff garbage", qos=1)
        pub.publish("inspector/st1/gate", b'{"gate": 1}', qos=1)
        broker.stop()  # mid-stream: some of the 300 may not be through yet
        for seq in range(300, 600):  # published while the broker is down: the client queues
            pub.publish("inspector/st1/verdict", verdict(seq, seq % 50 == 0), qos=1)
        broker.start()
        assert wait(lambda: pub.is_connected() and svc.ingest.connected.is_set())
        for seq in range(250, 350):  # the station's outbox resends what it was not sure of
            pub.publish("inspector/st1/verdict", verdict(seq, seq % 50 == 0), qos=1)
        missing = lambda: sorted(set(range(600)) - {k[0] for k in svc.store.keys("st1")})  # noqa: E731
        assert wait(lambda: svc.store.count() >= 600), missing()
        time.sleep(0.5)
        assert svc.store.count() == 600
        assert {k[0] for k in svc.store.keys("st1")} == set(range(600))
        assert svc.ingest.counts.duplicates >= 100
        assert svc.store.count("dead_letters") == 2, "malformed messages are kept"
        assert svc.ingest.counts.malformed == 2
        assert svc.store.count("context") >= 1  # a redelivered repeat is not a change
        st = svc.monitor.stations["st1"]
        # 600 parts in subgroups of 50, each counted once (the newest after charts.reorder_s)
        assert wait(lambda: st.index == 12, 5), st.index
        assert st.late == 0, "the resent verdicts were counted in their own subgroups"
        ok, detail = svc.health()
        assert ok and detail["verdicts"] == 600
    finally:
        pub.loop_stop()
        svc.stop()
        broker.stop()


def test_no_broker_and_no_recordings_are_said_at_once_and_the_service_connects_when_it_can(
    tmp_path, caplog
):
    """A newcomer's SPC service with no broker on its port and a backfill folder that is not
    there: each said in the log at start (it said nothing, or "0 new verdicts"), then it
    connects once a broker answers on that port."""
    import logging

    from inspector.lab.broker import Mosquitto, free_port
    from inspector.spc.service import SpcService

    class Nowhere:
        host, port = "127.0.0.1", free_port()

    cfg = spc_yaml(
        tmp_path, Nowhere, extra=f'backfill: [{{station: st1, path: "{tmp_path / "rec"}"}}]\n'
    )
    caplog.set_level(logging.INFO, logger="inspector.spc")
    svc = SpcService(cfg)
    svc.start()
    broker = None
    try:
        said = lambda text: any(text in r.getMessage() for r in caplog.records)  # noqa: E731
        assert wait(lambda: said(f"cannot reach the MQTT broker at 127.0.0.1:{Nowhere.port}"), 5)
        assert said(f"backfill st1: {tmp_path / 'rec'} is not a folder")
        assert not svc.ingest.connected.is_set()
        assert not svc.health()[0], "healthy without a broker"
        broker = Mosquitto(port=Nowhere.port).start()
        assert svc.ingest.connected.wait(10)
        assert wait(lambda: said(f"reached the MQTT broker at 127.0.0.1:{Nowhere.port}"), 5)
    finally:
        svc.stop()
        if broker:
            broker.stop()


def test_the_reject_chart_is_retained_for_the_dashboard(tmp_path, broker):
    """Each closed subgroup updates the station's retained reject chart (the workbench's
    dashboard draws it): its points' rates are the subgroups' reject rates, with limits."""
    from inspector.spc.service import SpcService

    svc = SpcService(spc_yaml(tmp_path, broker))
    svc.start()
    pub = publisher(broker)
    got = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    sub.on_message = lambda _c, _u, msg: got.append((msg.retain, json.loads(msg.payload)))
    try:
        for s in range(6 * 50):  # six subgroups of 50 (four baseline), 1 in 25 rejected
            pub.publish("inspector/st1/verdict", verdict(s, s % 25 == 0), qos=1)
        assert wait(lambda: svc.monitor.counted() >= 300)
        time.sleep(1.5)  # the ticker publishes within a second
        sub.connect(broker.host, broker.port)
        sub.subscribe("plant/spc/chart/st1", qos=1)
        sub.loop_start()
        assert wait(lambda: got, 5), "a late subscriber gets the retained chart"
        retained, chart = got[-1]
        assert retained and chart["station"] == "st1" and chart["chart"] == "reject"
        assert [p["n"] for p in chart["points"]] == [50] * 6
        assert [p["rate"] for p in chart["points"]] == [0.04] * 6
        assert chart["center"] == pytest.approx(0.04)
        assert all(p["upper"] > 0.04 for p in chart["points"])
    finally:
        sub.loop_stop()
        sub.disconnect()
        pub.disconnect()
        svc.stop()


def test_alarm_is_retained_on_the_broker_and_cleared(tmp_path, broker):
    from inspector.spc.service import SpcService

    svc = SpcService(spc_yaml(tmp_path, broker))
    svc.start()
    pub = publisher(broker)
    got, lock = [], threading.Lock()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)

    def on_message(_c, _u, msg):
        with lock:
            got.append((msg.retain, json.loads(msg.payload)))

    sub.on_message = on_message
    try:
        seqs = iter(range(10_000))
        for _ in range(4 * 50):  # baseline: 1 in 50
            s = next(seqs)
            pub.publish("inspector/st1/verdict", verdict(s, s % 50 == 0), qos=1)
        for _ in range(2 * 50):  # a burst of rejects
            s = next(seqs)
            pub.publish("inspector/st1/verdict", verdict(s, s % 3 == 0), qos=1)
        assert wait(lambda: svc.monitor.active())
        sub.connect(broker.host, broker.port)
        sub.loop_start()

        def retained_alarm() -> bool:
            # subscribe afresh: the broker hands a new subscription the retained message (the
            # alarm may still be on its way when the monitor already knows of it)
            with lock:
                got.clear()
            sub.subscribe("plant/spc/alarm", qos=1)
            seen = wait(lambda: got, 2)
            sub.unsubscribe("plant/spc/alarm")
            with lock:
                return seen and any(r and m["active"] for r, m in got)

        assert wait(retained_alarm), "a late subscriber sees the retained alarm"
        with lock:
            first = next(m for r, m in got if r and m["active"])
        assert first["active"][0]["chart"] == "reject"
        sub.subscribe("plant/spc/alarm", qos=1)
        for _ in range(40 * 50):
            s = next(seqs)
            pub.publish("inspector/st1/verdict", verdict(s, s % 50 == 0), qos=1)
        assert wait(lambda: not svc.monitor.active(), 20)
        assert wait(lambda: got[-1][1]["active"] == [])
    finally:
        sub.loop_stop()
        pub.loop_stop()
        svc.stop()


# -- report --------------------------------------------------------------------------------------
def test_report_writes_an_html_page_with_charts(tmp_path):
    from inspector.spc.report import write_report

    store = Store(tmp_path / "spc.sqlite")
    store.add_verdicts(rows("s1", [0.02] * 30 + [0.06] * 10, seed=5))
    store.close()
    out = tmp_path / "report"
    page = write_report(tmp_path / "spc.sqlite", out, 0, 1e12, ChartsSection(baseline_subgroups=20))
    html = page.read_text()
    assert "s1" in html and "Pareto" in html
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert "s1-reject.png" in pngs and (out / "s1-reject.svg").is_file()


def test_alarm_history_the_store_cannot_take_waits_and_is_kept_in_order():
    from inspector.spc.monitor import Alarm, Transition

    class Store:
        def __init__(self):
            self.down, self.kept = True, []

        def context(self, *_a):
            return []

        def _write(self, *args):
            if self.down:
                raise OSError("database is locked")
            self.kept.append(args)

        open_alarm = clear_alarm = _write

    store, published = Store(), []
    board = AlarmBoard(store, published.append)
    alarm = Alarm("s1", "reject", "ewma", 10.0, [{"t_end": 12.0}], 3.5, 3.0)
    board.on_transition(Transition(alarm))
    board.on_transition(Transition(alarm, cleared=20.0))
    assert len(published) == 2 and store.kept == [], "published at once, kept later"
    store.down = False
    board.keep_waiting()
    assert [k[:3] for k in store.kept] == [("s1", "reject", "ewma")] * 2
    assert len(store.kept[0]) == 5 and store.kept[1][-1] == 20.0, "opened, then cleared"
