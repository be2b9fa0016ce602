"""The station's hold (``Handlers.hold``): a plant view stops and resumes inspection. Here a
view of the test's own on a free-run station and a real Mosquitto; the OPC UA state machine
that uses it is tested in test_opcua.py."""

from __future__ import annotations

import time

from inspector.station.link import Handlers

from .contract import validate


class HoldingView:
    """A plant view that keeps the station's handlers, as the OPC UA view does."""

    def __init__(self) -> None:
        self.handlers: Handlers | None = None
        self.statuses: list[dict] = []

    def start(self, handlers: Handlers) -> None:
        self.handlers = handlers

    def stop(self) -> None:
        pass

    def verdict(self, verdict) -> None:
        pass

    def status(self, payload: dict) -> None:
        self.statuses.append(payload)


def _new_verdicts(line, after: int, n: int) -> list[dict]:
    got = line.wait_for(after + n)[after:]
    assert len(got) >= n
    for v in got:
        validate("verdict", {k: x for k, x in v.items() if not k.startswith("_")})
    return got


def test_a_held_free_run_station_fails_every_part_until_resumed(make_config, station_factory, line):
    view = HoldingView()
    station = station_factory(make_config(trigger="free-run", rate=40.0), views=(view,))
    station.start()
    assert view.handlers is not None and view.handlers.hold is not None
    inspected = _new_verdicts(line, 0, 10)
    assert "halted" not in {v["reason"] for v in inspected}

    view.handlers.hold("halted over OPC UA (test)")
    assert view.statuses[-1]["state"] == "halted"
    status = line.wait_status("halted")
    assert status is not None and status["detail"].startswith("halted over OPC UA (test)")
    validate("status", status)
    healthy, report = station.health()
    assert not healthy and "halted over OPC UA (test)" in report["reason"]
    time.sleep(0.1)  # parts already queued for the classifier when the hold came are decided
    after = len(line.verdicts)
    held = _new_verdicts(line, after, 12)
    assert {(v["result"], v["reason"]) for v in held} == {("fail", "halted")}
    assert all(v["detail"] == "halted over OPC UA (test)" for v in held)
    assert all(v["class"] is None and v["scores"] == {} for v in held)

    view.handlers.hold(None)
    assert line.wait_status("online") is not None
    time.sleep(0.1)
    after = len(line.verdicts)
    resumed = _new_verdicts(line, after, 12)
    assert "halted" not in {v["reason"] for v in resumed}
    assert {v["result"] for v in resumed} == {"pass", "fail"}
