"""The broker goes away mid-run: verdicts still in time arrive after reconnect, stale ones never."""

from __future__ import annotations

import time

import pytest

from inspector.lab.broker import Mosquitto

from .conftest import Line


@pytest.fixture
def station_at(tmp_path, model_path, parts_dir, station_factory):
    """station_at(port, **mqtt settings): a station whose broker is whatever listens on
    127.0.0.1:port."""
    from dataclasses import replace
    from types import SimpleNamespace

    from inspector.station.config import load_config

    from .conftest import station_yaml

    def make(port: int, **mqtt_settings):
        fake = SimpleNamespace(host="127.0.0.1", port=port, protocol="5")
        path = tmp_path / "s.yaml"
        path.write_text(
            station_yaml(model_path, parts_dir, fake) + f'recorder: {{path: "{tmp_path}/rec"}}\n'
        )
        cfg = load_config(path)
        return station_factory(replace(cfg, mqtt=replace(cfg.mqtt, **mqtt_settings)))

    return make


@pytest.fixture
def persistent_broker():
    b = Mosquitto(persistence=True).start()
    yield b
    b.stop()


def test_broker_restart_sends_only_verdicts_still_in_time(
    make_config, station_factory, persistent_broker, tmp_path, model_path, parts_dir
):
    from inspector.station.config import load_config

    from .conftest import station_yaml

    broker = persistent_broker
    path = tmp_path / "station.yaml"
    path.write_text(
        station_yaml(
            model_path,
            parts_dir,
            broker,
            trigger="free-run",
            rate=20,
            deadline_ms=800,
            extra=f'recorder: {{path: "{tmp_path}/rec"}}\n',
        )
    )
    cfg = load_config(path)
    gate = Line(broker, persistent=True)
    station = station_factory(cfg)
    station.start()
    assert gate.wait_status("online")
    time.sleep(0.5)

    broker.stop()  # clean stop: the gate's persistent session survives the restart
    t_down = time.time()  # the broker process has exited
    time.sleep(2.0)  # longer than the 800 ms deadline: the oldest verdicts must expire
    broker.start()
    t_up = time.time()
    assert station.publisher.connected.wait(5), "station did not reconnect"
    t_reconnected = time.time()
    time.sleep(1.5)
    parts, decided, sent, expired, overflow = _stop_and_count(station, gate)
    m = station.metrics
    # every part is accounted for: one verdict each, and each was sent or counted as expired
    assert parts == decided
    assert sent + expired + overflow == decided, m.snapshot()
    assert expired >= 10  # ~2 s down at 20 parts/s, 0.8 s deadline
    assert m.value("inspector_mqtt_reconnects_total") >= 1

    received = gate.verdicts
    ids = [v["part_id"] for v in received]
    assert len(ids) == len(set(ids))  # no duplicates reached the gate
    for v in received:  # never late
        assert v["_received"] <= v["deadline"] + 0.05, v
    # verdicts decided while the broker was down, still in time, arrived after the reconnect
    during = [v for v in received if t_down < v["t_verdict"] < t_up]
    assert during, "no verdict decided during the outage was delivered after reconnect"
    assert all(v["_received"] >= t_up for v in during)
    assert min(v["_received"] for v in during) <= t_reconnected + 0.5
    # and inspection resumed: parts captured after reconnect were delivered too
    assert any(v["t_trigger"] > t_reconnected for v in received)


def test_broker_refusal_is_reported_with_its_reason_and_never_goes_online(
    tmp_path, model_path, parts_dir, station_factory, caplog
):
    from dataclasses import replace

    from inspector.station.config import load_config

    from .conftest import station_yaml

    b = Mosquitto(users={"inspector": "right-password"}).start()
    try:
        path = tmp_path / "s.yaml"
        path.write_text(
            station_yaml(model_path, parts_dir, b) + f'recorder: {{path: "{tmp_path}/rec"}}\n'
        )
        cfg = load_config(path)
        wrong = replace(cfg, mqtt=replace(cfg.mqtt, username="inspector", password="wrong"))
        station = station_factory(wrong)
        station.start()
        time.sleep(1.0)
        assert not station.publisher.connected.is_set()
        assert "refused the connection: Not authorized" in station.publisher.last_error
        assert station.health()[0] is False
        station.stop()

        (tmp_path / "pw").write_text("right-password\n")
        right = replace(
            cfg, mqtt=replace(cfg.mqtt, username="inspector", password_file=tmp_path / "pw")
        )
        station = station_factory(right)
        station.start()
        assert station.publisher.connected.wait(5)
    finally:
        b.stop()


