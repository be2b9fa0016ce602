"""Pass or fail from class probabilities, thresholds and an optional uncertainty band.

A part fails with reason ``defect`` when any defect class scores at or above its
threshold (reason ``anomaly`` when the manifest's ``kind`` is ``anomaly``: a model of good
parts only, whose one "defect" column is the normalised anomaly score), with reason ``uncertain`` when a defect score lies within
``uncertainty_margin`` below its threshold, and passes otherwise. Thresholds come from
the model manifest; the station config can override them per class. A margin of
``"auto"`` takes each class's band from the manifest (``thresholds.<class>.uncertain_band
.margin``, the width chosen on validation; none there: no band), kept below an overridden
threshold too.

A station with an ``anomaly_model`` decides each part with both models (``combine``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ..contract.manifest import Manifest
from ..contract.records import Reason
from ..errors import ConfigError
from .kinds import kind_of

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Decision:
    result: str
    reason: Reason
    label: str
    scores: dict[str, float]
    defect: str = ""  # the (first) defect class: an anomaly model's score is its score


class Decider:
    def __init__(
        self,
        manifest: Manifest,
        overrides: dict[str, float] | None = None,
        uncertainty_margin: float | str = 0.0,
    ) -> None:
        self.classes = manifest.classes
        thresholds = manifest.thresholds
        for name, value in (overrides or {}).items():
            if name not in manifest.defect_classes:
                raise ConfigError(
                    f"decision.thresholds.{name}: not a defect class of the model "
                    f"(defect classes: {', '.join(manifest.defect_classes)})"
                )
            thresholds[name] = float(value)
        self.thresholds = {c: thresholds[c] for c in manifest.defect_classes}
        self.margins = {c: _margin(manifest, c, uncertainty_margin) for c in self.thresholds}
        self.margin = max(self.margins.values(), default=0.0)
        self.fail_reason = kind_of(manifest).fail_reason
        self._defect_idx = [
            (self.classes.index(c), c, t, self.margins[c]) for c, t in self.thresholds.items()
        ]
        self._good_idx = [i for i, c in enumerate(self.classes) if c not in self.thresholds]
        self._defect = manifest.defect_classes[0]

    def decide(self, probs: np.ndarray) -> Decision:
        scores = {c: float(p) for c, p in zip(self.classes, probs, strict=True)}
        worst, worst_excess, near, near_gap = None, -1.0, None, 2.0
        for i, name, t, margin in self._defect_idx:
            s = probs[i]
            if s >= t and s - t > worst_excess:
                worst, worst_excess = name, s - t
            elif margin and t - margin <= s < t and t - s < near_gap:
                near, near_gap = name, t - s
        if worst is not None:
            return Decision("fail", self.fail_reason, worst, scores, self._defect)
        if near is not None:
            return Decision("fail", Reason.UNCERTAIN, near, scores, self._defect)
        best = (
            max(self._good_idx, key=lambda i: probs[i]) if self._good_idx else int(np.argmax(probs))
        )
        return Decision("pass", Reason.OK, self.classes[best], scores, self._defect)


def _margin(manifest: Manifest, name: str, margin: float | str) -> float:
    """The uncertain band's width for one defect class: the station's number, or with
    ``"auto"`` the band the manifest carries for that class (0 when it carries none)."""
    if margin != "auto":
        return float(margin)
    band = manifest.data["thresholds"].get(name, {}).get("uncertain_band") or {}
    width = float(band.get("margin") or 0.0)
    if not width:
        log.info("decision.uncertainty_margin auto: the model has no uncertain band for %s", name)
    return width


# which model a verdict's result follows (``decided_by``), on a station with two models
CLASSIFIER, ANOMALY_MODEL = "classifier", "anomaly"
_RANK = {Reason.DEFECT: 0, Reason.ANOMALY: 1, Reason.UNCERTAIN: 2}  # the reason a fail names


def combine(clf: Decision, anomaly: Decision) -> tuple[Decision, tuple[str, ...]]:
    """One part's decision from the classifier's and the anomaly model's, and the models it
    follows. The part fails when either fails it; the reason is the classifier's ``defect``,
    else the anomaly model's ``anomaly``, else the classifier's ``uncertain``; ``decided_by``
    names the models that failed it (both when it passed). The anomaly score joins the
    classifier's scores under ``anomaly``."""
    scores = {**clf.scores, ANOMALY_MODEL: anomaly.scores[anomaly.defect]}
    failed = [
        (n, d) for n, d in ((CLASSIFIER, clf), (ANOMALY_MODEL, anomaly)) if d.result == "fail"
    ]
    if not failed:
        return Decision("pass", Reason.OK, clf.label, scores), (CLASSIFIER, ANOMALY_MODEL)
    _, first = min(failed, key=lambda nd: _RANK.get(nd[1].reason, 3))
    names = tuple(n for n, _ in failed)
    return Decision("fail", first.reason, first.label, scores), names
