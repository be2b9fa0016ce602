"""The Sparkplug B edge node as a plant's SCADA sees it: a host application written from the
specification (tests/sparkplug_host.py) decodes every BIRTH, DATA and DEATH against real
Mosquitto; the node in-process with a stand-in station, and as part of ``inspector run``."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace

import pytest

from inspector.contract.mqtt import MqttSection
from inspector.contract.records import Reason, Verdict
from inspector.plant.sparkplug.config import SparkplugSection
from inspector.plant.sparkplug.node import SparkplugView
from inspector.station.link import Handlers

from .sparkplug_host import BOOLEAN, DATETIME, DOUBLE, INT64, STRING, UINT32, UINT64, Host

GROUP = "line-1"


def verdict(i: int, result: str = "pass", reason: Reason = Reason.OK, e2e: float = 5.0):
    now = time.time()
    return Verdict(
        part_id=f"P-{i}",
        seq=i,
        result=result,
        reason=reason,
        label="good" if result == "pass" else "defect",
        scores={"good": 0.9, "defect": 0.1} if result == "pass" else {"good": 0.2, "defect": 0.8},
        thresholds={"defect": 0.5},
        model_id="model-a@0123456789ab",
        t_trigger=now - e2e / 1000,
        t_capture=now - e2e / 1000,
        t_verdict=now,
        deadline=now + 1.0,
        deadline_mono=time.monotonic() + 1.0,
        latency_ms={"e2e": e2e},
    )


STATUS = {
    "state": "online",
    "model_id": "model-a@0123456789ab",
    "anomaly_model_id": None,
    "model": {"path": "/models/a.onnx", "shadow": None, "last_change": None},
    "camera": "ok",
    "detail": "",
    "quality": {"problems": [], "measures": {"focus": 120.0, "mean": 101.5}},
}


class Station:
    """What the node needs of a station: its status, and the one command path."""

    def __init__(self) -> None:
        self.commands: list[bytes] = []
        self.answer = {"outcome": "swapped", "reason": "", "model_id": "model-b@fedcba987654"}

    def handlers(self) -> Handlers:
        return Handlers(status=lambda: dict(STATUS), command=self._command)

    def _command(self, payload: bytes, reply) -> None:
        self.commands.append(payload)
        reply(dict(self.answer))


@pytest.fixture(autouse=True)
def _state_directory(tmp_path, monkeypatch):
    """Nodes keep their bdSeq in the state directory (systemd's $STATE_DIRECTORY): here the
    test's folder, not the home directory."""
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))


@pytest.fixture
def node_factory(broker, tmp_path):
    """Edge nodes of one test; they keep their bdSeq in the test's folder (a fresh count)."""
    made = []

    def make(**settings) -> tuple[SparkplugView, Station]:
        settings = {"report_interval_s": 0.05, "state_file": tmp_path / "bdseq.json", **settings}
        section = SparkplugSection(group_id=GROUP, **settings)
        mqtt_cfg = MqttSection(host=broker.host, port=broker.port, keepalive_s=2)
        view = SparkplugView(section, "st-1", mqtt_cfg)
        station = Station()
        made.append(view)
        return view, station

    yield make
    for v in made:
        v.stop()


@pytest.fixture
def host(broker):
    h = Host(broker, GROUP, host_id="scada-1")
    yield h
    h.close()


def test_births_carry_every_metric_with_its_datatype(node_factory, host):
    view, station = node_factory()
    view.start(station.handlers())
    nbirth = host.wait("NBIRTH")[0]
    dbirth = host.wait("DBIRTH")[0]
    assert (nbirth.node, dbirth.node, dbirth.device) == ("st-1", "st-1", "vision")
    assert nbirth.metrics["bdSeq"] == (INT64, 0)
    assert nbirth.metrics["Node Info/Station"] == (STRING, "st-1")
    d = dbirth.metrics
    assert d["Health/State"] == (STRING, "online")
    assert d["Camera/State"] == (STRING, "ok")
    assert d["Model/Id"] == (STRING, "model-a@0123456789ab")
    assert d["Model/Name"] == (STRING, "model-a")
    assert d["Model/Version"] == (STRING, "0123456789ab")
    assert d["Model/Anomaly Id"] == (STRING, None)  # is_null: no anomaly model
    for reason in Reason:
        assert d[f"Verdicts/By Reason/{reason.value}"] == (UINT64, 0)
    assert d["Verdicts/Total"] == (UINT64, 0)
    assert d["Counters/Since"][0] == DATETIME
    assert d["Last Verdict/Part Id"] == (STRING, None)  # no part yet
    assert d["Last Verdict/Score"] == (DOUBLE, None)
    assert d["Latency/p99 ms"] == (DOUBLE, None)
    assert d["Latency/Window"] == (UINT32, 0)
    assert d["Quality/focus"] == (DOUBLE, 120.0)
    assert d["Quality/Problem Count"] == (UINT32, 0)
    assert d["Commands/Reset Counters"] == (BOOLEAN, False)
    assert d["Commands/Promote Model"] == (STRING, "")
    assert not host.problems, host.problems


