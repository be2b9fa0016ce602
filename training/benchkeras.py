"""The baseline a user would write: the same network in Keras, one frame at a time.

``inspector bench`` (the dispatcher in ``inspector.cli``) calls ``keras_baseline`` when
TensorFlow is installed and the model has its Keras twin beside it (``MODEL.keras``,
written by ``inspector export``); the runtime itself never imports TensorFlow.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def twin_of(model: Path) -> Path:
    return Path(model).with_suffix(".keras")


def keras_baseline(model: Path, inputs: np.ndarray, frames: int) -> dict | None:
    """Batch-1 latency and throughput of ``model(x)`` and ``model.predict(x)``."""
    twin = twin_of(model)
    if not twin.is_file():
        return None
    from . import models  # noqa: F401  (registers the custom layers the twin may use)
    from .tf import keras

    net = keras.models.load_model(twin, compile=False)
    n = len(inputs)
    out = {"twin": str(twin), "keras": keras.__version__}
    # predict() builds a dataset per call: far slower, so fewer frames give the same precision
    for name, call, count in (
        ("call_batch1", lambda x: net(x, training=False), frames),
        ("predict_batch1", lambda x: net.predict(x, verbose=0), max(50, frames // 20)),
    ):
        for i in range(10):
            call(inputs[i % n : i % n + 1])
        lat = []
        t0 = time.perf_counter()
        for i in range(count):
            t = time.perf_counter()
            np.asarray(call(inputs[i % n : i % n + 1]))
            lat.append((time.perf_counter() - t) * 1000.0)
        total = time.perf_counter() - t0
        out[name] = {
            "frames": count,
            "throughput_fps": round(count / total, 1),
            "latency_ms": {
                "p50": round(float(np.percentile(lat, 50)), 3),
                "p99": round(float(np.percentile(lat, 99)), 3),
            },
        }
    return out
