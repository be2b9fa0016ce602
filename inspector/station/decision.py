"""Pass or fail from class probabilities, thresholds and an optional uncertainty band.

A part fails with reason ``defect`` when any defect class scores at or above its
threshold (reason ``anomaly`` when the manifest's ``kind`` is ``anomaly``: a model of good
parts only, whose one "defect" column is the normalised anomaly score), with reason ``uncertain`` when a defect score lies within
``uncertainty_margin`` below its threshold, and passes otherwise. Thresholds come from
the model manifest; the station config can override them per class.

A station with an ``anomaly_model`` decides each part with both models (``combine``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..contract.manifest import Manifest
from ..contract.records import Reason
from ..errors import ConfigError
from .kinds import kind_of


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
        uncertainty_margin: float = 0.0,
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
        self.margin = uncertainty_margin
        self.fail_reason = kind_of(manifest).fail_reason
        self._defect_idx = [(self.classes.index(c), c, t) for c, t in self.thresholds.items()]
        self._good_idx = [i for i, c in enumerate(self.classes) if c not in self.thresholds]
        self._defect = manifest.defect_classes[0]

    def decide(self, probs: np.ndarray) -> Decision:
        scores = {c: float(p) for c, p in zip(self.classes, probs, strict=True)}
        worst, worst_excess, near, near_gap = None, -1.0, None, 2.0
        for i, name, t in self._defect_idx:
            s = probs[i]
            if s >= t and s - t > worst_excess:
                worst, worst_excess = name, s - t
            elif self.margin and t - self.margin <= s < t and t - s < near_gap:
                near, near_gap = name, t - s
        if worst is not None:
            return Decision("fail", self.fail_reason, worst, scores, self._defect)
        if near is not None:
            return Decision("fail", Reason.UNCERTAIN, near, scores, self._defect)
        best = (
            max(self._good_idx, key=lambda i: probs[i]) if self._good_idx else int(np.argmax(probs))
        )
        return Decision("pass", Reason.OK, self.classes[best], scores, self._defect)


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
