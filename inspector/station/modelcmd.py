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
import os
import uuid
from pathlib import Path

from ..contract.mqtt import RequestError
from ..contract.mqtt import request as mqtt_request
from ..contract.topics import Topics
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
    anomaly_path: str | None = None,
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
    topics = Topics.of(cfg.prefix)
    body = {"action": action, **({"path": str(path)} if path else {})}
    if anomaly_path is not None:
        body["anomaly_path"] = str(anomaly_path)
    try:
        return mqtt_request(
            mq, topics.cmd_model, topics.reply(uuid.uuid4().hex[:12]), body, timeout
        )
    except RequestError as exc:
        raise InspectorError(
            f"station {cfg.station.id}: {exc} (is it running, and may user {username!r} "
            f"publish on {topics.cmd_model}?)"
        ) from None


def format_outcome(o: dict) -> str:
    line = f"{o.get('action')}: {o.get('outcome')}; model {o.get('model_id')}"
    if o.get("anomaly_model_id"):
        line += f" + anomaly model {o['anomaly_model_id']}"
    if o.get("previous"):
        line += f" (was {o['previous']})"
    if o.get("reason"):
        line += f": {o['reason']}"
    return line