def test_a_cameras_counters_are_metrics_of_their_own(node_factory, host):
    """A GenICam station's camera_stats (status) reach the plant: counters as Int64, measures
    as Double (null until measured), the camera's identity as strings; a counter that moves is
    sent as data, a counter that appears later comes with a new birth."""
    view, station = node_factory()
    camera = {
        "frames": 120,
        "lost": 0,
        "incomplete": 2,
        "clock_offset_s": None,
        "clock_jitter_ms": 0.4,
        "temperature_c": 41,
        "link_speed": "1000 Mb/s",
        "camera": {"vendor": "Aravis", "model": "Fake", "serial": "CAM-1"},
    }
    status = {**STATUS, "camera_stats": camera}
    view.start(Handlers(status=lambda: json.loads(json.dumps(status)), command=station._command))
    d = host.wait("DBIRTH")[0].metrics
    assert d["Camera/Frames"] == (INT64, 120) and d["Camera/Incomplete"] == (INT64, 2)
    assert d["Camera/Clock Offset S"] == (DOUBLE, None)
    assert d["Camera/Clock Jitter Ms"] == (DOUBLE, pytest.approx(0.4))
    assert d["Camera/Temperature C"] == (DOUBLE, 41.0)
    assert d["Camera/Link Speed"] == (STRING, "1000 Mb/s")
    assert d["Camera/Info/Serial"] == (STRING, "CAM-1")

    view.status({**status, "camera_stats": {**camera, "frames": 180, "lost": 1}})
    assert host.wait_value("Camera/Frames", 180) and host.current("Camera/Lost") == 1
    births = len(host.of("DBIRTH"))
    grown = {**camera, "frames": 181, "stream_n_resent_packets": 7}
    view.status({**status, "camera_stats": grown})
    assert host.wait_value("Camera/Stream N Resent Packets", 7)
    assert len(host.of("DBIRTH")) == births + 1, "a new metric comes with a new birth"
    assert not host.problems, host.problems[:5]


def test_data_by_exception_seq_wraps_and_ndeath_matches_the_birth(node_factory, host):
    view, station = node_factory(report_interval_s=0.005)
    view.start(station.handlers())
    assert host.wait("DBIRTH")
    i = 0
    end = time.monotonic() + 60
    while len(host.of("DDATA")) < 300 and time.monotonic() < end:  # > 256: seq wraps
        i += 1
        view.verdict(verdict(i, e2e=5.0 + i % 7))
        time.sleep(0.008)
    assert len(host.of("DDATA")) >= 300
    fails = 0
    for j in range(3):  # counts by reason reach the host
        view.verdict(verdict(i + 1 + j, "fail", Reason.DEFECT, e2e=9.0))
        fails += 1
    total = i + fails
    assert host.wait_value("Verdicts/Total", total)
    assert host.current("Verdicts/By Reason/defect") == fails
    assert host.current("Verdicts/Fail") == fails
    assert host.current("Last Verdict/Part Id") == f"P-{total}"
    assert host.current("Last Verdict/Result") == "fail"
    assert host.current("Last Verdict/Score") == pytest.approx(0.8)
    assert 5.0 <= host.current("Latency/p50 ms") <= 11.0
    seqs = [m.seq for m in host.messages if m.seq is not None]
    assert 255 in seqs and seqs.count(0) >= 2  # wrapped: 254, 255, 0, 1
    nbirth = host.of("NBIRTH")[-1]
    view.stop()
    ddeath = host.wait("DDEATH")
    ndeath = host.wait("NDEATH")
    assert ddeath and ndeath
    assert ndeath[0].metrics["bdSeq"] == nbirth.metrics["bdSeq"]
    assert not host.problems, host.problems[:5]


