"""SPC subgroups follow the verdicts' own order (t_verdict, then seq), not their arrival: a
redelivery that comes after newer verdicts gives the same subgroups and the same alarms."""

from __future__ import annotations

import dataclasses

from inspector.spc.config import ChartsSection
from inspector.spc.monitor import Monitor

from .spc_helpers import rows

CFG = ChartsSection(baseline_subgroups=25, per_class=False)


def stream():
    """One station: 2 % rejects, 8 % for ten subgroups, 2 % again (subgroups of 200)."""
    return (
        rows("s1", [0.02] * 45, seed=1)
        + rows("s1", [0.08] * 10, seed=2, seq0=45 * 200)
        + rows("s1", [0.02] * 20, seed=3, seq0=55 * 200)
    )


def redelivered(verdicts, batch=100, every=4):
    """Batches as the ingest hands them over, where every ``every``-th batch was left with the
    broker and comes after the next one (a re-delivery after newer verdicts)."""
    out, held = [], []
    for i in range(0, len(verdicts), batch):
        chunk = verdicts[i : i + batch]
        if (i // batch) % every == every - 1:
            held = chunk
            continue
        out.append(chunk)
        if held:
            out.append(held)
            held = []
    if held:
        out.append(held)
    return out


def run(batches, cfg=CFG):
    opened = []
    mon = Monitor(cfg, lambda t: opened.append(t) if t.cleared is None else None)
    for b in batches:
        mon.add(b)
    mon.flush()
    st = mon.stations["s1"]
    groups = [(g.t_start, g.parts, g.rejects) for g in list(st.baseline) + list(st.closed)]
    alarms = sorted((t.alarm.chart, t.alarm.rule, t.alarm.since) for t in opened)
    return groups, alarms, st.late


def test_a_redelivery_after_newer_verdicts_gives_the_same_subgroups_and_alarms():
    verdicts = stream()
    in_order = run([verdicts[i : i + 100] for i in range(0, len(verdicts), 100)])
    late_batches = redelivered(verdicts)
    assert sum(map(len, late_batches)) == len(verdicts)
    assert [v for b in late_batches for v in b] != verdicts, "the arrival order differs"
    groups, alarms, late = run(late_batches)
    assert in_order[1], "the shift raises alarms"
    assert groups == in_order[0], "each subgroup holds the same parts"
    assert alarms == in_order[1]
    assert late == 0


def test_within_one_batch_the_arrival_order_does_not_matter():
    verdicts = stream()
    in_order = run([verdicts])
    shuffled = verdicts[::-1]
    assert run([shuffled], dataclasses.replace(CFG, reorder_parts=0))[:2] == in_order[:2]


def test_a_verdict_later_than_the_buffer_allows_is_counted_once_as_late():
    verdicts = stream()
    cfg = dataclasses.replace(CFG, reorder_parts=50)
    straggler = verdicts[1000]
    rest = verdicts[:1000] + verdicts[1001:]
    mon = Monitor(cfg, lambda t: None)
    for b in (rest[:3000], [straggler], rest[3000:]):
        mon.add(b)
    mon.flush()
    assert mon.stations["s1"].late == 1
    assert mon.counted() == len(verdicts), "counted once, in the open subgroup"
