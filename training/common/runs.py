"""A run folder's shared parts: its JSON, its config, its frame setup and the library versions.

Every model kind writes ``run.json`` (with ``method``: the kind), ``config.yaml`` and
``split.json`` into its run folder; these read and write them the same way.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np

from inspector.contract.geometry import FrameSetup
from inspector.contract.preprocess import PreprocessSpec
from inspector.contract.schema import load_yaml

from .. import TrainingError
from ..data import datasets, frames
from .config import TrainConfig


def spec_of(cfg: TrainConfig, setup: FrameSetup | None = None) -> PreprocessSpec:
    """The model's preprocessing; ``setup``: the station's geometry and bit depth."""
    size = cfg.model.image_size
    spec = PreprocessSpec(
        size=(size, size), color=cfg.model.color, interpolation=cfg.model.interpolation
    )
    return frames.spec_with(spec, setup) if setup is not None else spec


def setup_of(cfg: TrainConfig) -> FrameSetup:
    """The frame setup for ``cfg.data``: from its recordings' sidecars or ``cfg.geometry``."""
    given = frames.station_setup(cfg.geometry) if cfg.geometry is not None else None
    paths = [s.path for s in datasets.scan(cfg.data).samples]
    return frames.resolve(paths, given=given)


def versions() -> dict:
    import onnxruntime

    from .tf import keras, tf

    out = {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "onnxruntime": onnxruntime.__version__,
    }
    try:
        import tf2onnx

        out["tf2onnx"] = tf2onnx.__version__
    except ImportError:
        pass
    return out


def load_run(run: Path) -> tuple[TrainConfig, dict]:
    run = Path(run)
    if not (run / "run.json").is_file():
        raise TrainingError(f"{run}: not a finished run folder (no run.json); train first")
    cfg = load_yaml(TrainConfig, run / "config.yaml")
    return cfg, json.loads((run / "run.json").read_text())


def write_json(path: Path, data) -> None:
    """JSON for people: indented, numpy scalars and paths as plain values."""
    path.write_text(json.dumps(data, indent=2, default=_plain) + "\n")


def _plain(v):
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, Path):
        return str(v)
    raise TypeError(f"not JSON: {type(v).__name__}")