def test_quiet_station_sends_nothing_and_small_latency_moves_stay_in_the_deadband(
    node_factory, host
):
    view, station = node_factory(deadband_latency_ms=2.0)
    view.start(station.handlers())
    assert host.wait("DBIRTH")
    for i in range(20):
        view.verdict(verdict(i, e2e=10.0))
    assert host.wait_value("Verdicts/Total", 20)
    n = len(host.of("DDATA"))
    time.sleep(0.5)
    assert len(host.of("DDATA")) == n  # nothing changed, nothing sent
    view.verdict(verdict(21, e2e=10.5))  # p50 stays within 2 ms: counts go, latency does not
    assert host.wait_value("Verdicts/Total", 21)
    last = host.of("DDATA")[-1].metrics
    assert "Latency/p50 ms" not in last and "Latency/p99 ms" not in last
    for i in range(40):
        view.verdict(verdict(100 + i, e2e=30.0))
    assert host.wait_value("Latency/p50 ms", 30.0)
    assert not host.problems, host.problems


def test_rebirth_on_request_keeps_bdseq_and_restarts_seq(node_factory, host):
    view, station = node_factory()
    view.start(station.handlers())
    first = host.wait("NBIRTH")[0]
    assert host.wait("DBIRTH")
    for i in range(5):
        view.verdict(verdict(i))
    assert host.wait_value("Verdicts/Total", 5)
    host.ncmd("st-1", {"Node Control/Rebirth": (BOOLEAN, True)})
    births = host.wait("NBIRTH", 2)
    assert len(births) == 2
    assert births[1].metrics["bdSeq"] == first.metrics["bdSeq"]  # same session
    dbirths = host.wait("DBIRTH", 2)
    assert dbirths[1].seq == 1
    assert dbirths[1].metrics["Verdicts/Total"] == (UINT64, 5)  # the figures, not zeros
    assert not host.problems, host.problems


def test_dcmd_reset_and_promote_and_nothing_else(node_factory, host, caplog):
    view, station = node_factory()
    view.start(station.handlers())
    assert host.wait("DBIRTH")
    for i in range(4):
        view.verdict(verdict(i, "fail", Reason.DEFECT))
    assert host.wait_value("Verdicts/Total", 4)
    caplog.set_level(logging.WARNING, logger="inspector.plant.sparkplug")

    host.dcmd("st-1", "vision", {"Commands/Reset Counters": (BOOLEAN, True)})
    assert host.wait_value("Verdicts/Total", 0)
    assert host.current("Verdicts/By Reason/defect") == 0
    assert host.current("Commands/Last Result") == "counters reset"

    host.dcmd("st-1", "vision", {"Commands/Promote Model": (STRING, "models/b.onnx")})
    assert host.wait_value(
        "Commands/Last Result", "promote models/b.onnx: swapped (model-b@fedcba987654)"
    )
    assert station.commands == [b'{"action": "promote", "path": "models/b.onnx"}']

    # what a plant may not do: refused, logged, the station untouched
    host.dcmd("st-1", "vision", {"Health/State": (STRING, "online")})
    assert host.wait_value("Commands/Last Result", "refused: Health/State is not writable")
    host.dcmd("st-1", "vision", {"Commands/Promote Model": (BOOLEAN, True)})
    assert host.wait_value(
        "Commands/Last Result", "refused: Commands/Promote Model is wrong datatype"
    )
    host.c.publish(f"spBv1.0/{GROUP}/DCMD/st-1/vision", b"\xff\x00not protobuf", qos=0)
    assert host.wait_value(
        "Commands/Last Result", "refused: not a Sparkplug B payload (DecodeError)"
    )
    host.ncmd("st-1", {"Node Control/Reboot": (BOOLEAN, True)})
    host.c.publish(f"spBv1.0/{GROUP}/NCMD/st-1", b"\x0a\xff", qos=0)
    time.sleep(0.3)
    assert len(station.commands) == 1
    assert len(host.of("NBIRTH")) == 1  # no rebirth, no new session
    text = caplog.text
    assert "Health/State" in text and "Node Control/Reboot" in text and "NCMD ignored" in text
    # still alive: a real request still works
    host.ncmd("st-1", {"Node Control/Rebirth": (BOOLEAN, True)})
    assert len(host.wait("NBIRTH", 2)) == 2
    assert not host.problems, host.problems


