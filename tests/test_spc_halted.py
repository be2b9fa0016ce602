"""Parts the plant held (OPC UA Halt: reason ``halted``) are rejected uninspected: SPC puts
them on neither the quality nor the health chart, so a planned hold raises no alarm, and the
subgroups around it are those of the inspected parts alone."""

from __future__ import annotations

import dataclasses

import numpy as np

from inspector.spc.config import ChartsSection
from inspector.spc.monitor import Monitor
from inspector.spc.report import subgroups

from .spc_helpers import rows

CFG = ChartsSection(baseline_subgroups=10, per_class=False, reorder_parts=0)


def held(v):
    return dataclasses.replace(v, result="fail", reason="halted", label="", defects=0)


def stream(hold: bool):
    """2 % rejects over 30 subgroups of 200; with ``hold`` the plant holds 1,000 parts in the
    middle (the line keeps triggering, the station fails each one 'halted')."""
    inspected = rows("s1", [0.02] * 30, seed=4)
    if not hold:
        return inspected
    middle = [
        held(v) for v in rows("s1", [0.0] * 5, seed=5, seq0=100_000, t0=1000.0 + 20 * 200 * 0.1)
    ]
    return inspected[: 20 * 200] + middle + inspected[20 * 200 :]


def run(verdicts):
    opened = []
    mon = Monitor(CFG, lambda t: opened.append(t) if t.cleared is None else None)
    for i in range(0, len(verdicts), 100):
        mon.add(verdicts[i : i + 100])
    mon.flush()
    st = mon.stations["s1"]
    groups = [(g.parts, g.rejects, g.health) for g in list(st.baseline) + list(st.closed)]
    return groups, sorted((t.alarm.chart, t.alarm.rule) for t in opened), mon.held()


def test_a_hold_raises_no_alarm_and_leaves_the_subgroups_of_the_inspected_parts():
    plain = run(stream(hold=False))
    with_hold = run(stream(hold=True))
    assert with_hold[2] == 1000 and plain[2] == 0, "the held parts are counted apart"
    assert with_hold[:2] == plain[:2], "same subgroups, same alarms (none from the hold)"
    assert not [a for a in with_hold[1] if a[0] in ("reject", "health")]


def test_the_report_leaves_held_parts_off_its_charts():
    def cols(vs):
        return {
            "t_verdict": np.array([v.t_verdict for v in vs]),
            "result": np.array([v.result for v in vs]),
            "reason": np.array([v.reason for v in vs]),
        }

    cfg = ChartsSection(subgroup_parts=200)
    plain, with_hold = subgroups(cols(stream(False)), cfg), subgroups(cols(stream(True)), cfg)
    assert list(with_hold["n"]) == list(plain["n"]) and list(with_hold["reject"]) == list(
        plain["reject"]
    )
    assert with_hold["health"].sum() == 0
