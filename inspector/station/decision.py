"""Pass or fail from class probabilities, thresholds and an optional uncertainty band.

A part fails with reason ``defect`` when any defect class scores at or above its
threshold (reason ``anomaly`` when the manifest's ``kind`` is ``anomaly``: a model of good
parts only, whose one "defect" column is the normalised anomaly score), with reason ``uncertain`` when a defect score lies within
``uncertainty_margin`` below its threshold, and passes otherwise. Thresholds come from
the model manifest; the station config can override them per class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..contract.manifest import Manifest
from ..contract.records import Reason
from ..errors import ConfigError


@dataclass(frozen=True, slots=True)
class Decision:
    result: str
    reason: Reason
    label: str
    scores: dict[str, float]


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
        self.fail_reason = (
            Reason.ANOMALY if manifest.data.get("kind") == "anomaly" else Reason.DEFECT
        )
        self._defect_idx = [(self.classes.index(c), c, t) for c, t in self.thresholds.items()]
        self._good_idx = [i for i, c in enumerate(self.classes) if c not in self.thresholds]

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
            return Decision("fail", self.fail_reason, worst, scores)
        if near is not None:
            return Decision("fail", Reason.UNCERTAIN, near, scores)
        best = (
            max(self._good_idx, key=lambda i: probs[i]) if self._good_idx else int(np.argmax(probs))
        )
        return Decision("pass", Reason.OK, self.classes[best], scores)
