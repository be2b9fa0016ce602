"""``plant.sparkplug``: the edge node's identity and behaviour.

plant:
  sparkplug:
    group_id: line-3                 # spBv1.0/line-3/...
    edge_node_id: station-7          # default: the station id
    device_id: vision                # the device that carries the station's figures
    primary_host_id: scada-1         # wait for spBv1.0/STATE/scada-1 online (optional)
    report_interval_s: 1.0           # at most one NDATA/DDATA this often
    latency_window: 1000             # verdicts behind Latency/p50 ms and p99 ms
    deadband_latency_ms: 0.5         # a latency figure is sent when it moves more than this
    deadband_quality: 0.02           # a quality figure: when it moves more than 2 %
    username: inspector-spb          # broker login of its own (default: mqtt's)
    password_file: /etc/inspector/spb.pw
    state_file: /var/lib/inspector/sparkplug-line-3-station-7.json   # bdSeq across restarts
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ...contract.schema import setting

RESERVED = "+/#"


@dataclass(frozen=True, kw_only=True)
class SparkplugSection:
    group_id: str = setting(help="Sparkplug group id (spBv1.0/GROUP/...)")
    edge_node_id: str | None = setting(None, "edge node id (default: the station id)")
    device_id: str = setting("vision", "the device under the node that carries the station")
    primary_host_id: str | None = setting(
        None,
        "a primary host application to wait for: no NBIRTH until spBv1.0/STATE/ID says online, "
        "NDEATH and reconnect when it says offline (default: do not wait)",
    )
    report_interval_s: float = setting(
        1.0, "report by exception: changed figures are sent at most this often (NDATA/DDATA)"
    )
    latency_window: int = setting(1000, "the last N verdicts behind the latency p50/p99 figures")
    deadband_latency_ms: float = setting(
        0.5, "a latency figure (p50, p99) is reported when it moved by more than this (ms)"
    )
    deadband_quality: float = setting(
        0.02, "a quality-watch figure is reported when it moved by more than this fraction"
    )
    client_id: str | None = setting(
        None, "MQTT client id of the edge node (default inspector-spb-STATION_ID)"
    )
    queue_size: int = setting(
        10000, "verdicts and status changes waiting for the node's thread; more are counted"
    )
    username: str | None = setting(None, "broker user of the edge node (default: mqtt.username)")
    password: str | None = setting(None, "its password (prefer password_env or password_file)")
    password_env: str | None = setting(None, "environment variable holding its password")
    password_file: Path | None = setting(None, "file holding its password")
    state_file: Path | None = setting(
        None,
        "where the node keeps its bdSeq across restarts (default: "
        "$STATE_DIRECTORY/sparkplug-GROUP-NODE.json, else ~/.cache/inspector/...)",
    )

    def problems(self):
        for key in ("group_id", "edge_node_id", "device_id", "primary_host_id"):
            value = getattr(self, key)
            if value is None:
                continue
            if not value or any(c in value for c in RESERVED + "\0"):
                yield key, "must be non-empty and contain no '+', '/', '#' or NUL"
        if not 0 < self.report_interval_s <= 3600:
            yield "report_interval_s", "must be more than 0 and at most 3600 seconds"
        if not 1 <= self.latency_window <= 1_000_000:
            yield "latency_window", "must be between 1 and 1000000"
        for key in ("deadband_latency_ms", "deadband_quality"):
            if getattr(self, key) < 0:
                yield key, "must be 0 (report every change) or more"
        if self.queue_size < 1:
            yield "queue_size", "must be at least 1"
        if self.client_id is not None and not self.client_id:
            yield "client_id", "must be non-empty"
        given = [k for k in ("password", "password_env", "password_file") if getattr(self, k)]
        if len(given) > 1:
            yield given[1], f"give only one of password, password_env, password_file ({given})"
        if self.password_env and self.password_env not in os.environ:
            yield "password_env", f"environment variable {self.password_env} is not set"
        if self.password_file and not self.password_file.is_file():
            yield "password_file", f"file not found: {self.password_file}"

    @property
    def own_login(self) -> bool:
        """True when the node logs in as a user of its own, not as the station."""
        return bool(self.username or self.password or self.password_env or self.password_file)
