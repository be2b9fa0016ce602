"""What the edge node reports of a station: its figures as Sparkplug metrics, and which of
them changed enough to be sent (report by exception, with deadbands).

Only the node's own thread touches a ``Figures``; the station hands it verdicts and status
payloads through the node's queue.

Device metrics (``DBIRTH``/``DDATA``), with their Sparkplug datatypes:

- ``Health/State``, ``Health/Detail``, ``Camera/State`` (String): the station's status
- ``Camera/COUNTER`` for each counter of a camera source's ``camera_stats`` (Int64: frames,
  incomplete, lost, triggers, the stream's missing and resent packets …; Double: the clock
  offset, jitter and drift, the temperature), ``Camera/Info/FIELD`` (String: vendor, model,
  serial …) and ``Camera/Link Speed``; a metric that appears later (a stream's counters once
  it opens) comes with a new birth
- ``Model/Id``, ``Model/Name``, ``Model/Version`` (the file digest in the id), ``Model/Path``,
  ``Model/Anomaly Id``, ``Model/Shadow Id``, ``Model/Last Change`` (String)
- ``Verdicts/Total``, ``Verdicts/Pass``, ``Verdicts/Fail``, ``Verdicts/Late`` and
  ``Verdicts/By Reason/REASON`` for every reason (UInt64), ``Counters/Since`` (DateTime)
- ``Last Verdict/Part Id``, ``/Result``, ``/Reason``, ``/Label``, ``/Model Id`` (String),
  ``/Seq`` (UInt64), ``/Score`` (Double: the highest defect score, the figure the thresholds
  judge), ``/Latency ms`` (Double), ``/Time`` (DateTime): sent together when a part passed
- ``Latency/p50 ms``, ``Latency/p99 ms`` (Double, deadband), ``Latency/Window`` (UInt32)
- ``Quality/Problems`` (String), ``Quality/Problem Count`` (UInt32), ``Quality/MEASURE``
  (Double, relative deadband) when the station runs the quality watch
- ``Commands/Reset Counters`` (Boolean, writable), ``Commands/Promote Model`` (String,
  writable), ``Commands/Last Result`` (String)
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from ...contract.records import Reason, Verdict
from .payload import BOOLEAN, DATETIME, DOUBLE, INT64, STRING, UINT32, UINT64

RESET = "Commands/Reset Counters"
PROMOTE = "Commands/Promote Model"
LAST_RESULT = "Commands/Last Result"
WRITABLE = {RESET: BOOLEAN, PROMOTE: STRING}
LAST = "Last Verdict/"

Metrics = dict[str, tuple[int, Any]]


def _score(v: Verdict) -> float | None:
    """The highest score of a class the thresholds judge (a defect class, or the anomaly
    model), else the highest score; None when the model did not run."""
    judged = [s for k, s in v.scores.items() if k in v.thresholds]
    scores = judged or list(v.scores.values())
    return float(max(scores)) if scores else None


class Figures:
    writable = WRITABLE  # the metrics a DCMD may write

    def __init__(self, window: int, deadband_latency_ms: float, deadband_quality: float) -> None:
        self.deadband_latency_ms = deadband_latency_ms
        self.deadband_quality = deadband_quality
        self._lat = np.zeros(window)  # a ring of the last ``window`` latencies (ms)
        self._n = 0  # latencies written since the reset
        self.status: dict = {}
        self.last_result = ""
        self.reset()

    # -- what comes in ---------------------------------------------------------------------
    def reset(self) -> None:
        self.counts = dict.fromkeys(("Total", "Pass", "Fail", "Late"), 0)
        self.by_reason = dict.fromkeys((r.value for r in Reason), 0)
        self._n = 0
        self.since_ms = int(time.time() * 1000)
        self.last: Verdict | None = None

    def verdict(self, v: Verdict) -> None:
        c = self.counts
        c["Total"] += 1
        c["Pass" if v.passed else "Fail"] += 1
        if v.t_verdict > v.deadline:
            c["Late"] += 1
        reason = v.reason.value if isinstance(v.reason, Reason) else str(v.reason)
        self.by_reason[reason] = self.by_reason.get(reason, 0) + 1
        e2e = v.latency_ms.get("e2e")
        if e2e is not None:
            self._lat[self._n % len(self._lat)] = e2e
            self._n += 1
        self.last = v

    # -- what goes out -----------------------------------------------------------------------
    def metrics(self) -> Metrics:
        """Every device metric with its datatype and current value (a DBIRTH's content)."""
        s = self.status
        model = s.get("model") or {}
        model_id = s.get("model_id")
        name, _, version = (model_id or "").partition("@")
        last_change = model.get("last_change") or {}
        out: Metrics = {
            "Health/State": (STRING, s.get("state")),
            "Health/Detail": (STRING, s.get("detail")),
            "Camera/State": (STRING, s.get("camera")),
            "Model/Id": (STRING, model_id),
            "Model/Name": (STRING, name or None),
            "Model/Version": (STRING, version or None),
            "Model/Path": (STRING, model.get("path")),
            "Model/Anomaly Id": (STRING, s.get("anomaly_model_id")),
            "Model/Shadow Id": (STRING, model.get("shadow")),
            "Model/Last Change": (STRING, _change_text(last_change) if last_change else None),
        }
        out.update(camera_metrics(s.get("camera_stats") or {}))
        for k, n in self.counts.items():
            out[f"Verdicts/{k}"] = (UINT64, n)
        for k, n in self.by_reason.items():
            out[f"Verdicts/By Reason/{k}"] = (UINT64, n)
        out["Counters/Since"] = (DATETIME, self.since_ms)
        v = self.last
        out.update(
            {
                LAST + "Part Id": (STRING, v and v.part_id),
                LAST + "Seq": (UINT64, v and v.seq),
                LAST + "Result": (STRING, v and v.result),
                LAST + "Reason": (STRING, v and (getattr(v.reason, "value", v.reason))),
                LAST + "Label": (STRING, v and v.label),
                LAST + "Score": (DOUBLE, v and _score(v)),
                LAST + "Model Id": (STRING, v and v.model_id),
                LAST + "Latency ms": (DOUBLE, v and v.latency_ms.get("e2e")),
                LAST + "Time": (DATETIME, v and int(v.t_verdict * 1000)),
            }
        )
        kept = min(self._n, len(self._lat))
        if kept:
            p50, p99 = np.percentile(self._lat[:kept], (50, 99))
            p50, p99 = round(float(p50), 3), round(float(p99), 3)
        else:
            p50 = p99 = None
        out["Latency/p50 ms"] = (DOUBLE, p50)
        out["Latency/p99 ms"] = (DOUBLE, p99)
        out["Latency/Window"] = (UINT32, kept)
        q = s.get("quality")
        if q is not None:
            problems = list(q.get("problems") or [])
            out["Quality/Problems"] = (STRING, "; ".join(problems))
            out["Quality/Problem Count"] = (UINT32, len(problems))
            for k, value in sorted((q.get("measures") or {}).items()):
                out[f"Quality/{k}"] = (DOUBLE, float(value))
        out[RESET] = (BOOLEAN, False)
        out[PROMOTE] = (STRING, "")
        out[LAST_RESULT] = (STRING, self.last_result)
        return out

    def changed(self, now: Metrics, sent: Metrics) -> Metrics:
        """The metrics of ``now`` to send, given what the host last got (``sent``): any
        change, except that latency and quality figures wait until they leave their
        deadband, and the last verdict's metrics go together when the part changed."""
        out: Metrics = {}
        for name, (datatype, value) in now.items():
            before = sent.get(name, (None, None))[1]
            if value == before:
                continue
            if datatype == DOUBLE and value is not None and before is not None:
                band = self._band(name, before)
                if band is not None and abs(value - before) <= band:
                    continue
            out[name] = (datatype, value)
        if any(k.startswith(LAST) for k in out):
            out.update({k: t for k, t in now.items() if k.startswith(LAST)})
        return out

    def _band(self, name: str, before: float) -> float | None:
        if name.startswith("Latency/"):
            return self.deadband_latency_ms
        if name.startswith("Quality/"):
            return abs(before) * self.deadband_quality if math.isfinite(before) else None
        return None


_MEASURES = ("_s", "_ms", "_ppm", "_c")  # a camera figure in these units is a Double


def camera_metrics(stats: dict) -> Metrics:
    """A camera source's ``camera_stats`` as metrics: counters (Int64), measures (Double,
    their unit in the name), its identity and text fields (String). A figure with no value
    yet keeps its type when its unit says it (else it waits for its first value)."""
    out: Metrics = {}
    for key, value in sorted(stats.items()):
        name = "Camera/" + key.replace("_", " ").title()
        if isinstance(value, dict):  # the camera's identity
            for field, text in sorted(value.items()):
                label = field.replace("_", " ").title()
                out[f"Camera/Info/{label}"] = (STRING, None if text is None else str(text))
        elif isinstance(value, bool):
            out[name] = (BOOLEAN, value)
        elif key.endswith(_MEASURES) and (value is None or isinstance(value, int | float)):
            out[name] = (DOUBLE, None if value is None else float(value))
        elif isinstance(value, int):
            out[name] = (INT64, value)
        elif isinstance(value, float):
            out[name] = (DOUBLE, value)
        elif isinstance(value, str):
            out[name] = (STRING, value)
    return out


def _change_text(c: dict) -> str:
    """'promote swapped: model-b@1234' style: the last model request and its outcome."""
    text = f"{c.get('action', '?')} {c.get('outcome', '?')}"
    if c.get("reason"):
        text += f": {c['reason']}"
    elif c.get("model_id"):
        text += f": {c['model_id']}"
    return text
