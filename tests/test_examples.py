"""The shipped example configs: all valid; the replay one checks and runs on this machine."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from inspector.cli import main
from inspector.config import load_config
from inspector.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "deploy" / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_config_is_valid(path, monkeypatch):
    monkeypatch.setenv("INSPECTOR_MQTT_PASSWORD", "x")
    try:
        load_config(path)
    except ConfigError as exc:  # a password file lives on the line PC's /etc, not here
        assert len(exc.problems) == 1 and "password_file: file not found" in exc.problems[0], exc


def test_replay_example_passes_check_and_runs(tmp_path, broker, capsys):
    examples = tmp_path / "deploy" / "examples"
    examples.mkdir(parents=True)
    text = (ROOT / "deploy/examples/replay-mqtt.yaml").read_text()
    text = text.replace("port: 1883", f"port: {broker.port}").replace("port: 9108", "port: 0")
    (examples / "replay-mqtt.yaml").write_text(text)
    assert main(["demo", "--prepare", str(tmp_path / "demo"), "--parts", "10"]) == 0
    assert main(["check", str(examples / "replay-mqtt.yaml")]) == 0, capsys.readouterr().err

    from inspector.pipeline import Station

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
