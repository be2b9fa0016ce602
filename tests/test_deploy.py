"""The shipped deployment: a locked-down broker, systemd units, containers, example configs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import yaml

from inspector.cli import main
from inspector.contract.mqtt import MqttSection, TlsSection
from inspector.gate.config import GateConfig, GateHttpSection, GateSection
from inspector.gate.service import GateService
from inspector.lab.broker import free_port, wait_for_port
from inspector.station.config import load_config

from .conftest import station_yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory):
    """deploy/mosquitto/dev-broker.sh: the production config with TLS, passwords and the ACL."""
    out = tmp_path_factory.mktemp("broker")
    port = free_port()
    proc = subprocess.Popen(
        [str(DEPLOY / "mosquitto" / "dev-broker.sh"), str(out), str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert wait_for_port("127.0.0.1", port, 20), (
            proc.stdout.read().decode() if proc.poll() else ""
        )
        users = dict(line.split(":", 1) for line in (out / "passwords.txt").read_text().split())
        yield out, port, users
    finally:
        proc.terminate()
        proc.wait(10)


def tls_client(out: Path, port: int, user: str | None, password: str | None, client_id: str):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.tls_set(ca_certs=str(out / "ca.crt"))
    if user:
        c.username_pw_set(user, password)
    result = {}
    c.on_connect = lambda cl, u, f, rc, p=None: result.setdefault("rc", rc)
    c.connect("localhost", port)
    c.loop_start()
    end = time.monotonic() + 5
    while "rc" not in result and time.monotonic() < end:
        time.sleep(0.02)
    return c, result.get("rc")


def test_tls_password_and_acl_hold_and_verdicts_reach_the_gate(
    secure_broker, tmp_path, model_path, parts_dir, station_factory
):
    out, port, users = secure_broker
    (out / "inspector.pw").write_text(users["inspector"])
    tls = TlsSection(ca=out / "ca.crt")

    # the station, over TLS with its password
    from types import SimpleNamespace

    B = SimpleNamespace(host="localhost", port=port)  # noqa: N806
    cfg_path = tmp_path / "station.yaml"
    cfg_path.write_text(
        station_yaml(model_path, parts_dir, B) + f'recorder: {{path: "{tmp_path}/rec"}}\n'
    )
    cfg = load_config(cfg_path)
    cfg = replace(
        cfg,
        mqtt=replace(cfg.mqtt, username="inspector", password_file=out / "inspector.pw", tls=tls),
    )
    station = station_factory(cfg)
    station.start()
    assert station.publisher.connected.wait(10), station.publisher.last_error

    gate = GateService(
        GateConfig(
            gate=GateSection(id="g", station_prefix=cfg.prefix, travel_ms=3000),
            mqtt=MqttSection(
                host="localhost", port=port, username="gate", password=users["gate"], tls=tls
            ),
            http=GateHttpSection(port=0),
        )
    )
    gate.start()
    try:
        assert gate.connected.wait(10)
        time.sleep(1.5)  # the station's status heartbeat reaches the gate
        plc, rc = tls_client(out, port, "plc", users["plc"], "plc")
        assert rc is not None and not rc.is_failure
        for i in range(3):
            plc.publish(
                f"{cfg.prefix}/trigger", json.dumps({"part_id": f"S-{i}", "ts": time.time()}), qos=1
            )
        end = time.monotonic() + 10
        while len(gate.core.decided) < 3 and time.monotonic() < end:
            time.sleep(0.05)
        decided = {p: g.reason for p, g in gate.core.decided.items()}
        assert set(decided) == {"S-0", "S-1", "S-2"}
        assert set(decided.values()) <= {"pass", "defect"}  # real verdicts, not fail-safe

        # no password: refused
        anon, rc = tls_client(out, port, None, None, "anon")
        assert rc is None or rc.is_failure
        anon.loop_stop()

        # a password but not the right: a forged verdict never reaches the gate
        def forge(user: str, part_id: str) -> None:
            c, rc = tls_client(out, port, user, users[user], f"forger-{user}")
            assert rc is not None and not rc.is_failure
            info = c.publish(
                f"{cfg.prefix}/verdict",
                json.dumps({"part_id": part_id, "result": "pass", "reason": "ok", "seq": 99}),
                qos=1,
            )
            info.wait_for_publish(5)
            time.sleep(0.3)
            c.loop_stop()
            c.disconnect()

        for user in ("viewer", "plc", "gate"):
            forge(user, f"GHOST-{user}")
        assert gate.core.counts["unknown_verdicts"] == 0
        forge("inspector", "GHOST-inspector")  # control: the one user allowed to publish verdicts
        assert gate.core.counts["unknown_verdicts"] == 1
        plc.loop_stop()
    finally:
        gate.stop()


def test_systemd_units_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.skip("systemd-analyze not installed")
    inspector_bin = Path(sys.executable).with_name("inspector")
    names = []
    for unit in (DEPLOY / "systemd").glob("*.service"):
        text = unit.read_text().replace("/opt/inspector/venv/bin/inspector", str(inspector_bin))
        (tmp_path / unit.name).write_text(text)
        names.append(unit.name.replace("@.", "@line3."))
    r = subprocess.run(
        [analyze, "verify", *names], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    problems = [
        line
        for line in (r.stdout + r.stderr).splitlines()
        if line.strip() and "RestartSteps" not in line and "RestartMaxDelaySec" not in line
    ]
    # RestartSteps/RestartMaxDelaySec (the backoff) need systemd >= 254; older ones ignore them
    assert r.returncode == 0 and not problems, problems


def test_dockerfiles_lint_clean():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(hadolint).exists():
        pytest.skip("hadolint not installed")
    files = sorted(str(p) for p in (DEPLOY / "docker").glob("Dockerfile.*"))
    assert len(files) == 3
    r = subprocess.run(
        [hadolint, "--config", str(DEPLOY / "docker" / ".hadolint.yaml"), *files],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_compose_file_wires_broker_inspector_and_gate_with_health_checks():
    compose = yaml.safe_load((DEPLOY / "docker" / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"mosquitto", "inspector", "gate"}
    assert "/health" in " ".join(services["inspector"]["healthcheck"]["test"])
    assert "9109/health" in " ".join(services["gate"]["healthcheck"]["test"])
    assert all("healthcheck" in s and s.get("restart") for s in services.values())
    assert services["inspector"]["build"]["dockerfile"] == "deploy/docker/Dockerfile.gpu"
    if (
        shutil.which("docker")
        and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    ):
        r = subprocess.run(
            ["docker", "compose", "-f", str(DEPLOY / "docker" / "compose.yaml"), "config", "-q"],
            capture_output=True,
            text=True,
            env={
                "INSPECTOR_MQTT_PASSWORD": "x",
                "GATE_MQTT_PASSWORD": "y",
                "PATH": "/usr/bin:/bin",
            },
        )
        assert r.returncode == 0, r.stderr


STATION_EXAMPLES = [
    p for p in sorted((DEPLOY / "examples").glob("*.yaml")) if p.name != "gate.yaml"
]


@pytest.mark.parametrize("example", STATION_EXAMPLES, ids=lambda p: p.name)
def test_every_example_station_passes_check(example, tmp_path, monkeypatch, capsys):
    """On a line PC laid out as deploy/README.md says (here under tmp_path), `inspector check` passes."""
    home, etc = tmp_path / "var", tmp_path / "etc"
    assert main(["demo", "--prepare", str(tmp_path / "demo"), "--parts", "4"]) == 0
    (home / "models" / "current").mkdir(parents=True)
    shutil.copy(
        tmp_path / "demo" / "model" / "demo.onnx",
        home / "models" / "current" / "model.onnx",
    )
    etc.mkdir()
    (etc / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    (etc / "broker-password").write_text("secret\n")
    monkeypatch.setenv("INSPECTOR_HOME", str(home))
    monkeypatch.setenv("INSPECTOR_ETC", str(etc))
    monkeypatch.setenv("INSPECTOR_MQTT_PASSWORD", "secret")
    target = tmp_path / "deploy" / "examples" / example.name
    target.parent.mkdir(parents=True)
    target.write_text(example.read_text())
    code = main(["check", str(target)])
    assert code == 0, capsys.readouterr().err


def test_gpu_check_reports_every_combination_and_says_when_no_gpu_ran(tmp_path):
    out = tmp_path / "gpu.json"
    r = subprocess.run(
        [sys.executable, str(DEPLOY / "gpu_check.py"), "--runs", "20", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    report = json.loads(out.read_text())
    combos = {(x["provider"], x["precision"], x["batch"]) for x in report["results"]}
    assert {("cuda", p, b) for p in ("fp32", "fp16") for b in (1, 32)} <= combos
    assert {("tensorrt", p, b) for p in ("fp32", "fp16") for b in (1, 32)} <= combos
    assert all(
        x["status"] == "ok" and x["throughput_fps"] > 0
        for x in report["results"]
        if x["provider"] == "cpu"
    )
    if report["gpu_ran"]:
        assert r.returncode == 0
    else:  # this machine: no GPU; nothing may claim to have run on one
        assert r.returncode == 3
        assert all(x["status"] != "ok" for x in report["results"] if x["provider"] != "cpu")
