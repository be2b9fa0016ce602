"""The reject gate's decisions: a part passes only on a timely pass verdict."""

from __future__ import annotations

import json
import sys
import time

import pytest

from inspector.errors import ConfigError
from inspector.gate.actuators import (
    CommandActuatorConfig,
    GpioActuatorConfig,
    LogActuatorConfig,
    make_actuator,
)
from inspector.gate.config import GateSection
from inspector.gate.core import GateCore

from .contract import validate


class FakeActuator:
    def __init__(self):
        self.scheduled, self.held = [], False

    def schedule(self, part_id, at):
        self.scheduled.append((part_id, at))

    def hold(self, on):
        self.held = on


@pytest.fixture
def gate():
    events = []
    act = FakeActuator()
    core = GateCore(GateSection(id="g", travel_ms=300, status_stale_s=0.5), act, events.append)
    core.set_connected(True)
    core.on_status(b'{"state": "online"}')
    return core, act, events


def trig(pid, ts=None):
    return json.dumps({"part_id": pid, "ts": ts or time.time()}).encode()


def verdict(pid, result="pass", reason="ok", seq=1):
    return json.dumps(
        {"part_id": pid, "result": result, "reason": reason, "seq": seq, "model_id": "m@1"}
    ).encode()


def settle(core, seconds=0.35):
    """Let the parts reach the gate (travel_ms is 300 here): passes become final there."""
    time.sleep(seconds)
    core.on_status(b'{"state": "online"}')
    core.tick()


def outcome(events, pid):
    return [(e["outcome"], e["reason"]) for e in events if e["part_id"] == pid]


def test_pass_only_on_timely_pass_and_reject_on_fail(gate):
    core, act, events = gate
    core.on_trigger(trig("a"))
    core.on_trigger(trig("b"))
    core.on_verdict(verdict("a"))
    core.on_verdict(verdict("b", "fail", "defect"))
    assert outcome(events, "b") == [("rejected", "defect")]  # a reject is final at once
    assert outcome(events, "a") == []  # a pass is final when the part reaches the gate
    settle(core)
    assert outcome(events, "a") == [("passed", "pass")]
    assert [p for p, _ in act.scheduled] == ["b"]
    for e in events:
        validate("gate_event", e)


def test_no_verdict_by_arrival_is_a_reject_and_a_late_verdict_changes_nothing(gate):
    core, act, events = gate
    core.on_trigger(trig("slow"))
    time.sleep(0.35)
    core.tick()
    assert outcome(events, "slow") == [("rejected", "no_verdict")]
    core.on_verdict(verdict("slow"))
    assert outcome(events, "slow") == [("rejected", "no_verdict")]
    assert core.counts["late_verdicts"] == 1


def test_duplicate_verdicts_are_idempotent_and_unknown_ones_counted(gate):
    core, _, events = gate
    core.on_trigger(trig("d"))
    core.on_verdict(verdict("d", seq=7))
    core.on_verdict(verdict("d", seq=7))
    core.on_verdict(verdict("ghost"))
    core.on_verdict(b"\xff not json")
    settle(core)
    assert outcome(events, "d") == [("passed", "pass")]
    assert core.counts["duplicate_verdicts"] == 1
    assert core.counts["unknown_verdicts"] == 1 and core.counts["invalid_verdicts"] == 1


def test_offline_status_rejects_everything_in_flight_and_new_parts(gate):
    core, _, events = gate
    core.on_trigger(trig("x1"))
    core.on_trigger(trig("x2"))
    core.on_verdict(verdict("x1"))
    core.on_status(b'{"state": "offline", "detail": "connection lost"}')
    core.on_trigger(trig("x3"))
    assert outcome(events, "x2") == [("rejected", "inspector_offline")]
    assert outcome(events, "x3") == [("rejected", "inspector_offline")]
    time.sleep(0.35)
    core.tick()
    assert outcome(events, "x1") == [("passed", "pass")]  # it had its timely pass already


def test_stale_status_rejects_parts_in_flight(gate):
    core, _, events = gate
    core.on_trigger(trig("s"))
    time.sleep(0.6)  # no status for longer than status_stale_s
    core.tick()
    assert outcome(events, "s") == [("rejected", "inspector_stale")]


