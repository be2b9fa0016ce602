"""The whole line, scored: a real Mosquitto, a real inspector process, the real gate, and faults.

Recovery bound (stated in docs/simulator.md): after a fault clears, the first part
triggered afterwards is inspected again within RECOVERY_BOUND_S.
"""

from __future__ import annotations

import json
import threading

import paho.mqtt.client as mqtt
import pytest

from inspector.cli import main
from inspector.lab.simulator import SimOptions, simulate

from .contract import validate

RECOVERY_BOUND_S = 5.0
SAFE_KEYS = ("escapes", "unaccounted", "passed_without_timely_pass", "missed")


@pytest.fixture(scope="module")
def line_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("line")
    assert main(["demo", "--prepare", str(d), "--parts", "30"]) == 0
    return d


def options(line_data, tmp_path, **kw) -> SimOptions:
    base = dict(
        data=line_data / "parts",
        model=line_data / "model" / "demo.onnx",
        parts=48,  # a dozen parts after the fault clears, even on a busy machine
        rate_ppm=480,
        fault_s=1.5,
        travel_ms=1200,
        deadline_ms=1000,
        work=tmp_path / "work",
        out=tmp_path / "scorecard.json",
    )
    base.update(kw)
    return SimOptions(**base)


def assert_safe(card: dict) -> None:
    for key in SAFE_KEYS:
        assert card[key] == 0, (key, card)
    assert card["passed"] + card["rejected"] == card["parts"]


def test_clean_run_scores_perfectly_and_every_message_keeps_the_contract(
    line_data, tmp_path, broker
):
    seen: list[tuple[str, bytes]] = []
    lock = threading.Lock()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)

    def on_message(_c, _u, m):
        with lock:
            seen.append((m.topic, m.payload))

    sub.on_message = on_message
    sub.connect(broker.host, broker.port)
    sub.subscribe("inspector/sim/#", qos=1)
    sub.loop_start()
    try:
        card = simulate(options(line_data, tmp_path, broker=f"{broker.host}:{broker.port}"))
    finally:
        sub.loop_stop()
    assert_safe(card)
    assert card["false_rejects"] == 0 and card["failsafe_rejects"] == {}, card["failsafe_examples"]
    assert card["correct_passes"] + card["correct_rejects"] == card["parts"]
    assert card["image_mismatches"] == 0 and card["deadline_misses"] == 0
    assert card["latency_ms"]["p99"] < 1000
    assert json.loads((tmp_path / "scorecard.json").read_text())["parts"] == 48
    kinds = {"trigger": 0, "verdict": 0, "status": 0, "gate": 0}
    for topic, payload in seen:
        kind = topic.rsplit("/", 1)[1]
        if not payload:
            continue
        validate("gate_event" if kind == "gate" else kind, json.loads(payload))
        kinds[kind] += 1
    assert kinds["trigger"] == kinds["verdict"] == kinds["gate"] == 48 and kinds["status"] >= 1


@pytest.mark.parametrize(
    "fault, reasons",
    [
        ("broker-restart", {"timeout", "no_verdict", "gate_blind", "inspector_stale"}),
        ("source-loss", {"source_lost"}),
        ("slow-model", {"timeout"}),
        ("kill-inspector", {"inspector_offline", "inspector_stale", "no_verdict"}),
        ("bad-payloads", set()),
        ("model-error", {"error"}),
    ],
)
def test_fault_never_passes_an_uninspected_part_and_inspection_resumes(
    line_data, tmp_path, fault, reasons
):
    # a slow model's parts must fail by the station's own timeout verdict, which a loaded
    # machine can delay past the deadline when it is due only 20 ms before it (the gate then
    # rejects the part as no_verdict: safe, but not the path this case checks)
    margin = {"timeout_margin_ms": 150.0} if fault == "slow-model" else {}
    card = simulate(options(line_data, tmp_path, fault=fault, **margin))
    assert_safe(card)
    assert card["false_rejects"] == 0
    assert set(card["failsafe_rejects"]) <= reasons, card["failsafe_examples"]
    examples = card["failsafe_examples"]
    if reasons:
        assert sum(card["failsafe_rejects"].values()) > 0  # the fault did bite
        assert examples and {e["gate_reason"] for e in examples} <= reasons
    else:
        assert card["gate_counts"]["malformed_triggers"] > 0
    if fault in ("source-loss", "slow-model", "model-error"):  # the station's own verdict says why
        said = [e for e in examples if e.get("verdict_reason") in reasons]
        assert said and all(e["detail"] for e in said), examples
    recovery = card["fault"]["recovery_s"]
    assert recovery is not None and recovery <= RECOVERY_BOUND_S, card["fault"]
    assert card["image_mismatches"] == 0
    if fault == "model-error":  # one batch failed (max_batch 8); the parts after it were inspected
        assert card["failsafe_rejects"]["error"] <= 8
        assert card["correct_passes"] + card["correct_rejects"] == card["parts"]


def test_a_part_counter_that_wraps_mid_run_never_passes_an_uninspected_part(line_data, tmp_path):
    """Ids come round every 32 parts (4 s here): each is a new part, inspected and gated."""
    card = simulate(options(line_data, tmp_path, part_id_wrap=32))
    assert_safe(card)
    assert card["parts"] == 48 and card["gate_counts"]["parts"] == 48
    assert card["failsafe_rejects"] == {}, card["failsafe_examples"]
    assert card["false_rejects"] == 0
    assert card["correct_passes"] + card["correct_rejects"] == card["parts"]
    assert card["image_mismatches"] == 0 and card["deadline_misses"] == 0


def test_simulate_cli_rejects_bad_arguments(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert (
        main(["simulate", "--data", str(tmp_path / "empty"), "--model", str(tmp_path / "m.onnx")])
        != 0
    )
    assert "simulate:" in capsys.readouterr().err
