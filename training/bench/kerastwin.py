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
    from ..classify import models  # noqa: F401  (registers the custom layers the twin may use)
    from ..common.tf import keras

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


def in_subprocess(model: Path, inputs: np.ndarray, frames: int) -> dict | None:
    """``keras_baseline`` in a process of its own: TensorFlow's thread pools and memory stay
    out of the process whose station is measured next (as with a user's own Keras loop)."""
    import json
    import subprocess
    import sys
    import tempfile

    if not twin_of(model).is_file():
        return None
    with tempfile.TemporaryDirectory(prefix="inspector-keras-") as tmp:
        x, out = Path(tmp) / "inputs.npy", Path(tmp) / "keras.json"
        np.save(x, inputs)
        code = (
            "import json, numpy, pathlib; from training.bench.kerastwin import keras_baseline; "
            f"r = keras_baseline(pathlib.Path({str(model)!r}), numpy.load({str(x)!r}), {frames}); "
            f"pathlib.Path({str(out)!r}).write_text(json.dumps(r))"
        )
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if proc.returncode != 0:
            tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"the Keras baseline failed: {tail[0]}")
        return json.loads(out.read_text())
