"""Small typed records that flow between the pipeline stages."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np


class Reason(str, enum.Enum):
    """Why a part got its verdict. ``ok`` is the only reason that goes with ``pass``."""

    OK = "ok"
    DEFECT = "defect"
    UNCERTAIN = "uncertain"
    ANOMALY = "anomaly"  # an anomaly model (manifest kind: anomaly) found the part unlike good ones
    ERROR = "error"  # the model raised or returned garbage
    TIMEOUT = "timeout"  # no verdict could be made before the part's deadline
    SOURCE_LOST = "source_lost"  # the camera or replay source is gone
    UNREADABLE_FRAME = "unreadable_frame"  # a frame that could not be decoded or preprocessed
    OVERFLOW = "overflow"  # a queue was full; the part was not inspected
    SHUTDOWN = "shutdown"  # the station stopped before the part was inspected
    HALTED = "halted"  # the plant (OPC UA Halt, Stop ...) stopped inspection; not inspected


@dataclass(frozen=True, slots=True)
class Frame:
    """One captured image. ``image`` is None when the frame could not be read."""

    image: np.ndarray | None
    t_capture: float  # Unix seconds
    t_capture_mono: float  # monotonic seconds
    index: int  # running frame number of the source
    origin: str = ""  # file name, URL or device index, for the recorder and logs
    error: str = ""  # why image is None


@dataclass(slots=True)
class Part:
    """One physical part on the line, from trigger to verdict."""

    part_id: str
    seq: int
    t_trigger: float  # Unix seconds, verbatim from the trigger when it carried one
    t_trigger_mono: float
    deadline: float  # Unix seconds
    deadline_mono: float
    frame: Frame | None = None
    t_preprocess_mono: float | None = None  # stage boundaries, for latency_ms in the verdict
    t_preprocessed_mono: float | None = None
    t_infer_mono: float | None = None
    t_inferred_mono: float | None = None
    input: np.ndarray | None = None  # model input (uint8), filled by preprocessing

    def stage_times(self, now_mono: float) -> dict[str, float]:
        """Time in each stage the part went through, in ms: preprocess, queue (waiting for a
        classifier worker), inference (its batch's run), decide (scores to verdict, ending
        ``now_mono``). A part failed before a stage has no entry for it."""
        marks = (
            ("preprocess", self.t_preprocess_mono, self.t_preprocessed_mono),
            ("queue", self.t_preprocessed_mono, self.t_infer_mono),
            ("inference", self.t_infer_mono, self.t_inferred_mono),
            ("decide", self.t_inferred_mono, now_mono),
        )
        return {k: (end - start) * 1000.0 for k, start, end in marks if None not in (start, end)}


@dataclass(frozen=True, slots=True)
class Verdict:
    """The one answer a part gets."""

    part_id: str
    seq: int
    result: str  # "pass" | "fail"
    reason: Reason
    label: str | None  # the class the model chose, None when it did not run
    scores: dict[str, float]
    thresholds: dict[str, float]
    model_id: str
    t_trigger: float
    t_capture: float | None
    t_verdict: float
    deadline: float
    deadline_mono: float
    latency_ms: dict[str, float] = field(default_factory=dict)
    detail: str = ""
    frame: str = ""  # where the image came from (file name, device), for traceability
    # a station with an anomaly model beside its classifier (None elsewhere): the models the
    # result follows ("classifier", "anomaly"; empty for fail-safe verdicts), and its id
    decided_by: tuple[str, ...] | None = None
    anomaly_model_id: str | None = None

    @property
    def passed(self) -> bool:
        return self.result == "pass"


CONTRACT_VERSION = 1  # the verdict message's schema (verdict.schema.json)


def verdict_payload(v: Verdict, station: str) -> dict:
    """The verdict message (see docs/contract.md); ``decided_by`` and ``anomaly_model_id``
    only from a station with an anomaly model."""
    payload = {
        "schema": CONTRACT_VERSION,
        "station": station,
        "part_id": v.part_id,
        "seq": v.seq,
        "result": v.result,
        "reason": v.reason.value,
        "class": v.label,
        "scores": {k: round(s, 6) for k, s in v.scores.items()},
        "threshold": v.thresholds,
        "model_id": v.model_id,
        "t_trigger": v.t_trigger,
        "t_capture": v.t_capture,
        "t_verdict": v.t_verdict,
        "deadline": v.deadline,
        "latency_ms": {k: round(x, 3) for k, x in v.latency_ms.items()},
        "detail": v.detail,
        "frame": v.frame,
    }
    if v.decided_by is not None:
        payload["decided_by"] = list(v.decided_by)
    if v.anomaly_model_id is not None:
        payload["anomaly_model_id"] = v.anomaly_model_id
    return payload
