"""Shared fixtures: a real Mosquitto on a free port, a real (small) ONNX model, parts on disk."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from inspector.lab.broker import Mosquitto
from inspector.lab.modelkit import build_contrast_model, write_parts
from inspector.station.config import load_config


@pytest.fixture
def broker():
    if not Mosquitto.available():
        pytest.fail(
            "mosquitto is not installed (make test installs it: apt-get install -y mosquitto)"
        )
    b = Mosquitto().start()
    yield b
    b.stop()


@pytest.fixture(scope="session")
def model_path(tmp_path_factory) -> Path:
    return build_contrast_model(tmp_path_factory.mktemp("model") / "contrast.onnx", size=32)


@pytest.fixture(scope="session")
def parts_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("parts")
    write_parts(folder, 12, defect_rate=0.4, seed=3, size=48, labelled=True)
    return folder


def station_yaml(
    model: Path,
    parts: Path,
    broker,
    *,
    trigger: str = "mqtt",
    rate: float = 30.0,
    loop: bool = True,
    deadline_ms: float = 2000,
    timeout_margin_ms: float = 20,
    extra: str = "",
) -> str:
    trigger_line = "" if "trigger:" in extra else f"trigger: {{type: {trigger}}}\n"
    return f"""\
station: {{id: test}}
source: {{type: folder, path: "{parts}", recursive: true, rate_fps: {rate}, loop: {str(loop).lower()}}}
{trigger_line}part: {{deadline_ms: {deadline_ms}, timeout_margin_ms: {timeout_margin_ms}}}
model: {{path: "{model}", warmup_runs: 1}}
mqtt: {{host: {broker.host}, port: {broker.port}, reconnect_max_s: 0.3}}
metrics: {{port: 0}}
{extra}"""


@pytest.fixture
def make_config(tmp_path, model_path, parts_dir, broker):
    """make_config(**station_yaml kwargs) -> a validated StationConfig (recorder under tmp_path)."""

    def make(**kwargs):
        extra = kwargs.pop("extra", "")
        if "recorder:" not in extra:
            extra += f'\nrecorder: {{path: "{tmp_path / "rec"}"}}\n'
        model = kwargs.pop("model", model_path)
        parts = kwargs.pop("parts", parts_dir)
        path = tmp_path / "station.yaml"
        path.write_text(station_yaml(model, parts, broker, extra=extra, **kwargs))
        return load_config(path)

    return make


class Line:
    """What the reject gate sees: a subscriber on the station's topics, and a trigger publisher."""

    def __init__(self, broker, prefix: str = "inspector/test", persistent: bool = False) -> None:
        self.prefix = prefix
        self.verdicts: list[dict] = []
        self.statuses: list[dict] = []
        self.expiry: list[int | None] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"line-{id(self)}", protocol=mqtt.MQTTv5
        )
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(min_delay=0.05, max_delay=0.2)  # paho's default: 1 s+
        self.client.on_connect = lambda c, u, f, rc, p=None: c.subscribe(f"{prefix}/#", qos=1)
        props = None
        if persistent:  # the broker keeps our subscription and queues verdicts while we're away
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 300
        self.client.connect(
            broker.host, broker.port, keepalive=5, clean_start=not persistent, properties=props
        )
        self.client.loop_start()
        time.sleep(0.2)

    def _on_message(self, _c, _u, msg) -> None:
        with self._lock:
            if msg.topic.endswith("/verdict"):
                v = json.loads(msg.payload)
                v["_received"] = time.time()
                v["_retain"] = msg.retain
                self.verdicts.append(v)
                self.expiry.append(getattr(msg.properties, "MessageExpiryInterval", None))
            elif msg.topic.endswith("/status") and msg.payload:
                self.statuses.append(json.loads(msg.payload))

    def trigger(self, part_id: str, **fields) -> None:
        payload = json.dumps({"part_id": part_id, "ts": time.time(), **fields})
        self.client.publish(f"{self.prefix}/trigger", payload, qos=1)

    def raw(self, payload: bytes) -> None:
        self.client.publish(f"{self.prefix}/trigger", payload, qos=1)

    def wait_for(self, n: int, timeout: float = 10.0) -> list[dict]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self._lock:
                if len(self.verdicts) >= n:
                    return list(self.verdicts)
            time.sleep(0.01)
        with self._lock:
            return list(self.verdicts)

    def by_id(self) -> dict[str, dict]:
        with self._lock:
            return {v["part_id"]: v for v in self.verdicts}

    def wait_status(self, state: str, timeout: float = 10.0) -> dict | None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self._lock:
                if self.statuses and self.statuses[-1]["state"] == state:
                    return self.statuses[-1]
            time.sleep(0.02)
        return None

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def line(broker):
    ln = Line(broker)
    yield ln
    ln.close()


@pytest.fixture
def station_factory():
    """Builds Stations and always stops them, even when a test fails."""
    from inspector.station.pipeline import Station

    made = []

    def make(cfg, **kwargs):
        s = Station(cfg, **kwargs)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


@pytest.fixture
def bench(tmp_path):
    """The review workbench over tmp_path (tests/review_helpers.workbench): (tmp, cfg, app).
    A test module may define its own ``bench`` to add to it (test_review_pages.py does)."""
    from .review_helpers import workbench

    cfg, app = workbench(tmp_path)
    return tmp_path, cfg, app
