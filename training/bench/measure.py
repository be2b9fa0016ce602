"""What the classifier benchmarks measure the same way: the exported model alone at batch 1
(``batch1_speed``, so variants are timed side by side with FP32), the default threshold
policy on a run's validation and test (``at_default_policy``), and the machine's cores.

Example::

    speed = batch1_speed(Classifier(ModelSection(path=Path("elpv.onnx"), warmup_runs=0)))
    speed["latency_ms"]["p50"]
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def at_default_policy(model_path: Path, run_dir: Path) -> dict:
    """The default threshold policy applied to ``model_path``'s validation scores, and the
    escape and false-reject rates it gives on the test split, with counts and exact bounds."""
    from inspector.station.classifier import Classifier
    from inspector.station.config import ModelSection

    from ..classify.export import split_images
    from ..common import thresholds
    from ..common.config import ThresholdConfig
    from ..common.metrics import defect_score, is_defect
    from ..common.runs import load_run

    cfg, info = load_run(run_dir)
    classes, defects = info["classes"], info["defect_classes"]
    clf = Classifier(ModelSection(path=model_path, warmup_runs=0))
    scores = {}
    for split in ("val", "test"):
        part = split_images(run_dir, cfg, info, split)
        probs = clf.run_all(part.x)
        scores[split] = (is_defect(part.y, classes, defects), defect_score(probs, classes, defects))
    d = ThresholdConfig()
    chosen = thresholds.choose(*scores["val"], d.policy, d.value, confidence=d.confidence)
    return {
        "policy": d.policy,
        "target": d.value,
        "level": d.confidence,
        "threshold": chosen["value"],
        "promise": chosen["promise"],
        "warning": chosen["warning"],
        "validation": chosen["confidence"],
        "test": thresholds.confidence_at(*scores["test"], chosen["value"], d.confidence, "test"),
    }


def batch1_speed(clf, runs: int = 500) -> dict:
    """ONNX Runtime alone at batch 1, measured as `inspector bench` measures its bare model:
    ``runs`` calls one after another, throughput and latency percentiles."""
    x = np.full((1, *clf.spec.shape), 128, np.uint8)
    for _ in range(20):
        clf.run(x)
    name, lat = clf.manifest.input_name, []
    t0 = time.perf_counter()
    for _ in range(runs):
        t = time.perf_counter()
        clf.session.run(None, {name: x})
        lat.append((time.perf_counter() - t) * 1000.0)
    total = time.perf_counter() - t0
    return {
        "batch": 1,
        "frames": runs,
        "throughput_fps": round(runs / total, 1),
        "latency_ms": {
            "p50": round(float(np.percentile(lat, 50)), 3),
            "p99": round(float(np.percentile(lat, 99)), 3),
        },
    }


def cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
