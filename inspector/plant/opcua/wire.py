"""What crosses the pipe from the station to the server's process: a part's result as a
plain tuple (it pickles about six times cheaper than the ``Verdict`` record), rebuilt on
the other side as a ``Part``."""

from __future__ import annotations

from typing import NamedTuple

from ...contract.records import Verdict


class Part(NamedTuple):
    part_id: str
    seq: int
    result: str  # pass | fail
    reason: str  # the Reason's value
    label: str | None
    scores: dict
    thresholds: dict
    model_id: str
    t_trigger: float
    t_capture: float | None
    t_verdict: float
    detail: str


def flat(v: Verdict) -> tuple:
    """The tuple ``Part._make`` takes."""
    return (
        v.part_id,
        v.seq,
        v.result,
        v.reason.value,
        v.label,
        v.scores,
        v.thresholds,
        v.model_id,
        v.t_trigger,
        v.t_capture,
        v.t_verdict,
        v.detail,
    )