@pytest.mark.parametrize("end", ["broker hangs up", "socket reached itself"])
def test_a_connection_that_ends_before_connack_is_retried_at_once(
    station_at, monkeypatch, caplog, end
):
    """A broker going down can still accept a connection and then close it; retrying a port
    in the ephemeral range while nothing listens can connect a socket to itself. Either way
    the station must retry with its short backoff, not sit out connect_timeout_s (5 s) blind."""
    import socket
    import threading
    from pathlib import Path

    import paho.mqtt.client as mqtt

    from inspector.lab.broker import free_port

    port = free_port()
    # the demo's and tests' brokers listen below the ephemeral range
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert port < low
    attempts = []
    server = None
    if end == "broker hangs up":
        server = socket.create_server(("127.0.0.1", port))

        def hang_up():
            while True:
                try:
                    conn, _ = server.accept()
                except OSError:
                    return
                attempts.append(time.monotonic())
                conn.close()

        threading.Thread(target=hang_up, daemon=True).start()
    else:  # nothing listens; the first connection is made from the port it goes to
        real_connect = mqtt.Client.connect

        def connect_to_itself(client, host, port_, *a, **k):
            attempts.append(time.monotonic())
            if len(attempts) == 1:
                k.update(bind_address=host, bind_port=port_)
            return real_connect(client, host, port_, *a, **k)

        monkeypatch.setattr(mqtt.Client, "connect", connect_to_itself)
    try:
        station = station_at(port, connect_timeout_s=5.0, reconnect_max_s=0.2)
        station.start()
        time.sleep(2.0)
        assert not station.publisher.connected.is_set()
        assert "closed the connection before CONNACK" in caplog.text
        assert len(attempts) >= 4  # retried within the 2 s, not once per 5 s
        station.stop()
    finally:
        if server is not None:
            server.close()


def test_a_frozen_broker_is_noticed_by_keepalive_and_the_station_comes_back(
    broker, tmp_path, model_path, parts_dir, station_factory
):
    """A broker that stops answering without closing the connection (hung process, cable
    pulled upstream) is only found out by MQTT keepalive: the station must notice it, keep
    deciding, and deliver what is still in time once the broker answers again."""
    import os
    import signal
    from dataclasses import replace

    from inspector.station.config import load_config

    from .conftest import station_yaml

    path = tmp_path / "s.yaml"
    path.write_text(
        station_yaml(model_path, parts_dir, broker, trigger="free-run", rate=20, deadline_ms=8000)
        + f'recorder: {{path: "{tmp_path}/rec"}}\n'
    )
    cfg = load_config(path)
    cfg = replace(cfg, mqtt=replace(cfg.mqtt, keepalive_s=1, connect_timeout_s=1.0))
    gate = Line(broker, prefix="inspector/test")
    station = station_factory(cfg)
    station.start()
    assert station.publisher.connected.wait(5)
    time.sleep(0.5)
    os.kill(broker.proc.pid, signal.SIGSTOP)
    try:
        t_frozen = time.monotonic()
        while station.publisher.connected.is_set() and time.monotonic() - t_frozen < 6:
            time.sleep(0.05)
        noticed = time.monotonic() - t_frozen
        assert not station.publisher.connected.is_set(), "a silent broker was never noticed"
        assert noticed < 4.0  # about two keepalives (1 s), not never
        assert station.health()[0] is False
    finally:
        os.kill(broker.proc.pid, signal.SIGCONT)
    assert station.publisher.connected.wait(10), "station did not reconnect"
    time.sleep(1.0)
    _, decided, sent, _, _ = _stop_and_count(station, gate)
    assert decided >= 40 and sent == decided, station.metrics.snapshot()  # deadline 8 s: all
    ids = [v["part_id"] for v in gate.verdicts]
    assert len(set(ids)) == decided


def test_connection_attempts_that_get_no_connack_close_their_sockets(station_at, monkeypatch):
    """A server that accepts and never answers: every attempt times out and is retried; a
    station left like that for days must not run out of file descriptors."""
    import os
    import socket

    import paho.mqtt.client as mqtt

    from inspector.lab.broker import free_port

    port = free_port()
    # listening but never accepting: the kernel completes each connection, nobody answers
    server = socket.create_server(("127.0.0.1", port), backlog=128)
    attempts = []
    real_connect = mqtt.Client.connect

    def counted(client, *a, **k):
        attempts.append(time.monotonic())
        return real_connect(client, *a, **k)

    monkeypatch.setattr(mqtt.Client, "connect", counted)
    try:
        station = station_at(port, connect_timeout_s=0.2, reconnect_max_s=0.1)
        station.start()
        time.sleep(0.6)
        fds_before, attempts_before = len(os.listdir("/proc/self/fd")), len(attempts)
        time.sleep(2.0)
        fds_after, attempts_after = len(os.listdir("/proc/self/fd")), len(attempts)
        assert attempts_after - attempts_before >= 5  # it keeps trying...
        assert fds_after - fds_before <= 1  # ...without keeping a socket per attempt
        assert "no CONNACK" in station.publisher.last_error
        station.stop()
    finally:
        server.close()


def _stop_and_count(station, gate) -> tuple[float, float, float, float, float]:
    """Stop the station, let its last verdicts reach the gate: parts, verdicts decided, sent,
    expired in the outbox, dropped from a full outbox."""
    station.stop()
    time.sleep(0.5)
    gate.close()
    m = station.metrics
    return (
        m.value("inspector_parts_total"),
        m.total("inspector_verdicts_total"),
        m.total("inspector_verdicts_published_total"),
        m.value("inspector_drops_total", what="verdict_expired"),
        m.value("inspector_drops_total", what="outbox_overflow"),
    )
