"""Helpers of the SPC tests: stored verdict rows with a set reject rate, the service's config
on a test broker, verdicts as a station publishes them, and a publisher standing in for it."""

from __future__ import annotations

import json
import time

import numpy as np
import paho.mqtt.client as mqtt

from inspector.spc.config import load_spc_config
from inspector.spc.store import VerdictRow


def verdict_row(station, seq, fail, t0=1000.0, label="scratch"):
    """One stored verdict, part ``seq``, 0.1 s after the one before."""
    t = t0 + seq * 0.1
    return VerdictRow(
        station,
        seq,
        f"p{seq}",
        t,
        t,
        "fail" if fail else "pass",
        "defect" if fail else "ok",
        label if fail else "good",
        int(fail),
        "m@1",
    )


def rows(station, rates, n=200, seed=0, t0=1000.0, seq0=0, label="scratch"):
    rng = np.random.default_rng(seed)
    out, seq = [], seq0
    for p in rates:
        fails = set(rng.choice(n, rng.binomial(n, p), replace=False).tolist())
        for i in range(n):
            out.append(verdict_row(station, seq, i in fails, t0, label))
            seq += 1
    return out


def spc_yaml(tmp_path, broker, extra=""):
    path = tmp_path / "spc.yaml"
    path.write_text(
        f"mqtt: {{host: {broker.host}, port: {broker.port}, reconnect_max_s: 0.3, prefix: plant}}\n"
        f"subscribe: {{context: [plant/line1/lot]}}\n"
        f"store: {{url: spc.sqlite, batch: 200}}\n"
        f"charts: {{subgroup_parts: 50, baseline_subgroups: 4, per_class: false}}\n"
        f"http: {{port: 0}}\n{extra}"
    )
    return load_spc_config(path)


T0 = float(int(time.time()) - 86400)  # within the store's retention (the service prunes at start)


def verdict(seq, fail=False, station="st1"):
    t = T0 + seq
    return json.dumps(
        {
            "schema": 1,
            "station": station,
            "part_id": f"p{seq}",
            "seq": seq,
            "result": "fail" if fail else "pass",
            "reason": "defect" if fail else "ok",
            "class": "crack" if fail else "good",
            "scores": {},
            "threshold": {"crack": 0.5},
            "model_id": "m@1",
            "t_trigger": t,
            "t_capture": t,
            "t_verdict": t + 0.05,
            "deadline": t + 1,
            "latency_ms": {},
            "detail": "",
            "frame": "",
        }
    )


def publisher(broker):
    c = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id="fake-station", protocol=mqtt.MQTTv5
    )
    c.reconnect_delay_set(0.05, 0.2)
    c.max_queued_messages_set(0)
    c.connect(broker.host, broker.port, keepalive=5)
    c.loop_start()
    return c
