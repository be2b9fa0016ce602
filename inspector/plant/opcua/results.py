"""A verdict as an OPC 40100 result: the ``ResultDataType`` value, the station's own result
variables and the ``ResultReady`` event (``InspectorResultReadyEventType``).

Events go out through asyncua's subscription service like ``EventGenerator.trigger`` sends
them, less two costs that matter at line rate: no deep copy of every field for every
subscriber (the values are made fresh for each event and never changed afterwards), and no
random EventId from the kernel per event (a counter with a random prefix, unique all the same).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import time
from datetime import datetime, timezone

from asyncua import ua

from .states import Job
from .wire import Part

CLASSIFIED = ("ok", "defect", "uncertain", "anomaly")


def score(v: Part) -> float:
    """The highest score among the classes with a threshold (the defect classes); NaN when
    no model ran."""
    judged = [v.scores[k] for k in v.thresholds if k in v.scores]
    if judged:
        return float(max(judged))
    return float(max(v.scores.values())) if v.scores else math.nan


def result_json(v: Part, station: str) -> str:
    """The part's result in the words of the MQTT verdict message (docs/contract.md)."""
    return json.dumps(
        {
            "station": station,
            "part_id": v.part_id,
            "seq": v.seq,
            "result": v.result,
            "reason": v.reason,
            "class": v.label,
            "scores": {k: round(s, 6) for k, s in v.scores.items()},
            "threshold": v.thresholds,
            "model_id": v.model_id,
            "t_trigger": v.t_trigger,
            "t_verdict": v.t_verdict,
            "detail": v.detail,
        }
    )


def build_result(v: Part, job: Job, station: str, ids: dict[str, type]) -> ua.ResultDataType:
    """ResultState 1 (Completed) when a model decided the part, 4 (Failed) for a fail-safe
    reject (camera lost, timeout, error ...); ResultContent: the verdict as JSON. ``ids``:
    the id types' classes (``space.id_type``)."""
    created = datetime.fromtimestamp(v.t_verdict, timezone.utc)
    start = datetime.fromtimestamp(v.t_capture or v.t_trigger, timezone.utc)
    return ua.ResultDataType(
        ResultId=ua.ResultIdDataType(Id=f"{station}-{v.seq}"),
        IsPartial=False,
        IsSimulated=False,
        ResultState=1 if v.reason in CLASSIFIED else 4,
        MeasId=ua.MeasIdDataType(Id=job.meas_id) if job.meas_id else None,
        PartId=ua.PartIdDataType(Id=v.part_id),
        InternalRecipeId=ids["RecipeIdInternal"](Id=v.model_id),
        InternalConfigurationId=ids["ConfigurationId"](Id=station),
        JobId=ua.JobIdDataType(Id=job.job_id),
        CreationTime=created,
        ProcessingTimes=ua.ProcessingTimesDataType(StartTime=start, EndTime=created),
        ResultContent=[ua.Variant(result_json(v, station), ua.VariantType.String)],
    )


def variables(v: Part, result: ua.ResultDataType) -> dict:
    """The station's LastResult variables (space.RESULT_VARS)."""
    return {
        "PartId": v.part_id,
        "Verdict": v.result,
        "Reason": v.reason,
        "Label": v.label or "",
        "Score": score(v),
        "Seq": v.seq,
        "ModelId": v.model_id,
        "Json": result.ResultContent[0].Value,
    }


def _fields_as_they_are(event, select_clauses):
    """``Event.to_event_fields`` without its deep copy of every value."""
    fields = []
    for sattr in select_clauses:
        if len(sattr.BrowsePath) == 0:
            name = ua.AttributeIds(sattr.AttributeId).name
        else:
            name = event.browse_path_to_attribute_name(sattr.BrowsePath)
        val = getattr(event, name, None)
        fields.append(ua.Variant(None) if val is None else ua.Variant(val, event.data_types[name]))
    return fields


class ResultEvents:
    """ResultReady events from the VisionSystem object."""

    def __init__(self, generator, subscriptions) -> None:
        self.event = generator.event
        self.subscriptions = subscriptions  # the server's subscription service
        ev = self.event
        # the nodeset gives these fields no default value, so no type to encode with
        ev.data_types.update(
            CreationTime=ua.VariantType.DateTime,
            ExternalConfigurationId=ua.VariantType.ExtensionObject,
            InternalConfigurationId=ua.VariantType.ExtensionObject,
            ExternalRecipeId=ua.VariantType.ExtensionObject,
            InternalRecipeId=ua.VariantType.ExtensionObject,
            IsPartial=ua.VariantType.Boolean,
            IsSimulated=ua.VariantType.Boolean,
            ResultContent=ua.VariantType.Variant,
            ResultState=ua.VariantType.Int32,
        )
        ev.to_event_fields = _fields_as_they_are.__get__(ev)
        lt = time.localtime()
        ev.LocalTime = ua.TimeZoneDataType(
            Offset=lt.tm_gmtoff // 60, DaylightSavingInOffset=bool(lt.tm_isdst > 0)
        )
        self._prefix = os.urandom(8)
        self._ids = itertools.count(1)

    async def emit(self, v: Part, r: ua.ResultDataType) -> None:
        ev = self.event
        ev.EventId = self._prefix + next(self._ids).to_bytes(8, "big")
        ev.Time = r.CreationTime
        ev.ReceiveTime = datetime.now(timezone.utc)
        ev.Message = ua.LocalizedText(f"part {v.part_id}: {v.result} ({v.reason})")
        ev.Severity = 100 if v.result == "pass" else 500
        for name in (
            "ResultId",
            "IsPartial",
            "IsSimulated",
            "ResultState",
            "MeasId",
            "PartId",
            "InternalRecipeId",
            "InternalConfigurationId",
            "JobId",
            "CreationTime",
            "ProcessingTimes",
            "ResultContent",
        ):
            setattr(ev, name, getattr(r, name))
        ev.Verdict = v.result
        ev.Reason = v.reason
        ev.Label = v.label or ""
        ev.Score = score(v)
        ev.Seq = v.seq
        ev.ModelId = v.model_id
        await self.subscriptions.trigger_event(ev)
