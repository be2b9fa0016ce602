"""The shipped example configs: all valid; the replay one checks and runs on this machine."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from inspector.cli import main
from inspector.errors import ConfigError
from inspector.station.config import load_config

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "deploy" / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_config_is_valid(path, monkeypatch):
    monkeypatch.setenv("INSPECTOR_MQTT_PASSWORD", "x")
    from inspector.cli_check import _config_kind
    from inspector.gate.config import load_gate_config
    from inspector.review.config import load_review_config
    from inspector.spc.config import load_spc_config

    loaders = {
        "station": load_config,
        "gate": load_gate_config,
        "review": load_review_config,
        "spc": load_spc_config,
    }
    loader = loaders[_config_kind(path)]
    try:
        loader(path)
    except ConfigError as exc:  # a password file lives on the line PC's /etc, not here
        assert len(exc.problems) == 1 and "password_file: file not found" in exc.problems[0], exc


# What `inspector check` may miss on this machine: the line PC's own files (the model, the
# broker password file, certificates, /var/lib/inspector). Anything else is a schema error.
LINE_PC_FILES = ("file not found", "cannot create or write")


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_check_validates_every_example_with_its_own_schema(path, monkeypatch, capsys):
    monkeypatch.setenv("INSPECTOR_MQTT_PASSWORD", "x")  # the unit's environment file
    code = main(["check", str(path)])
    captured = capsys.readouterr()
    if code == 0:
        assert "valid" in captured.out
        return
    problems = captured.err.splitlines()
    assert code == 2 and problems
    assert all(any(m in line for m in LINE_PC_FILES) for line in problems), captured.err


def test_replay_example_passes_check_and_runs(tmp_path, broker, capsys):
    examples = tmp_path / "deploy" / "examples"
    examples.mkdir(parents=True)
    text = (ROOT / "deploy/examples/replay-mqtt.yaml").read_text()
    text = text.replace("port: 1883", f"port: {broker.port}").replace("port: 9108", "port: 0")
    (examples / "replay-mqtt.yaml").write_text(text)
    assert main(["demo", "--prepare", str(tmp_path / "demo"), "--parts", "10"]) == 0
    assert main(["check", str(examples / "replay-mqtt.yaml")]) == 0, capsys.readouterr().err

    from inspector.station.pipeline import Station

    from .conftest import Line

    cfg = load_config(examples / "replay-mqtt.yaml")
    station = Station(cfg)
    line = Line(broker, prefix="inspector/replay-1")
    try:
        station.start()
        assert line.wait_status("online")
        for i in range(4):
            line.trigger(f"A-{i:04d}")
        assert sorted(v["part_id"] for v in line.wait_for(4)) == [f"A-{i:04d}" for i in range(4)]
    finally:
        station.stop()
        line.close()
    shutil.rmtree(tmp_path / "recordings", ignore_errors=True)


def test_demo_runs_end_to_end(capsys):
    assert main(["demo", "--parts", "12", "--rate", "40"]) == 0
    out = capsys.readouterr().out
    assert "verdicts received    12 (12 distinct part ids)" in out
    assert "escapes (defect passed): 0" in out


def test_gate_process_decides_parts_and_stops_on_sigterm(tmp_path, broker):
    import json
    import signal
    import subprocess
    import sys
    import time

    from .conftest import Line

    text = (
        (ROOT / "deploy/examples/gate.yaml")
        .read_text()
        .replace("port: 1883", f"port: {broker.port}")
    )
    from inspector.lab.broker import free_port

    http_port = free_port()
    text = text.replace("port: 9109", f"port: {http_port}")
    cfg = tmp_path / "gate.yaml"
    cfg.write_text(text)
    proc = subprocess.Popen(
        [sys.executable, "-m", "inspector.cli", "gate", str(cfg)], stderr=subprocess.PIPE, text=True
    )
    events = []
    line = Line(broker, prefix="inspector/replay-1")
    line.client.message_callback_add(
        "inspector/replay-1/gate", lambda c, u, m: events.append(json.loads(m.payload))
    )
    try:
        time.sleep(2.0)  # the gate connects and subscribes
        line.client.publish("inspector/replay-1/status", json.dumps({"state": "online"}), qos=1)
        line.trigger("G-1")
        line.trigger("G-2")
        time.sleep(0.2)
        line.client.publish(
            "inspector/replay-1/verdict",
            json.dumps({"part_id": "G-1", "result": "pass", "reason": "ok", "seq": 1}),
            qos=1,
        )
        deadline = time.monotonic() + 5
        while len(events) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        got = {e["part_id"]: (e["outcome"], e["reason"]) for e in events}
        assert got == {"G-1": ("passed", "pass"), "G-2": ("rejected", "no_verdict")}
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/health", timeout=2) as r:
            assert r.status == 200 and json.loads(r.read())["broker_connected"] is True
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=2) as r:
            text = r.read().decode()
        assert 'inspector_gate_total{what="passed"} 1.0' in text
        assert 'inspector_gate_total{what="rejected:no_verdict"} 1.0' in text
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
        line.close()
    assert proc.returncode == 0, err
    assert "REJECT 'G-2'" in err