def test_dcmd_promotes_a_model_by_its_id(node_factory, host, tmp_path):
    """A SCADA knows models by the id the station reports (Model/Id): the file beside the live
    model with that content is promoted through the one path; an unknown id is refused."""
    import hashlib

    models = tmp_path / "models"
    models.mkdir()
    (models / "a.onnx").write_bytes(b"model a")
    (models / "b.onnx").write_bytes(b"model b")
    digest = hashlib.sha256(b"model b").hexdigest()[:12]
    status = {**STATUS, "model": {**STATUS["model"], "path": str(models / "a.onnx")}}
    view, station = node_factory()
    view.start(Handlers(status=lambda: dict(status), command=station._command))
    assert host.wait("DBIRTH")

    host.dcmd("st-1", "vision", {"Commands/Promote Model": (STRING, f"model-b@{digest}")})
    assert host.wait_value(
        "Commands/Last Result",
        f"promote {models / 'b.onnx'}: swapped (model-b@fedcba987654)",
    )
    assert json.loads(station.commands[-1]) == {
        "action": "promote",
        "path": str(models / "b.onnx"),
    }
    host.dcmd("st-1", "vision", {"Commands/Promote Model": (STRING, "model-c@0123456789ab")})
    assert host.wait_value(
        "Commands/Last Result",
        f"refused: no model file in {models} with id model-c@0123456789ab",
    )
    assert len(station.commands) == 1
    assert not host.problems, host.problems


def test_waits_for_the_primary_host_and_leaves_when_it_goes_offline(node_factory, broker):
    scada = Host(broker, GROUP, host_id="scada-1")
    try:
        view, station = node_factory(primary_host_id="scada-1")
        view.start(station.handlers())
        assert view.connected.wait(5)
        time.sleep(0.5)
        assert not scada.of("NBIRTH")  # the host has not said it is online
        t0 = int(time.time() * 1000)
        scada.state(True, t0)
        first = scada.wait("NBIRTH")
        assert first and first[0].metrics["bdSeq"][1] == 0
        scada.state(False, t0 - 5000)  # older than what the node knows: ignored
        time.sleep(0.4)
        assert not scada.of("NDEATH")
        scada.state(False, t0 + 1)
        death = scada.wait("NDEATH")
        assert death and death[0].metrics["bdSeq"] == (INT64, 0)
        time.sleep(0.5)
        assert len(scada.of("NBIRTH")) == 1  # reconnected, waiting again
        scada.state(True, t0 + 2)
        births = scada.wait("NBIRTH", 2)
        assert len(births) == 2 and births[1].metrics["bdSeq"] == (INT64, 1)
        assert not scada.problems, scada.problems
    finally:
        scada.c.publish("spBv1.0/STATE/scada-1", b"", qos=1, retain=True)
        scada.close()


def test_broker_restart_starts_a_new_session_with_the_next_bdseq(node_factory, host, broker):
    view, station = node_factory()
    view.start(station.handlers())
    assert host.wait("NBIRTH")
    host.close()
    broker.restart(down_s=0.5)
    again = Host(broker, GROUP)
    try:
        births = again.wait("NBIRTH", timeout=15)
        assert births and births[0].metrics["bdSeq"] == (INT64, 1)
        assert again.wait("DBIRTH")
    finally:
        again.close()


def test_bdseq_goes_on_across_restarts_of_the_node(node_factory, host, tmp_path, caplog):
    """Spec 3.0: each CONNECT's bdSeq is one more than the previous one's, also when the
    process restarted (a new view reading the same file), 255 -> 0; a file that cannot be
    read starts the count again at 0 with a warning, and never stops the node."""
    state = tmp_path / "state" / "spb.json"

    def session() -> int:
        view, station = node_factory(state_file=state)
        births, deaths = len(host.of("NBIRTH")), len(host.of("NDEATH"))
        view.start(station.handlers())
        birth = host.wait("NBIRTH", births + 1)[births]
        view.stop()  # a clean stop: NDEATH with the same bdSeq
        assert len(host.wait("NDEATH", deaths + 1)) == deaths + 1
        return birth.metrics["bdSeq"][1]

    assert session() == 0
    assert json.loads(state.read_text()) == {"bdSeq": 0}
    assert session() == 1  # a new process goes on from the file
    assert session() == 2
    state.write_text('{"bdSeq": 255}')
    assert session() == 0  # 255 -> 0
    state.write_text("not json")
    with caplog.at_level(logging.WARNING, logger="inspector.plant.sparkplug"):
        assert session() == 0
    assert "unreadable" in caplog.text
    assert json.loads(state.read_text()) == {"bdSeq": 0}
    assert host.problems == []  # every NDEATH matched its NBIRTH


