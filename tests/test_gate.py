"""The reject gate's decisions: a part passes only on a timely pass verdict."""

from __future__ import annotations

import json
import sys
import time

import pytest

from inspector.contract.triggers import MAX_PART_ID_CHARS, MAX_PAYLOAD_BYTES, SAME_PART_WINDOW_S
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


def verdict(pid, result="pass", reason="ok", seq=1, t_trigger=None):
    v = {"part_id": pid, "result": result, "reason": reason, "seq": seq, "model_id": "m@1"}
    if t_trigger is not None:
        v["t_trigger"] = t_trigger
    return json.dumps(v).encode()


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


def test_a_part_the_plant_held_is_rejected_with_the_stations_reason(gate):
    """While the plant holds inspection (OPC UA Halt) the station fails each part 'halted':
    the gate's event says so, not 'invalid_verdict'."""
    core, act, events = gate
    core.on_trigger(trig("held"))
    core.on_verdict(verdict("held", "fail", "halted"))
    assert outcome(events, "held") == [("rejected", "halted")]
    assert core.counts["invalid_verdicts"] == 0
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
    # arrived well before the outage began (whatever the load delayed above): none covered it
    core.on_trigger(trig("just-late", ts=t_seen - 1.0))
    assert outcome(events, "just-late") == [("missed", "late_trigger")]


def test_a_part_id_that_comes_round_again_is_a_new_part_and_is_gated(gate):
    """A PLC counter wraps or restarts at 1: the same id names a new part, which passes only
    on its own timely pass. A redelivered trigger (the same ts) is still the same part."""
    core, act, events = gate
    t1 = time.time()
    core.on_trigger(trig("7", ts=t1))
    core.on_trigger(trig("7", ts=t1))  # QoS 1 redelivery: the same part
    core.on_verdict(verdict("7", seq=1, t_trigger=t1))
    settle(core)
    assert outcome(events, "7") == [("passed", "pass")]
    time.sleep(max(0.0, t1 + SAME_PART_WINDOW_S + 0.05 - time.time()))
    core.on_status(b'{"state": "online"}')
    t2 = time.time()
    core.on_trigger(trig("7", ts=t2))  # the counter came round: a new part, with no verdict
    core.on_trigger(trig("7", ts=t1))  # the first trigger, redelivered late: changes nothing
    core.on_verdict(verdict("7", seq=1, t_trigger=t1))  # the first part's verdict, again
    settle(core)
    assert outcome(events, "7") == [("passed", "pass"), ("rejected", "no_verdict")]
    assert [p for p, _ in act.scheduled] == ["7"]
    assert core.counts["duplicate_triggers"] == 2 and core.counts["duplicate_verdicts"] == 1
    for e in events:
        validate("gate_event", e)


def test_a_trigger_the_station_refuses_is_rejected_as_invalid_trigger(gate):
    """The station refuses an id over max_part_id_chars (or a payload over max_payload_bytes)
    and sends no verdict; the gate says why the part was rejected, at once."""
    core, act, events = gate
    long_id = "L" * (MAX_PART_ID_CHARS + 1)
    core.on_trigger(trig(long_id))
    padded = json.dumps({"part_id": "big", "ts": time.time(), "note": "x" * MAX_PAYLOAD_BYTES})
    core.on_trigger(padded.encode())
    core.on_trigger(trig("L" * MAX_PART_ID_CHARS))  # at the limit: an ordinary part
    assert outcome(events, long_id) == [("rejected", "invalid_trigger")]
    assert outcome(events, "big") == [("rejected", "invalid_trigger")]
    assert outcome(events, "L" * MAX_PART_ID_CHARS) == []
    assert [p for p, _ in act.scheduled] == [long_id, "big"]
    assert core.counts["malformed_triggers"] == 0
    for e in events:
        validate("gate_event", e)


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


class FakeGpiod:
    """The ``gpiod`` package (libgpiod 2) at its API boundary: a chip whose line requests
    record every value written, with the monotonic time it was written."""

    def __init__(self, chips=("/dev/gpiochip-fake",)):
        from types import ModuleType, SimpleNamespace

        self.chips, self.requests, self.writes = set(chips), [], []
        self.released = False
        values = SimpleNamespace(ACTIVE="active", INACTIVE="inactive")
        self.module = ModuleType("gpiod")
        self.module.LineSettings = lambda **kw: dict(kw)
        self.module.request_lines = self._request_lines
        self.line_module = ModuleType("gpiod.line")
        self.line_module.Direction = SimpleNamespace(OUTPUT="output", INPUT="input")
        self.line_module.Value = values
        self.module.line = self.line_module

    def _request_lines(self, path, consumer=None, config=None):
        if path not in self.chips:
            raise FileNotFoundError(2, "No such file or directory", path)
        self.requests.append((path, consumer, config))
        fake = self

        class Request:
            def set_value(self, line, value):
                fake.writes.append((time.monotonic(), line, value))

            def release(self):
                fake.released = True

        return Request()

    def pulses(self):
        """(on, off) monotonic times of each stretch the line was active."""
        out, on = [], None
        for t, _, v in self.writes:
            if v == "active" and on is None:
                on = t
            elif v == "inactive" and on is not None:
                out.append((on, t))
                on = None
        return out