def test_a_pass_with_a_reason_other_than_ok_is_not_a_pass(gate):
    core, _, events = gate
    core.on_trigger(trig("odd"))
    core.on_verdict(verdict("odd", "pass", "defect"))
    assert outcome(events, "odd") == [("rejected", "invalid_verdict")]


def test_blind_gate_holds_reject_and_late_triggers_are_not_passes(gate):
    core, act, events = gate
    core.on_trigger(trig("passed-before"))
    core.on_verdict(verdict("passed-before"))  # a timely pass, but the part arrives while held
    core.set_connected(False)
    assert act.held
    t_seen = time.time()
    time.sleep(0.35)
    core.set_connected(True)
    assert act.held  # triggers sent during the outage may still be coming: held travel_ms more
    core.tick()
    assert outcome(events, "passed-before") == [("rejected", "gate_blind")]
    time.sleep(0.32)
    core.tick()
    assert not act.held
    core.on_trigger(trig("during-outage", ts=t_seen))  # redelivered after its arrival
    assert outcome(events, "during-outage") == [("rejected", "gate_blind")]
    core.on_trigger(trig("just-late", ts=time.time() - 1.0))  # no outage covered it
    assert outcome(events, "just-late") == [("missed", "late_trigger")]


def test_encoder_mode_counts_ticks_not_seconds():
    events = []
    core = GateCore(
        GateSection(encoder_topic="line/encoder", travel_counts=100), FakeActuator(), events.append
    )
    core.set_connected(True)
    core.on_encoder(b"1000")
    core.on_trigger(trig("e1"))
    time.sleep(0.05)
    core.tick()
    core.on_encoder(b'{"count": 1099}')
    assert not events
    core.on_encoder(b'{"count": 1100}')
    assert outcome(events, "e1") == [("rejected", "no_verdict")]


def test_actuator_merges_rejects_closer_than_its_spacing_and_never_drops_one():
    act = make_actuator(LogActuatorConfig(pulse_ms=20, min_spacing_ms=50))
    act.start()
    now = time.monotonic()
    for i, dt in enumerate([0.0, 0.03, 0.06, 0.4]):  # three close together, one far later
        act.schedule(f"p{i}", now + dt)
    time.sleep(0.6)
    act.stop(drain_s=2)
    fired = dict(act.fired)
    assert list(fired) == ["p0", "p1", "p2", "p3"]
    for i, dt in enumerate([0.0, 0.03, 0.06, 0.4]):  # each at its own time: none early, none late
        assert 0 <= fired[f"p{i}"] - (now + dt) < 0.015, (i, fired[f"p{i}"] - now)
    assert act.merged == 2 and act.delayed == 0


def test_command_actuator_passes_hostile_ids_as_one_argument(tmp_path):
    out = tmp_path / "fired.txt"
    script = tmp_path / "reject.py"
    script.write_text(f"import sys; open({str(out)!r}, 'a').write(repr(sys.argv[1:]) + '\\n')\n")
    act = make_actuator(
        CommandActuatorConfig(command=[sys.executable, str(script)], min_spacing_ms=0)
    )
    act.start()
    act.schedule("x; rm -rf / #", time.monotonic())
    act.stop(drain_s=5)
    assert out.read_text().strip() == repr(["x; rm -rf / #"])


def test_gpio_without_a_chip_is_a_clear_error():
    act = make_actuator(GpioActuatorConfig(chip="/dev/gpiochip-none", line=3))
    with pytest.raises(ConfigError, match="gpio|GPIO"):
        act.open()


def test_station_silence_is_counted_only_while_the_gate_can_hear(gate):
    core, _, events = gate
    core.on_trigger(trig("waiting"))
    core.set_connected(False)
    time.sleep(0.6)  # longer than status_stale_s, but the gate was deaf, not the station silent
    core.set_connected(True)
    core.tick()
    assert [o for o, _ in outcome(events, "waiting")] == ["rejected"]  # it went by meanwhile
    core.on_trigger(trig("after-outage"))
    core.tick()
    assert outcome(events, "after-outage") == []  # not stale: still waiting for its verdict
