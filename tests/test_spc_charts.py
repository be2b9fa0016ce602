"""SPC on hand-made sequences: each chart rule fires exactly where it should, the monitor
finds an injected shift and clears it, fail-safe reasons go to the health chart, and alarm
history waits for a store that cannot take it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from inspector.spc import charts
from inspector.spc.alarms import AlarmBoard, context_changes
from inspector.spc.config import ChartsSection
from inspector.spc.monitor import Monitor
from inspector.spc.store import Store, VerdictRow

from .spc_helpers import rows


def fired(z, rule, side="both"):
    return list(np.nonzero(charts.run_rules(np.array(z, float), (rule,), side)[rule])[0])


# -- charts: each rule fires exactly where it should ------------------------------------------
def test_rule_1_one_point_beyond_3_sigma():
    z = [0, 1, 3.1, 0, -3.2, 2.9]
    assert fired(z, "we1_beyond_3s") == [2, 4]
    assert fired(z, "we1_beyond_3s", side="upper") == [2]


def test_rule_2_two_of_three_beyond_2_sigma_same_side():
    z = [0, 2.5, 0, 2.1, 0, 0, 2.2, -2.3, 2.4, 0, -2.1, -2.2]
    # 1 & 3 complete a pattern at 3; 6 & 8 at 8 (7 is on the other side); 10 & 11 at 11
    assert fired(z, "we2_2of3_beyond_2s") == [3, 8, 11]
    assert fired(z, "we2_2of3_beyond_2s", side="upper") == [3, 8]


def test_rule_3_four_of_five_beyond_1_sigma():
    z = [1.5, 1.2, 0, 1.1, 1.3, 0, 0, 0]
    assert fired(z, "we3_4of5_beyond_1s") == [4]
    assert fired([1.5, 1.2, -1.3, 1.1, 0.2], "we3_4of5_beyond_1s") == []


def test_rule_4_eight_on_one_side_and_the_nelson_rules():
    assert fired([0.1] * 7 + [-0.1] + [0.2] * 8, "we4_8_same_side") == [15]
    assert fired([0.1] * 10, "we4_8_same_side") == [7, 8, 9]
    assert fired([0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.4], "n3_6_trend") == [5]
    alt = [(-1) ** i * 0.5 for i in range(14)]
    assert fired(alt, "n4_14_alternating") == [13]
    assert fired([0.2] * 15 + [1.5], "n7_15_within_1s") == [14]
    assert fired([1.5, -1.5] * 4 + [0], "n8_8_outside_1s") == [7]
    with pytest.raises(ValueError):
        charts.run_rules(np.zeros(3), ("nope",))


def test_binomial_z_keeps_the_3_sigma_tail_and_limits_follow_subgroup_size():
    # np = 4: 12 rejects is the first count beyond 3 sigma (chance 0.09 %), 11 is not
    z = charts.binomial_z(np.array([4, 11, 12]), np.array([200, 200, 200]), 0.02)
    assert abs(z[0]) < 0.2 and z[1] < 3 < z[2]
    assert charts.p_probability_limits(0.02, np.array([200]))[0] == pytest.approx(12 / 200)
    centre, lo, hi = charts.p_limits(0.02, np.array([200, 800]))
    assert hi[0] > hi[1] > centre[0] == 0.02 and lo[0] == 0
    u, _, uhi = charts.u_chart(np.array([2, 30]), np.array([100, 100]), 0.05)
    assert u[0] < uhi[0] and u[1] > uhi[1]


def test_ewma_and_cusum_find_a_small_sustained_shift():
    z = np.r_[np.zeros(20), np.full(20, 1.5)]
    sig = charts.evaluate(z)
    ooc = sig.out_of_control()
    first_ewma = int(np.argmax(ooc["ewma"]))
    first_cusum = int(np.argmax(ooc["cusum"]))
    assert 20 < first_ewma < 35 and 20 < first_cusum < 35
    assert not ooc["ewma"][:20].any() and not ooc["cusum"][:20].any()


# -- the monitor: an injected shift detected, then cleared ------------------------------------


def test_an_injected_shift_is_detected_and_cleared(tmp_path):
    store = Store(tmp_path / "spc.sqlite")
    published = []
    board = AlarmBoard(store, published.append, context_window_s=600)
    mon = Monitor(ChartsSection(baseline_subgroups=25, per_class=False), board.on_transition)
    store.add_context([("line/lot", 900.0, "A"), ("line/lot", 1890.0, "B")])
    mon.add(rows("s1", [0.02] * 45, seed=1))
    assert not board.active, "no alarm on an in-control process"
    mon.add(rows("s1", [0.08] * 10, seed=2, seq0=45 * 200))
    active = {a.rule for a in board.active.values()}
    assert active & {"ewma", "cusum", "we1_beyond_3s"}, active
    alarm = next(iter(board.active.values()))
    assert alarm.chart == "reject" and alarm.subgroups and alarm.since >= 1000 + 45 * 20 - 200
    assert any(c["topic"] == "line/lot" and c["to"] == "B" for c in alarm.context)
    retained = json.loads(published[-1])
    assert retained["active"] and retained["active"][0]["station"] == "s1"
    mon.add(rows("s1", [0.02] * 80, seed=3, seq0=55 * 200))
    assert not board.active, "cleared when back in control"
    assert json.loads(published[-1])["active"] == []
    history = store.alarms(0, 1e12)
    assert history and all(row[4] is not None for row in history)  # every alarm has cleared


def test_fail_safe_reasons_go_to_the_health_chart_not_the_reject_rate():
    mon = Monitor(ChartsSection(baseline_subgroups=5, per_class=False), lambda t: None)
    base = rows("s1", [0.02] * 10, seed=4)
    mon.add(base)
    t = base[-1].t_verdict
    timeouts = [
        VerdictRow("s1", 10_000 + i, f"t{i}", t + i, t + i, "fail", "timeout", None, 0, "m")
        for i in range(200)
    ]
    mon.add(timeouts)
    mon.flush()  # the newest verdicts wait for late ones until then (or charts.reorder_s)
    st = mon.stations["s1"]
    assert st.last["health"]["rate"] == 1.0 and st.last["reject"]["rate"] == 0.0
    assert ("health", "we1_beyond_3s") in st.active and ("reject", "we1_beyond_3s") not in st.active


def test_context_changes_lists_only_changes():
    rows_ = [("t", 1.0, "20"), ("t", 5.0, "20"), ("t", 6.0, "25"), ("lot", 7.0, "L2")]
    assert context_changes(rows_, 2.0) == [
        {"topic": "t", "ts": 6.0, "from": "20", "to": "25"},
        {"topic": "lot", "ts": 7.0, "from": None, "to": "L2"},
    ]


def test_alarm_history_the_store_cannot_take_waits_and_is_kept_in_order():
    from inspector.spc.monitor import Alarm, Transition

    class Store:
        def __init__(self):
            self.down, self.kept = True, []

        def context(self, *_a):
            return []

        def _write(self, *args):
            if self.down:
                raise OSError("database is locked")
            self.kept.append(args)

        open_alarm = clear_alarm = _write

    store, published = Store(), []
    board = AlarmBoard(store, published.append)
    alarm = Alarm("s1", "reject", "ewma", 10.0, [{"t_end": 12.0}], 3.5, 3.0)
    board.on_transition(Transition(alarm))
    board.on_transition(Transition(alarm, cleared=20.0))
    assert len(published) == 2 and store.kept == [], "published at once, kept later"
    store.down = False
    board.keep_waiting()
    assert [k[:3] for k in store.kept] == [("s1", "reject", "ewma")] * 2
    assert len(store.kept[0]) == 5 and store.kept[1][-1] == 20.0, "opened, then cleared"