def test_default_bdseq_file_is_in_the_state_directory(monkeypatch, tmp_path):
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    view = SparkplugView(SparkplugSection(group_id="line 3"), "st/1", MqttSection())
    assert view.bdseq_store.path == tmp_path / "sparkplug-line_3-st_1.json"


def test_config_refuses_topic_characters_and_bad_intervals(tmp_path, model_path, parts_dir, broker):
    from inspector.errors import ConfigError
    from inspector.station.config import load_config

    from .conftest import station_yaml

    path = tmp_path / "station.yaml"
    extra = 'plant: {sparkplug: {group_id: "a/b", report_interval_s: 0, device_id: "#"}}\n'
    path.write_text(station_yaml(model_path, parts_dir, broker, extra=extra))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert "plant.sparkplug.group_id" in text
    assert "plant.sparkplug.report_interval_s" in text
    assert "plant.sparkplug.device_id" in text
    good = "plant: {sparkplug: {group_id: line-1, primary_host_id: scada-1}}\n"
    path.write_text(station_yaml(model_path, parts_dir, broker, extra=good))
    cfg = load_config(path)
    assert cfg.plant.sparkplug.group_id == "line-1"
    assert replace(cfg.plant.sparkplug, username="x").own_login


def test_the_documented_config_is_valid(tmp_path, model_path, parts_dir, broker):
    from pathlib import Path

    from inspector.station.config import load_config

    from .conftest import station_yaml

    doc = (Path(__file__).resolve().parents[1] / "docs" / "sparkplug.md").read_text()
    snippet = doc.split("```yaml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "station.yaml"
    path.write_text(station_yaml(model_path, parts_dir, broker, extra=snippet))
    s = load_config(path).plant.sparkplug
    assert (s.group_id, s.edge_node_id, s.primary_host_id) == ("line-3", "station-7", "scada-1")


def test_the_station_hands_over_a_verdict_without_doing_the_nodes_work():
    """What the classifier worker pays for the plant's view: a queue append, not the
    figures, the payload or MQTT (those are the node thread's)."""
    from inspector.plant.sparkplug.bench import measure

    cost = measure(rate=2000.0)
    assert cost["station_thread_us_per_verdict"] < 20.0, cost
    assert cost["station_thread_us_per_verdict"] < cost["node_thread_us_per_report"], cost


def test_a_broker_that_refuses_the_node_costs_the_station_nothing(caplog):
    from inspector.lab.broker import free_port

    section = SparkplugSection(group_id=GROUP, queue_size=100)
    view = SparkplugView(section, "st-1", MqttSection(port=free_port(), reconnect_max_s=0.2))
    caplog.set_level(logging.DEBUG, logger="inspector.plant.sparkplug")
    view.start(Station().handlers())
    try:
        t0 = time.perf_counter()
        for i in range(20000):
            view.verdict(verdict(i))
        assert time.perf_counter() - t0 < 2.0  # the worker's side: an append, never a wait
        time.sleep(1.0)
        assert not view.connected.is_set()
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1 and "cannot reach broker" in warnings[0].getMessage()
    finally:
        t0 = time.monotonic()
        view.stop()
        assert time.monotonic() - t0 < 3.0
    assert view.figures.counts["Total"] + view.dropped == 20000


def test_mqtt_311_broker_session(broker):
    """A plant broker on MQTT 3.1.1 (mqtt.protocol): the same births and death."""
    section = SparkplugSection(group_id=GROUP, report_interval_s=0.05)
    cfg = MqttSection(host=broker.host, port=broker.port, protocol="3.1.1")
    view = SparkplugView(section, "st-311", cfg)
    host = Host(broker, GROUP)
    try:
        view.start(Station().handlers())
        assert host.wait("DBIRTH")
        view.verdict(verdict(1))
        assert host.wait_value("Verdicts/Total", 1)
        view.stop()
        assert host.wait("NDEATH")
        assert not host.problems, host.problems
    finally:
        view.stop()
        host.close()
