"""``inspector simulate --fault model-swap``: change the model mid-run, as a plant would.

Two swaps, a bad model (refused: the running one stays) and a rollback, sent on
``PREFIX/cmd/model`` (MQTT 5 request/response) while parts keep coming. The report names
each request's outcome and the part at which each change took effect, and compares the
verdict latency of the parts around each change (``window_s`` either side of it) with the
whole run's: a swap should cost nothing a part could notice.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ..contract.manifest import METADATA_KEY, embed

log = logging.getLogger(__name__)
INSPECTED = ("ok", "defect", "uncertain", "anomaly")  # reasons of a verdict a model decided

# (fraction of the run, request): two swaps, a refused bad model, a rollback
PLAN = (
    (0.2, "swap", "v2"),
    (0.4, "swap", "v3"),
    (0.55, "swap", "bad"),
    (0.7, "rollback", None),
)


def model_variants(model: Path, folder: Path) -> dict[str, Path]:
    """Copies of ``model`` under other names (other model ids), and a corrupt file."""
    import onnx

    folder.mkdir(parents=True, exist_ok=True)
    meta = {p.key: p.value for p in onnx.load(str(model)).metadata_props}
    manifest = json.loads(meta[METADATA_KEY])
    out = {}
    for tag in ("v2", "v3"):
        dst = folder / f"{model.stem}-{tag}.onnx"
        shutil.copyfile(model, dst)
        embed(dst, dict(manifest, name=f"{manifest['name']}-{tag}"), write_sidecar=False)
        out[tag] = dst
    bad = folder / "truncated.onnx"
    bad.write_bytes(model.read_bytes()[: max(64, model.stat().st_size // 3)])
    out["bad"] = bad
    return out


class ModelAdmin:
    """Sends the plan's requests at their part counts, each from its own thread (the line
    does not wait for an answer), and keeps the answers."""

    def __init__(self, host: str, port: int, prefix: str, variants: dict[str, Path], n: int):
        self.prefix = prefix
        self.variants = variants
        self.at = {max(1, int(f * n)): (action, tag) for f, action, tag in PLAN}
        self.requests: list[dict] = []
        self._threads: list[threading.Thread] = []
        self._answers: dict[bytes, threading.Event] = {}
        self._replies: dict[bytes, dict] = {}
        self._closed = False
        self.reply_topic = f"{prefix}/cmd/model/reply/sim-{uuid.uuid4().hex[:8]}"
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id="sim-admin", protocol=mqtt.MQTTv5
        )
        self.client.on_message = self._on_message
        ready = threading.Event()
        self.client.on_subscribe = lambda *a, **k: ready.set()
        self.client.connect(host, port, keepalive=5)
        self.client.loop_start()
        self.client.subscribe(self.reply_topic, qos=1)
        ready.wait(5)

    def tick(self, k: int) -> None:
        if k in self.at:
            action, tag = self.at[k]
            t = threading.Thread(target=self._ask, args=(k, action, tag), daemon=True)
            t.start()
            self._threads.append(t)

    def _ask(self, k: int, action: str, tag: str | None) -> None:
        corr = uuid.uuid4().bytes
        done = self._answers[corr] = threading.Event()
        req = {"at_part": k, "action": action, "model": tag, "sent": time.time()}
        self.requests.append(req)
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = self.reply_topic
        props.CorrelationData = corr
        body = {"action": action, **({"path": str(self.variants[tag])} if tag else {})}
        self.client.publish(f"{self.prefix}/cmd/model", json.dumps(body), qos=1, properties=props)
        if done.wait(120):
            req.update(answered=time.time(), **self._replies.pop(corr))
        log.warning("model request %s %s: %s", action, tag or "", req.get("outcome"))

    def _on_message(self, _c, _u, msg) -> None:
        corr = bytes(getattr(msg.properties, "CorrelationData", b"") or b"")
        if corr in self._answers:
            self._replies[corr] = json.loads(msg.payload)
            self._answers[corr].set()

    def close(self) -> None:
        for t in self._threads:
            t.join(130)
        if self._closed:
            return
        self._closed = True
        self.client.loop_stop()
        self.client.disconnect()

    def report(self, verdicts: dict, deadline_ms: float, window_s: float = 1.0) -> dict:
        """Outcomes, the model of each decided verdict in seq order (runs collapsed), and
        latency p99 around each change vs the run's."""
        decided = sorted(
            (v for v in verdicts.values() if v["reason"] in INSPECTED),
            key=lambda v: v["seq"],
        )
        runs: list[dict] = []
        for v in decided:
            if not runs or runs[-1]["model_id"] != v["model_id"]:
                runs.append({"model_id": v["model_id"], "from_part": v["part_id"], "parts": 0})
            runs[-1]["parts"] += 1
        lat = {key: (v["_received"] - v["t_trigger"]) * 1000.0 for key, v in verdicts.items()}
        all_lat = list(lat.values())
        changes = []
        for req in self.requests:
            if req.get("outcome") not in ("swapped", "rolled_back"):
                continue
            t = req["answered"]
            near = [
                (lat[key], v) for key, v in verdicts.items() if abs(v["t_trigger"] - t) <= window_s
            ]
            changes.append(
                {
                    "action": req["action"],
                    "to": req["model_id"],
                    "parts_within_window": len(near),
                    "p99_ms": _p99([x for x, _ in near]),
                    "max_ms": round(max((x for x, _ in near), default=0.0), 2),
                    "deadline_misses_or_failsafe": sum(
                        1 for x, v in near if x > deadline_ms or v["reason"] not in INSPECTED
                    ),
                }
            )
        return {
            "requests": [
                {
                    k: r.get(k)
                    for k in ("at_part", "action", "model", "outcome", "reason", "model_id")
                }
                | {"answer_s": round(r["answered"] - r["sent"], 3) if "answered" in r else None}
                for r in self.requests
            ],
            "model_runs": runs,
            "changes": changes,
            "window_s": window_s,
            "run_p99_ms": _p99(all_lat),
        }


def _p99(values: list[float]) -> float | None:
    return round(float(np.percentile(values, 99)), 2) if values else None
