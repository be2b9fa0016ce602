"""Changing the model on a running station: swap (command, SIGHUP), refusals, rollback, shadow."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from inspector.cli import main
from inspector.contract.preprocess import preprocess
from inspector.lab.broker import free_port, wait_for_port
from inspector.lab.modelkit import build_contrast_model, synthetic_part
from inspector.station.classifier import Classifier
from inspector.station.decision import Decider
from inspector.station.models import reload_on_sighup
from inspector.station.shadow import agreement

from .contract import validate
from .test_deploy import DEPLOY, secure_station_config
from .waiting import wait


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("models")
    return {
        "a": build_contrast_model(d / "a.onnx", size=32, name="model-a"),
        "b": build_contrast_model(d / "b.onnx", size=32, name="model-b", threshold=0.45),
        # stricter: half the contrast is enough to call a defect
        "strict": build_contrast_model(
            d / "strict.onnx", size=32, name="strict", contrast_at_half=4, threshold=0.475
        ),
        "big": build_contrast_model(d / "big.onnx", size=48, name="model-48"),
    }


class Admin:
    """An MQTT 5 requester on PREFIX/cmd/model: response topic plus correlation data."""

    def __init__(self, broker, prefix="inspector/test", user=None, password=None, tls=None):
        self.prefix = prefix
        self.replies: dict[bytes, dict] = {}
        self.shadow: list[dict] = []
        self.reply_topic = f"{prefix}/cmd/model/reply/{uuid.uuid4().hex[:8]}"
        self.c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"admin-{id(self)}", protocol=mqtt.MQTTv5
        )
        if tls:
            self.c.tls_set(ca_certs=str(tls))
        if user:
            self.c.username_pw_set(user, password)
        self.c.on_message = self._on_message
        ready = threading.Event()
        self.c.on_subscribe = lambda *a, **k: ready.set()
        self.c.connect(broker.host, broker.port)
        self.c.loop_start()
        self.c.subscribe([(self.reply_topic, 1), (f"{prefix}/shadow", 1)])
        assert ready.wait(5)

    def _on_message(self, _c, _u, msg) -> None:
        if msg.topic.endswith("/shadow"):
            self.shadow.append(json.loads(msg.payload))
            return
        corr = getattr(msg.properties, "CorrelationData", None)
        self.replies[bytes(corr or b"")] = json.loads(msg.payload)

    def ask(self, body: dict, timeout: float = 20.0) -> dict | None:
        corr = uuid.uuid4().bytes
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = self.reply_topic
        props.CorrelationData = corr
        self.c.publish(f"{self.prefix}/cmd/model", json.dumps(body), qos=1, properties=props)
        end = time.monotonic() + timeout
        while corr not in self.replies and time.monotonic() < end:
            time.sleep(0.02)
        return self.replies.get(corr)

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def decided(verdicts: list[dict]) -> list[dict]:
    return sorted(
        (v for v in verdicts if v["reason"] in ("ok", "defect", "uncertain", "anomaly")),
        key=lambda v: v["seq"],
    )


def test_swap_by_command_switches_at_one_part_and_rollback_restores(
    make_config, station_factory, line, broker, models
):
    cfg = make_config(model=models["a"], trigger="free-run", rate=60.0)
    station = station_factory(cfg)
    station.start()
    admin = Admin(broker)
    try:
        assert wait(lambda: len(line.verdicts) >= 10)
        reply = admin.ask({"action": "swap", "path": str(models["b"])})
        assert reply and reply["outcome"] == "swapped", reply
        assert reply["model_id"].startswith("model-b") and reply["previous"].startswith("model-a")
        assert wait(lambda: decided(line.verdicts)[-1]["model_id"].startswith("model-b"))
        n = len(line.verdicts)
        assert wait(lambda: len(line.verdicts) >= n + 10)

        # `inspector model rollback STATION.yaml` (this test broker has no users)
        assert main(["model", "rollback", str(cfg.config_path), "--user", ""]) == 0
        assert station.models.live.model_id.startswith("model-a")
        assert wait(lambda: decided(line.verdicts)[-1]["model_id"].startswith("model-a"))
        assert wait(
            lambda: (line.statuses[-1].get("model") or {}).get("id", "").startswith("model-a")
        )

        # `inspector model shadow` and `shadow-stop` end with 0 when the station did it (a
        # shadow that started once exited 1, and deploy scripts stop on that)
        assert main(["model", "shadow", str(cfg.config_path), str(models["b"]), "--user", ""]) == 0
        assert station.models.shadow and station.models.shadow.model_id.startswith("model-b")
        assert main(["model", "shadow-stop", str(cfg.config_path), "--user", ""]) == 0
        assert station.models.shadow is None
        # and 1 when it refused: a file that is not a model
        junk = cfg.config_path.with_name("junk.onnx")
        junk.write_bytes(b"not a model")
        assert main(["model", "shadow", str(cfg.config_path), str(junk), "--user", ""]) == 1
        assert station.models.shadow is None
    finally:
        admin.close()
        station.stop()

    ids = [v["part_id"] for v in line.verdicts]
    assert len(ids) == len(set(ids)), "a part decided twice"
    assert station.metrics.total("inspector_parts_total") == len(ids), "a part without a verdict"
    runs = [decided(line.verdicts)[0]["model_id"]]  # the models in seq order, runs collapsed
    for v in decided(line.verdicts):
        if v["model_id"] != runs[-1]:
            runs.append(v["model_id"])
    assert [r.split("@")[0][:7] for r in runs] == ["model-a", "model-b", "model-a"], runs
    # the status history names the part at which each change took effect
    history = station.models.status()["history"]
    assert [e["action"] for e in history] == ["swap", "rollback"]
    by_seq = {v["seq"]: v for v in decided(line.verdicts)}
    for event in history:
        first = event["first_part"]
        assert by_seq[first["seq"]]["model_id"] == event["to"]
        assert by_seq[first["seq"]]["part_id"] == first["part_id"]
        earlier = [v for s, v in by_seq.items() if s < first["seq"]]
        assert earlier[-1]["model_id"] == event["from"] if earlier else True


def test_sighup_reloads_the_current_link(make_config, station_factory, line, models, tmp_path):
    current = tmp_path / "current.onnx"
    current.symlink_to(models["a"])
    cfg = make_config(model=current, trigger="free-run", rate=30.0)
    station = station_factory(cfg)
    station.start()
    before = signal.getsignal(signal.SIGHUP)
    try:
        reload_on_sighup(station.models)
        tmp = tmp_path / "next"
        tmp.symlink_to(models["b"])
        tmp.replace(current)  # what a promotion does: re-point the link, then systemctl reload
        os.kill(os.getpid(), signal.SIGHUP)
        assert wait(lambda: station.models.live.model_id.startswith("model-b"))
        assert station.models.last["action"] == "reload"
        assert wait(lambda: decided(line.verdicts)[-1]["model_id"].startswith("model-b"))
        # a second reload with the link unchanged changes nothing
        assert station.models.handle("reload")["outcome"] == "unchanged"
    finally:
        signal.signal(signal.SIGHUP, before)


def test_refused_candidates_keep_the_old_model_and_say_why(
    make_config, station_factory, line, broker, models, tmp_path
):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage, not a protobuf" * 10)
    golden = tmp_path / "golden"
    (golden / "pass").mkdir(parents=True)
    rng = np.random.default_rng(1)
    cv2.imwrite(str(golden / "pass" / "a-defect.png"), synthetic_part(rng, True, 48))

    cfg = make_config(model=models["a"], trigger="free-run", rate=30.0)
    station = station_factory(cfg)
    station.start()
    admin = Admin(broker)
    try:
        assert wait(lambda: len(line.verdicts) >= 3)
        cases = {
            "load": {"action": "swap", "path": str(corrupt)},
            "acceptance": {"action": "swap", "path": str(models["big"])},
        }
        for stage, body in cases.items():
            reply = admin.ask(body)
            assert reply and reply["outcome"] == "refused", reply
            assert reply["stage"] == stage and reply["reason"], reply
            assert reply["model_id"].startswith("model-a")
        # golden gate: a known-defective part filed under pass/ makes any candidate disagree
        station.models.settings = dataclasses.replace(station.models.settings, golden=golden)
        reply = admin.ask({"action": "promote", "path": str(models["b"])})
        assert reply and reply["outcome"] == "refused" and reply["stage"] == "acceptance", reply
        assert "a-defect.png" in reply["reason"]
        # the retained status says why, and verdicts still come from the old model
        assert wait(lambda: (line.statuses[-1].get("model") or {}).get("last_change"))
        validate("status", line.statuses[-1])
        status = line.statuses[-1]["model"]
        assert status["id"].startswith("model-a")
        assert status["last_change"]["outcome"] == "refused"
        n = len(line.verdicts)
        assert wait(lambda: len(line.verdicts) >= n + 3)
        assert decided(line.verdicts)[-1]["model_id"].startswith("model-a")
        assert admin.ask({"action": "rollback"})["outcome"] == "refused"  # nothing kept yet
        bad = admin.ask({"action": "explode"})
        assert bad["outcome"] == "error" and "unknown action" in bad["reason"]
    finally:
        admin.close()


def test_shadow_counters_match_a_replay_of_both_models(
    make_config, station_factory, broker, models, parts_dir
):
    cfg = make_config(model=models["a"], trigger="free-run", rate=200.0, loop=False)
    station = station_factory(cfg)
    settings = station.models.settings
    station.models.settings = dataclasses.replace(
        settings, shadow=models["strict"], shadow_max_share=100.0
    )
    admin = Admin(broker)
    verdicts: dict[str, dict] = {}
    station.verdict_hooks.append(lambda v: verdicts.setdefault(v.part_id, v))
    try:
        station.start()
        assert wait(lambda: station.source_ended.is_set() and station.wait_idle(0), 20)
        compared = lambda: station.metrics.value(  # noqa: E731
            "inspector_shadow_parts_total", outcome="compared"
        )
        assert wait(lambda: compared() > 0 and len(admin.shadow) >= compared(), 10)
    finally:
        admin.close()
        station.stop()
    assert station.models.status()["shadow"].startswith("strict")

    # the replay: both models on the same preprocessed images, decided offline
    live = Classifier(cfg.model)
    cand = Classifier(dataclasses.replace(cfg.model, path=models["strict"]))
    dl = Decider(live.manifest, cfg.decision.thresholds)
    dc = Decider(cand.manifest, cfg.decision.thresholds)
    expected: dict[tuple, int] = {}
    files = {p.name: p for p in parts_dir.rglob("*.png")}
    for msg in admin.shadow:
        frame = files[verdicts[msg["part_id"]].frame]
        x = preprocess(cv2.imread(str(frame), cv2.IMREAD_UNCHANGED), live.spec)[None]
        a, b = dl.decide(live.run(x)[0]), dc.decide(cand.run(x)[0])
        key = (agreement(a.result, b.result), a.label, b.label)
        expected[key] = expected.get(key, 0) + 1
        assert (msg["live"]["result"], msg["shadow"]["result"]) == (a.result, b.result)
        assert msg["shadow_model_id"].startswith("strict") and msg["model_id"].startswith("model-a")
    got = {
        key: station.metrics.value(
            "inspector_shadow_decisions_total",
            agreement=key[0],
            live_class=key[1],
            shadow_class=key[2],
        )
        for key in expected
    }
    assert got == expected
    assert sum(expected.values()) == len(admin.shadow) == compared()
    assert {k[0] for k in expected} >= {"agree", "stricter"}, expected  # a telling replay
    # every live verdict went out as usual
    assert len(verdicts) == sum(1 for _ in parts_dir.rglob("*.png"))


def test_only_the_admin_user_may_change_the_model(
    tmp_path, model_path, parts_dir, station_factory, models
):
    """The shipped ACL on the locked-down broker: a request from any other user never
    reaches the station; the admin's does, and is answered."""
    from types import SimpleNamespace

    out = tmp_path / "broker"
    port = free_port()
    proc = subprocess.Popen(
        [str(DEPLOY / "mosquitto" / "dev-broker.sh"), str(out), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        assert wait_for_port("127.0.0.1", port, 20)
        users = dict(line.split(":", 1) for line in (out / "passwords.txt").read_text().split())
        cfg = secure_station_config((out, port, users), tmp_path, models["a"], parts_dir)
        station = station_factory(cfg)
        station.start()
        assert station.publisher.connected.wait(10), station.publisher.last_error
        broker = SimpleNamespace(host="localhost", port=port)
        for user in ("viewer", "plc", "gate", "inspector"):
            intruder = Admin(broker, cfg.prefix, user, users[user], tls=out / "ca.crt")
            try:
                assert intruder.ask({"action": "swap", "path": str(models["b"])}, 1.5) is None
            finally:
                intruder.close()
        assert station.models.live.model_id.startswith("model-a")
        assert station.models.last is None  # nothing reached the station
        admin = Admin(broker, cfg.prefix, "admin", users["admin"], tls=out / "ca.crt")
        try:
            reply = admin.ask({"action": "swap", "path": str(models["b"])})
        finally:
            admin.close()
        assert reply and reply["outcome"] == "swapped", reply
        station.stop()
    finally:
        proc.terminate()
        proc.wait(10)


def test_simulated_line_survives_two_swaps_a_refused_model_and_a_rollback(tmp_path):
    """``inspector simulate --fault model-swap``: every part accounted for, none passed
    without a timely pass, and the model ids in seq order follow the plan."""
    from inspector.lab.simulator import SimOptions, simulate

    assert main(["demo", "--prepare", str(tmp_path / "line"), "--parts", "30"]) == 0
    card = simulate(
        SimOptions(
            data=tmp_path / "line" / "parts",
            model=tmp_path / "line" / "model" / "demo.onnx",
            parts=120,
            rate_ppm=900,
            fault="model-swap",
            work=tmp_path / "work",
            out=tmp_path / "card.json",
        )
    )
    assert card["unaccounted"] == 0 and card["passed_without_timely_pass"] == 0
    assert card["escapes"] == 0
    swap = card["model_swap"]
    outcomes = [(r["action"], r["model"], r["outcome"]) for r in swap["requests"]]
    assert outcomes == [
        ("swap", "v2", "swapped"),
        ("swap", "v3", "swapped"),
        ("swap", "bad", "refused"),
        ("rollback", None, "rolled_back"),
    ]
    names = [run["model_id"].split("@")[0] for run in swap["model_runs"]]
    assert names == ["demo-cnn", "demo-cnn-v2", "demo-cnn-v3", "demo-cnn-v2"], names
    assert len(swap["changes"]) == 3 and all(c["parts_within_window"] for c in swap["changes"])
    # around each change (1 s either side) every part was inspected and decided in time
    misses = [c["deadline_misses_or_failsafe"] for c in swap["changes"]]
    assert misses == [0, 0, 0], swap["changes"]


def test_check_names_a_missing_golden_set_or_shadow_model(make_config, tmp_path, models):
    from inspector.station.check import check_station

    cfg = make_config(model=models["a"])
    text = cfg.config_path.read_text().replace(
        "warmup_runs: 1}",
        f'warmup_runs: 1, golden: "{tmp_path / "nogold"}", shadow: "{tmp_path / "no.onnx"}"}}',
    )
    cfg.config_path.write_text(text)
    problems, _ = check_station(cfg.config_path)
    assert any(p.startswith("model.golden:") for p in problems), problems
    assert any(p.startswith("model.shadow: model file not found") for p in problems), problems