@pytest.fixture
def fake_gpiod(monkeypatch):
    fake = FakeGpiod()
    monkeypatch.setitem(sys.modules, "gpiod", fake.module)
    monkeypatch.setitem(sys.modules, "gpiod.line", fake.line_module)
    return fake


def test_gpio_actuator_pulses_the_line_at_each_part_and_holds_it_while_blind(fake_gpiod):
    act = make_actuator(
        GpioActuatorConfig(
            chip="/dev/gpiochip-fake", line=3, active_low=True, pulse_ms=100, min_spacing_ms=40
        )
    )
    act.start()
    [(chip, consumer, config)] = fake_gpiod.requests
    assert (chip, list(config)) == ("/dev/gpiochip-fake", [3]) and consumer
    assert config[3] == {"direction": "output", "active_low": True, "output_value": "inactive"}
    now = time.monotonic()

    def at(t):
        time.sleep(max(0.0, now + t - time.monotonic()))

    act.schedule("p0", now + 0.05)
    act.schedule("p1", now + 0.40)
    at(0.07)  # p0's pulse is on
    act.hold(True)  # the gate went blind mid-pulse ...
    at(0.09)
    act.hold(False)  # ... and saw again: p0's pulse still runs its full pulse_ms
    at(0.60)
    t_hold = time.monotonic()
    act.hold(True)  # blind between parts: the output stays on until it sees again
    at(0.70)
    t_seen = time.monotonic()
    act.hold(False)
    act.stop(drain_s=1)
    assert [p for p, _ in act.fired] == ["p0", "p1"] and act.failed == 0
    assert {line for _, line, _ in fake_gpiod.writes} == {3}
    (on0, off0), (on1, off1), (on_held, off_held) = fake_gpiod.pulses()
    for due, on, off in ((0.05, on0, off0), (0.40, on1, off1)):  # at the part, for pulse_ms
        assert 0 <= on - (now + due) < 0.05, (due, on - now)
        assert 0.1 - 0.005 <= off - on < 0.1 + 0.05, (due, off - on)
    assert t_hold <= on_held <= t_seen <= off_held < t_seen + 0.05
    assert fake_gpiod.released


def test_gpio_without_a_chip_or_without_gpiod_is_a_clear_error(fake_gpiod, monkeypatch):
    act = make_actuator(GpioActuatorConfig(chip="/dev/gpiochip-none", line=3))
    with pytest.raises(ConfigError, match="cannot open GPIO line 3 on /dev/gpiochip-none"):
        act.open()
    monkeypatch.setitem(sys.modules, "gpiod", None)  # the package is not installed
    with pytest.raises(ConfigError, match="needs the gpiod package"):
        act.open()


def test_gpio_actuator_on_a_simulated_chip(tmp_path):
    """The real libgpiod path, on a gpio-sim chip (configfs; needs root), when one is there."""
    gpiod = pytest.importorskip("gpiod")
    sim = _gpio_sim_chip()
    if sim is None:
        pytest.skip("no gpio-sim chip (modprobe gpio-sim and a configfs bank)")
    chip, value_file = sim
    act = make_actuator(GpioActuatorConfig(chip=chip, line=0, pulse_ms=80, min_spacing_ms=20))
    act.start()
    try:
        assert value_file.read_text().strip() == "0"
        act.schedule("p0", time.monotonic())
        time.sleep(0.04)
        assert value_file.read_text().strip() == "1"
        time.sleep(0.1)
        assert value_file.read_text().strip() == "0"
        act.hold(True)
        assert value_file.read_text().strip() == "1"
        act.hold(False)
        assert value_file.read_text().strip() == "0"
    finally:
        act.stop(drain_s=1)
    del gpiod


def _gpio_sim_chip():
    """(chip device, value file of its line 0) of a live gpio-sim bank, or None."""
    from pathlib import Path

    for dev in sorted(Path("/sys/devices/platform").glob("gpio-sim.*/gpiochip*")):
        value = dev / "sim_gpio0" / "value"
        if value.exists() and Path("/dev", dev.name).exists():
            return f"/dev/{dev.name}", value
    return None


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
