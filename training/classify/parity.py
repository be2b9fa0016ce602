"""Parity of an exported classifier: its scores through the station's own loading path
(``inspector.station.classifier.Classifier``) against the Keras model's."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from inspector.station.classifier import Classifier
from inspector.station.config import ModelSection

from ..common.metrics import binary_at, defect_score, is_defect


def onnx_scores(path: Path, x: np.ndarray) -> np.ndarray:
    """Scores through the runtime's own loading path (manifest, checks, batching)."""
    return Classifier(ModelSection(path=path, warmup_runs=0)).run_all(x)


def onnx_scores_and_maps(path: Path, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scores and class maps through the runtime's own loading path."""
    clf = Classifier(ModelSection(path=path, warmup_runs=0))
    runs = [
        clf.run_with_maps(np.ascontiguousarray(x[i : i + clf.max_batch]))
        for i in range(0, len(x), clf.max_batch)
    ]
    return np.concatenate([r[0] for r in runs]), np.concatenate([r[1] for r in runs])


def compare(reference, scores, y, info, threshold, tie: float = 0.0) -> dict:
    """Scores and decisions of ``scores`` against the Keras ``reference``. A decision that
    differs only for a part whose reference score lies within ``tie`` of the threshold is
    counted as a tie, not a flip: numerically the two runtimes cannot tell it apart."""
    classes, defects = info["classes"], info["defect_classes"]
    truth = is_defect(y, classes, defects)
    ref = defect_score(reference, classes, defects)
    a = ref >= threshold
    b = defect_score(scores, classes, defects) >= threshold
    differ = a != b
    at_threshold = np.abs(ref - threshold) <= tie
    return {
        "max_abs_diff": float(np.max(np.abs(reference - scores))),
        "flips": int(np.sum(differ & ~at_threshold)),
        "ties_at_threshold": int(np.sum(differ & at_threshold)),
        "accuracy_reference": binary_at(
            truth, defect_score(reference, classes, defects), threshold
        )["accuracy"],
        "accuracy": binary_at(truth, defect_score(scores, classes, defects), threshold)["accuracy"],
    }
