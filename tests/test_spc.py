"""The SPC service on the verdict stream through a real Mosquitto: a broker restart mid-stream
loses and duplicates nothing, a missing broker is said at once, and the reject chart and
alarms are retained for the dashboard."""

from __future__ import annotations

import json
import threading
import time

import paho.mqtt.client as mqtt
import pytest

from .spc_helpers import publisher, spc_yaml, verdict
from .waiting import wait

# -- the service through a real Mosquitto that restarts mid-stream -----------------------------


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
