"""Malformed trigger payloads are logged and counted and never stop the station."""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inspector.contract.triggers import TriggerError, parse_trigger

from .contract import validate

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)


@given(st.binary(max_size=6000))
def test_arbitrary_bytes_either_parse_or_raise_trigger_error(payload):
    try:
        trig = parse_trigger(payload)
    except TriggerError:
        return
    assert isinstance(trig.part_id, str) and 0 < len(trig.part_id) <= 256


@given(json_values)
def test_arbitrary_json_either_parses_or_raises_trigger_error(value):
    try:
        trig = parse_trigger(json.dumps(value).encode())
    except TriggerError:
        return
    assert trig.part_id == value["part_id"]


def test_valid_trigger_keeps_part_id_verbatim():
    pid = "Lot 7/../part #3 \u00e9\u6f22"
    trig = parse_trigger(
        json.dumps({"part_id": pid, "ts": 1764370000.5, "deadline": 1764370001}).encode()
    )
    assert (trig.part_id, trig.ts, trig.deadline) == (pid, 1764370000.5, 1764370001.0)


@pytest.mark.parametrize(
    "payload, why",
    [
        (b"\xff\xfe\x00garbage", "not UTF-8"),
        (b"{not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"part_id": ""}', "part_id"),
        (b'{"part_id": 17}', "part_id"),
        (b'{"part_id": "a", "ts": "yesterday"}', "ts must be"),
        (b'{"part_id": "a", "deadline": -1}', "deadline must be"),
        (b'{"part_id": "a", "ts": 1e999}', "ts must be"),
        (b"[" * 5000 + b"]" * 5000, "exceeds"),
        (json.dumps({"part_id": "x" * 300}).encode(), "longer than"),
    ],
)
def test_bad_payloads_say_why(payload, why):
    with pytest.raises(TriggerError, match=why):
        parse_trigger(payload)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    payloads=st.lists(
        st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()),
        min_size=1,
        max_size=5,
    )
)
def test_hostile_payloads_on_the_wire_never_stop_the_station(hostile_station, payloads):
    station, line = hostile_station
    before = station.metrics.value("inspector_triggers_total", outcome="malformed")
    accepted_before = station.metrics.value("inspector_triggers_total", outcome="accepted")
    for p in payloads:
        line.raw(p)
    n = len(line.verdicts)
    line.trigger(f"good-after-{n}")
    assert any(v["part_id"] == f"good-after-{n}" for v in line.wait_for(n + 1, timeout=5))
    malformed = station.metrics.value("inspector_triggers_total", outcome="malformed") - before
    accepted = (
        station.metrics.value("inspector_triggers_total", outcome="accepted") - accepted_before
    )
    assert malformed + accepted == len(payloads) + 1


@pytest.fixture(scope="module")
def hostile_station(tmp_path_factory, model_path, parts_dir):
    from inspector.lab.broker import Mosquitto
    from inspector.station.config import load_config
    from inspector.station.pipeline import Station

    from .conftest import Line, station_yaml

    b = Mosquitto().start()
    d = tmp_path_factory.mktemp("hostile")
    (d / "s.yaml").write_text(
        station_yaml(model_path, parts_dir, b, rate=60) + f'recorder: {{path: "{d}/rec"}}\n'
    )
    station = Station(load_config(d / "s.yaml"))
    station.start()
    line = Line(b)
    assert line.wait_status("online")
    # one huge payload and a NUL-laden id, on the real wire
    line.raw(b"x" * 200_000)
    line.trigger("nul\x00id")
    time.sleep(0.3)
    yield station, line
    line.close()
    station.stop()
    b.stop()


def test_station_and_gate_refuse_the_same_triggers():
    from inspector.gate.config import GateSection
    from inspector.station.config import TriggerSection

    station, gate = TriggerSection(), GateSection()
    assert station.max_part_id_chars == gate.max_part_id_chars
    assert station.max_payload_bytes == gate.max_payload_bytes


def test_a_part_id_that_comes_round_again_is_inspected_as_a_new_part(
    make_config, station_factory, line
):
    """A PLC counter wraps or restarts at 1: the same id, a new physical part, a new verdict.
    The same trigger delivered again (QoS 1) stays one part."""
    station = station_factory(make_config(trigger="mqtt"))
    station.start()
    assert line.wait_status("online"), line.statuses
    t_first = time.time() - 60.0  # the counter's previous round, a minute ago
    line.trigger("0001", ts=t_first)
    line.trigger("0001", ts=t_first)  # redelivered
    assert len(line.wait_for(1)) == 1
    line.trigger("0001")  # the counter came round: a new part
    verdicts = line.wait_for(2)
    line.trigger("0001", ts=t_first)  # the old trigger, redelivered late: nothing new
    time.sleep(0.5)
    assert [v["part_id"] for v in line.verdicts] == ["0001", "0001"]
    first, second = verdicts[:2]
    assert first["t_trigger"] == t_first and second["t_trigger"] > t_first + 59
    assert second["seq"] != first["seq"] and second["reason"] in ("ok", "defect")
    for v in verdicts:
        validate("verdict", {k: x for k, x in v.items() if not k.startswith("_")})
    assert station.metrics.value("inspector_triggers_total", outcome="duplicate") == 2
