"""How every client of the line's broker connects: host, port, prefix, credentials, TLS.

The station, the gate and the golden-sample check all read this section of their config and
apply it with ``secure``, so a locked-down broker sees the same client settings from each.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import paho.mqtt.client as mqtt

from .schema import setting


@dataclass(frozen=True, kw_only=True)
class TlsSection:
    ca: Path | None = setting(None, "CA certificate file (default: system CAs)")
    cert: Path | None = setting(None, "client certificate")
    key: Path | None = setting(None, "client key")
    insecure: bool = setting(False, "skip host name verification (testing only)")


@dataclass(frozen=True, kw_only=True)
class MqttSection:
    host: str = setting("localhost", "broker host")
    port: int = setting(1883, "broker port")
    protocol: Literal["5", "3.1.1"] = setting("5", "MQTT protocol version")
    prefix: str | None = setting(None, "topic prefix (default inspector/STATION_ID)")
    client_id: str | None = setting(None, "client id (default inspector-STATION_ID)")
    username: str | None = setting(None, "user name")
    password: str | None = setting(None, "password (prefer password_env or password_file)")
    password_env: str | None = setting(None, "environment variable holding the password")
    password_file: Path | None = setting(None, "file holding the password")
    tls: TlsSection | None = setting(None, "TLS settings; absent means plain TCP")
    keepalive_s: int = setting(
        5, "MQTT keepalive; the last-will fires about 1.5x this after a crash"
    )
    outbox_size: int = setting(1000, "verdicts kept while the broker is away")
    connect_timeout_s: float = setting(5.0, "time to wait for the broker's CONNACK")
    reconnect_max_s: float = setting(2.0, "longest wait between reconnect attempts")
    status_interval_s: float = setting(
        1.0, "status is republished this often, so a gate can tell a silent station from a live one"
    )

    def problems(self):
        given = [k for k in ("password", "password_env", "password_file") if getattr(self, k)]
        if len(given) > 1:
            yield (
                given[1],
                f"give only one of password, password_env, password_file (got {', '.join(given)})",
            )
        if self.password_env and self.password_env not in os.environ:
            yield "password_env", f"environment variable {self.password_env} is not set"
        if self.password_file and not self.password_file.is_file():
            yield "password_file", f"file not found: {self.password_file}"
        if not 0 < self.port < 65536:
            yield "port", "must be between 1 and 65535"
        if self.prefix is not None and (not self.prefix or any(c in self.prefix for c in "#+\0")):
            yield "prefix", "must be non-empty and contain no '#', '+' or NUL"
        if self.outbox_size < 1:
            yield "outbox_size", "must be at least 1"
        if not 1 <= self.keepalive_s <= 65535:
            yield (
                "keepalive_s",
                "must be between 1 and 65535 (0 would stop the broker noticing a dead client, "
                "so its last-will would never say offline)",
            )
        for key, most in (
            ("connect_timeout_s", 300),
            ("reconnect_max_s", 600),
            ("status_interval_s", 60),
        ):
            if not 0 < getattr(self, key) <= most:
                yield key, f"must be more than 0 and at most {most} seconds"

    def resolved_password(self) -> str | None:
        if self.password_env:
            return os.environ.get(self.password_env)
        if self.password_file:
            return self.password_file.read_text(encoding="utf-8").strip()
        return self.password


def secure(client: mqtt.Client, cfg: MqttSection) -> mqtt.Client:
    """Apply the config's user name, password and TLS settings to a paho client."""
    password = cfg.resolved_password()
    if cfg.username or password:
        client.username_pw_set(cfg.username, password)
    if cfg.tls is not None:
        t = cfg.tls
        client.tls_set(
            ca_certs=str(t.ca) if t.ca else None,
            certfile=str(t.cert) if t.cert else None,
            keyfile=str(t.key) if t.key else None,
            cert_reqs=ssl.CERT_REQUIRED,
        )
        client.tls_insecure_set(t.insecure)
    return client


def new_client(cfg: MqttSection, client_id: str, protocol: str | None = None) -> mqtt.Client:
    """A paho client with the config's protocol, credentials and TLS (not yet connected)."""
    v5 = (protocol or cfg.protocol) == "5"
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
    )
    return secure(client, cfg)


class RequestError(Exception):
    """An MQTT request that got no answer: the broker is unreachable or nobody answered."""


def request(cfg: MqttSection, topic: str, reply_topic: str, body: dict, timeout: float) -> dict:
    """One MQTT 5 request/response round (response topic + correlation data): publish
    ``body`` on ``topic`` and wait for the JSON answer on ``reply_topic``."""
    import json
    import threading
    import uuid

    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    corr = uuid.uuid4().bytes
    got: dict = {}
    subscribed, answered = threading.Event(), threading.Event()
    client = new_client(cfg, f"inspector-request-{uuid.uuid4().hex[:8]}", "5")

    def on_message(_c, _u, msg) -> None:
        if getattr(msg.properties, "CorrelationData", None) == corr:
            try:
                got.update(json.loads(msg.payload))
            except ValueError:
                got.update({"outcome": "error", "reason": "unreadable answer"})
            answered.set()

    client.on_message = on_message
    client.on_subscribe = lambda *a, **k: subscribed.set()
    try:
        client.connect(cfg.host, cfg.port, 10)
    except (OSError, ValueError) as exc:
        raise RequestError(f"cannot reach broker {cfg.host}:{cfg.port}: {exc}") from None
    client.loop_start()
    try:
        client.subscribe(reply_topic, qos=1)
        if not subscribed.wait(10):
            raise RequestError(f"no answer from broker {cfg.host}:{cfg.port} (subscribe)")
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = reply_topic
        props.CorrelationData = corr
        client.publish(topic, json.dumps(body), qos=1, properties=props)
        if not answered.wait(timeout):
            raise RequestError(f"no answer on {reply_topic} within {timeout:.0f} s")
    finally:
        client.loop_stop()
        client.disconnect()
    return got
