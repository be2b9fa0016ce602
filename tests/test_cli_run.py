"""`inspector run` as the line PC runs it: a real process, real signals, health and metrics over HTTP."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from inspector.lab.broker import free_port

from .conftest import Line, station_yaml


def http_get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.fixture
def run_station(tmp_path, model_path, parts_dir, broker):
    procs = []

    def start(keepalive: int = 5):
        port = free_port()
        cfg = tmp_path / "station.yaml"
        cfg.write_text(
            station_yaml(model_path, parts_dir, broker)
            .replace("metrics: {port: 0}", f"metrics: {{port: {port}}}")
            .replace("reconnect_max_s: 0.3", f"reconnect_max_s: 0.3, keepalive_s: {keepalive}")
            + f'recorder: {{path: "{tmp_path}/rec"}}\nlogging: {{format: json}}\n'
        )
        p = subprocess.Popen(
            [sys.executable, "-m", "inspector.cli", "run", str(cfg)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(p)
        return p, port

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_run_serves_parts_health_metrics_and_stops_cleanly_on_sigterm(run_station, broker, line):
    proc, port = run_station()
    assert line.wait_status("online", timeout=30), line.statuses
    code, body = http_get(port, "/health")
    assert code == 200 and json.loads(body)["broker_connected"] is True
    for i in range(5):
        line.trigger(f"cli-{i}")
    assert len(line.wait_for(5)) == 5
    code, body = http_get(port, "/metrics")
    text = body.decode()
    assert code == 200
    assert "inspector_parts_total 5.0" in text
    assert 'inspector_stage_seconds_count{stage="inference"}' in text
    assert "inspector_e2e_seconds_bucket" in text

    broker.stop()  # broker away: health must say so
    time.sleep(0.5)
    code, body = http_get(port, "/health")
    assert code == 503 and json.loads(body)["broker_connected"] is False
    broker.start()
    deadline = time.monotonic() + 10
    while http_get(port, "/health")[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert http_get(port, "/health")[0] == 200

    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert all(json.loads(line_)["level"] for line_ in err.strip().splitlines())  # JSON logs
    late = Line(broker)  # a gate that connects now sees the retained status
    try:
        assert late.wait_status("offline", timeout=5)
    finally:
        late.close()


def test_killed_process_goes_offline_through_the_last_will(run_station, broker, line):
    proc, _ = run_station(keepalive=1)
    assert line.wait_status("online", timeout=30)
    proc.kill()  # SIGKILL: no goodbye
    status = line.wait_status("offline", timeout=6)
    assert status and status["detail"] == "connection lost"


def test_systemd_ready_and_watchdog_pings_stop_while_the_pipeline_is_stalled(
    tmp_path, model_path, parts_dir, broker, line
):
    import os
    import socket

    sock_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(0.1)
    delay = tmp_path / "slow"
    cfg = tmp_path / "station.yaml"
    cfg.write_text(
        station_yaml(model_path, parts_dir, broker)
        + f'recorder: {{path: "{tmp_path}/rec"}}\n'
        + f'testing: {{model_delay_file: "{delay}"}}\n'
    )
    env = dict(os.environ, NOTIFY_SOCKET=sock_path, WATCHDOG_USEC="1000000")
    proc = subprocess.Popen(
        [sys.executable, "-m", "inspector.cli", "run", str(cfg)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    got: list[tuple[float, str]] = []

    def collect(seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            with contextlib.suppress(TimeoutError):
                got.append((time.monotonic(), sock.recv(4096).decode()))

    try:
        collect(8)
        assert any(m.startswith("READY=1") for _, m in got), got
        assert sum(m == "WATCHDOG=1" for _, m in got) >= 3
        delay.write_text("3000")  # the model hangs for 3 s on the next part
        line.trigger("stall")
        got.clear()
        collect(2.5)
        stalled_pings = [t for t, m in got if m == "WATCHDOG=1"]
        assert len(stalled_pings) <= 1, got  # at most one ping before the stall was noticed
        delay.unlink()
        got.clear()
        collect(2.5)
        assert sum(m == "WATCHDOG=1" for _, m in got) >= 2  # moving again
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
        sock.close()
    assert proc.returncode == 0
