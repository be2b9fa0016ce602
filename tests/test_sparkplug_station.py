"""A real station with ``plant.sparkplug``: ``inspector run`` killed with SIGKILL leaves its
NDEATH; a DCMD promote changes the station's model through its one promotion path; on the
shipped locked-down broker only the SCADA user may send commands."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import replace
from types import SimpleNamespace

import pytest

from inspector.lab.modelkit import build_contrast_model
from inspector.plant.sparkplug.config import SparkplugSection
from inspector.plant.views import build_views

from .conftest import station_yaml
from .sparkplug_host import BOOLEAN, INT64, STRING, UINT64, Host, command
from .test_deploy import secure_broker, secure_station_config, tls_client  # noqa: F401

GROUP = "line-1"


@pytest.fixture(autouse=True)
def _state_directory(tmp_path, monkeypatch):
    """The node keeps its bdSeq in the state directory (systemd's $STATE_DIRECTORY): here the
    test's folder, not the home directory."""
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))


def test_sigkill_of_the_station_gives_its_ndeath_within_the_will_delay(
    tmp_path, model_path, parts_dir, broker
):
    keepalive = 2
    cfg = tmp_path / "station.yaml"
    cfg.write_text(
        station_yaml(model_path, parts_dir, broker, trigger="free-run", rate=20).replace(
            "reconnect_max_s: 0.3", f"reconnect_max_s: 0.3, keepalive_s: {keepalive}"
        )
        + f'recorder: {{path: "{tmp_path}/rec"}}\n'
        + f"plant: {{sparkplug: {{group_id: {GROUP}, report_interval_s: 0.2}}}}\n"
    )
    host = Host(broker, GROUP)
    proc = subprocess.Popen(
        [sys.executable, "-m", "inspector.cli", "run", str(cfg)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        birth = host.wait("NBIRTH", timeout=60)
        assert birth, proc.stderr.read() if proc.poll() is not None else "no NBIRTH"
        assert birth[0].node == "test"  # the station id
        assert host.wait("DBIRTH")
        assert host.wait_value("Health/State", "online", timeout=20)
        end = time.monotonic() + 20
        while (host.current("Verdicts/Total") or 0) < 5 and time.monotonic() < end:
            time.sleep(0.05)
        assert host.current("Verdicts/Total") >= 5  # the free-running station's parts
        assert host.current("Model/Id").startswith("contrast-demo@")
        proc.send_signal(signal.SIGKILL)
        t_kill = time.monotonic()
        death = host.wait("NDEATH", timeout=keepalive * 1.5 + 1)
        assert death, "no NDEATH"
        assert death[0].t - t_kill <= keepalive * 1.5
        assert death[0].metrics["bdSeq"] == birth[-1].metrics["bdSeq"]
        assert not host.problems, host.problems
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        host.close()


def test_dcmd_promote_changes_the_station_model(make_config, broker, station_factory, tmp_path):
    other = build_contrast_model(tmp_path / "models" / "b.onnx", size=32, name="model-b")
    cfg = make_config(trigger="free-run", rate=20)
    section = SparkplugSection(group_id=GROUP, report_interval_s=0.1)
    cfg = replace(cfg, plant=replace(cfg.plant, sparkplug=section))
    host = Host(broker, GROUP)
    try:
        station = station_factory(cfg, views=tuple(build_views(cfg.plant, "test", cfg.mqtt)))
        station.start()
        assert host.wait("DBIRTH", timeout=20)
        assert host.current("Model/Name") == "contrast-demo"
        host.dcmd("test", "vision", {"Commands/Promote Model": (STRING, str(other))})
        assert host.wait_value("Model/Name", "model-b", timeout=30), host.current("Model/Id")
        assert station.status_payload()["model_id"] == host.current("Model/Id")
        result = host.current("Commands/Last Result")
        assert result.startswith(f"promote {other}: swapped"), result
        # a model the station's acceptance refuses: refused, the live one stays
        wrong = build_contrast_model(tmp_path / "models" / "big.onnx", size=48, name="big")
        host.dcmd("test", "vision", {"Commands/Promote Model": (STRING, str(wrong))})
        end = time.monotonic() + 30
        while "refused" not in (host.current("Commands/Last Result") or ""):
            assert time.monotonic() < end, host.current("Commands/Last Result")
            time.sleep(0.05)
        assert station.status_payload()["model_id"].startswith("model-b@")
        end = time.monotonic() + 10
        while host.current("Last Verdict/Model Id") != host.current("Model/Id"):
            assert time.monotonic() < end
            time.sleep(0.05)  # the parts after the swap are decided by the new model
        assert not host.problems, host.problems
    finally:
        host.close()


@pytest.fixture
def secured(secure_broker, tmp_path, model_path, parts_dir):  # noqa: F811
    out, port, users = secure_broker
    cfg = secure_station_config(secure_broker, tmp_path, model_path, parts_dir)
    section = SparkplugSection(group_id=GROUP, report_interval_s=0.1)
    cfg = replace(cfg, station=replace(cfg.station, id="spb-acl"))
    cfg = replace(cfg, plant=replace(cfg.plant, sparkplug=section))
    where = SimpleNamespace(host="localhost", port=port)
    return cfg, where, out, users


def test_acl_lets_only_the_scada_user_command_the_node(secured, station_factory):
    cfg, where, out, users = secured
    scada = Host(where, GROUP, "scada", users["scada"], tls=out / "ca.crt")
    try:
        station = station_factory(cfg, views=tuple(build_views(cfg.plant, "spb-acl", cfg.mqtt)))
        station.start()
        births = scada.wait("NBIRTH", timeout=20)
        assert births, "the inspector user may not publish its NBIRTH"
        assert scada.wait("DBIRTH")
        dcmd = command({"Commands/Promote Model": (STRING, "/etc/passwd")})
        ncmd = command({"Node Control/Rebirth": (BOOLEAN, True)})
        for user in ("viewer", "plc", "gate", "admin", "inspector"):
            c, rc = tls_client(out, where.port, user, users[user], f"spb-forger-{user}")
            assert rc is not None and not rc.is_failure
            c.publish(f"spBv1.0/{GROUP}/DCMD/spb-acl/vision", dcmd, qos=1).wait_for_publish(5)
            c.publish(f"spBv1.0/{GROUP}/NCMD/spb-acl", ncmd, qos=1).wait_for_publish(5)
            c.loop_stop()
            c.disconnect()
        time.sleep(0.5)
        assert scada.current("Commands/Last Result") == ""  # no command reached the node
        assert len(scada.of("NBIRTH")) == 1
        # the control: the scada user may
        scada.ncmd("spb-acl", {"Node Control/Rebirth": (BOOLEAN, True)})
        assert len(scada.wait("NBIRTH", 2)) == 2
        scada.dcmd("spb-acl", "vision", {"Commands/Reset Counters": (BOOLEAN, True)})
        assert scada.wait_value("Commands/Last Result", "counters reset")
        assert scada.current("Verdicts/Total") == 0
        assert scada.of("NBIRTH")[0].metrics["bdSeq"][0] == INT64
        assert scada.of("DBIRTH")[0].metrics["Verdicts/Total"][0] == UINT64
        assert not scada.problems, scada.problems
    finally:
        scada.close()


def test_the_reject_gate_is_an_edge_node_of_its_own(broker, tmp_path):
    """``sparkplug:`` in a gate's config: the plant sees what the gate did with each part
    (passed, rejected by reason, missed), its health and the last decision; it may reset the
    counts and nothing else."""
    import json

    import paho.mqtt.client as mqtt

    from inspector.contract.mqtt import MqttSection
    from inspector.gate.config import GateConfig, GateHttpSection, GateSection
    from inspector.gate.service import GateService

    prefix = "inspector/st-9"
    section = SparkplugSection(
        group_id="line-9",
        device_id="gate",
        report_interval_s=0.05,
        state_file=tmp_path / "gate-bdseq.json",
    )
    gate = GateService(
        GateConfig(
            gate=GateSection(id="gate-9", station_prefix=prefix, travel_ms=300),
            mqtt=MqttSection(host=broker.host, port=broker.port, keepalive_s=2),
            http=GateHttpSection(enabled=False),
            sparkplug=section,
        )
    )
    host = Host(broker, "line-9")
    station = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="st-9")
    station.connect(broker.host, broker.port)
    station.loop_start()
    gate.start()
    try:
        birth = host.wait("DBIRTH")[0]
        assert (birth.node, birth.device) == ("gate-9", "gate")
        d = birth.metrics
        assert d["Parts/Passed"] == (UINT64, 0) and d["Parts/Rejected By Reason/defect"] == (
            UINT64,
            0,
        )
        assert "Commands/Promote Model" not in d, "a gate takes no model"
        assert gate.connected.wait(5)

        def send(topic: str, payload: dict) -> None:
            station.publish(f"{prefix}/{topic}", json.dumps(payload), qos=1).wait_for_publish(5)

        send("status", {"state": "online"})
        now = time.time()
        for pid in ("p1", "p2", "p3"):
            send("trigger", {"part_id": pid, "ts": now})
        send("verdict", {"part_id": "p1", "result": "pass", "reason": "ok", "seq": 1})
        send("verdict", {"part_id": "p2", "result": "fail", "reason": "defect", "seq": 2})
        # p3 gets no verdict: rejected when it reaches the gate
        assert host.wait_value("Parts/Total", 3, timeout=10)
        assert host.current("Parts/Passed") == 1 and host.current("Parts/Rejected") == 2
        assert host.current("Parts/Rejected By Reason/defect") == 1
        assert host.current("Parts/Rejected By Reason/no_verdict") == 1
        assert host.current("Gate/Broker Connected") is True
        assert host.current("Gate/Station State") == "online"

        host.dcmd("gate-9", "gate", {"Commands/Reset Counters": (BOOLEAN, True)})
        assert host.wait_value("Parts/Total", 0)
        host.dcmd("gate-9", "gate", {"Commands/Promote Model": (STRING, "b.onnx")})
        assert host.wait_value(
            "Commands/Last Result", "refused: Commands/Promote Model is not writable"
        )
        nbirth = host.of("NBIRTH")[-1]
    finally:
        gate.stop()
        station.loop_stop()
    ndeath = host.wait("NDEATH")
    assert ndeath and ndeath[0].metrics["bdSeq"] == nbirth.metrics["bdSeq"]
    assert not host.problems, host.problems[:5]
    host.close()
