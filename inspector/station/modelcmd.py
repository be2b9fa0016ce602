"""``inspector model ACTION STATION.yaml``: ask a running station to change its model.

The request goes to ``PREFIX/cmd/model`` (MQTT 5 request/response) as the ``admin`` user
(the shipped ACL lets no one else publish there); the station answers on
``PREFIX/cmd/model/reply/ID`` with the outcome, which this prints.

    inspector model swap STATION.yaml models/v7.onnx     # load, check, verify, go live
    inspector model rollback STATION.yaml                # the model before, at once
    inspector model status STATION.yaml
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ..contract.mqtt import secure
from ..errors import InspectorError
from .config import load_config

ADMIN_PASSWORD_ENV = "INSPECTOR_ADMIN_PASSWORD"


def request(
    config: Path,
    action: str,
    path: str | None = None,
    username: str = "admin",
    password_file: Path | None = None,
    timeout: float = 120.0,
) -> dict:
    """Send one request and wait for the station's answer (a swap loads and verifies the
    candidate first: seconds, minutes for a first TensorRT build)."""
    cfg = load_config(config)
    if cfg.mqtt.protocol != "5":
        raise InspectorError("mqtt.protocol: model commands need MQTT 5 (request/response)")
    auth = {"username": username, "password": None, "password_env": None, "password_file": None}
    if password_file is not None:
        auth["password_file"] = password_file
    elif ADMIN_PASSWORD_ENV in os.environ:
        auth["password_env"] = ADMIN_PASSWORD_ENV
    mq = dataclasses.replace(cfg.mqtt, **auth) if username else cfg.mqtt
    reply_topic = f"{cfg.prefix}/cmd/model/reply/{uuid.uuid4().hex[:12]}"
    corr = uuid.uuid4().bytes
    got: dict = {}
    subscribed, answered = threading.Event(), threading.Event()
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=f"inspector-model-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv5,
    )
    secure(client, mq)

    def on_message(_c, _u, msg) -> None:
        if getattr(msg.properties, "CorrelationData", None) == corr:
            got.update(json.loads(msg.payload))
            answered.set()

    client.on_message = on_message
    client.on_subscribe = lambda *a, **k: subscribed.set()
    try:
        client.connect(mq.host, mq.port, 10)
    except (OSError, ValueError) as exc:
        raise InspectorError(f"cannot reach broker {mq.host}:{mq.port}: {exc}") from None
    client.loop_start()
    try:
        client.subscribe(reply_topic, qos=1)
        if not subscribed.wait(10):
            raise InspectorError(f"no answer from broker {mq.host}:{mq.port} (subscribe)")
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = reply_topic
        props.CorrelationData = corr
        body = {"action": action, **({"path": str(path)} if path else {})}
        client.publish(f"{cfg.prefix}/cmd/model", json.dumps(body), qos=1, properties=props)
        if not answered.wait(timeout):
            raise InspectorError(
                f"station {cfg.station.id} did not answer within {timeout:.0f} s (is it running, "
                f"and may user {username!r} publish on {cfg.prefix}/cmd/model?)"
            )
    finally:
        client.loop_stop()
        client.disconnect()
    return got


def format_outcome(o: dict) -> str:
    line = f"{o.get('action')}: {o.get('outcome')}; model {o.get('model_id')}"
    if o.get("previous"):
        line += f" (was {o['previous']})"
    if o.get("reason"):
        line += f": {o['reason']}"
    return line
