"""The model kinds, in one place: ``inspector train --method NAME``, a run folder's ``method``
and a model manifest's ``kind`` all name one of ``KINDS``.

The command line (``training.cli``) and the benches ask this module which kind a config,
a run folder or a model file is, and call that kind's functions; nothing else tests a
kind's name. A new kind is one new room with a ``kind.py`` that defines ``KIND`` (a
``training.common.kind.ModelKind``), its line below, and its name in ``TrainConfig.method``.

Example::

    run = get("anomaly").train(cfg, Path("runs/a1"))
    kind = of_model(Path("runs/a1/model.onnx"))  # -> the anomaly kind
"""

from __future__ import annotations

import json
from pathlib import Path

from . import TrainingError
from .anomaly.kind import KIND as ANOMALY
from .classify.kind import KIND as CLASSIFY
from .common.config import TrainConfig, override, validate
from .common.kind import ModelKind

KINDS: dict[str, ModelKind] = {k.name: k for k in (CLASSIFY, ANOMALY)}
DEFAULT = CLASSIFY.name


def get(name: str) -> ModelKind:
    try:
        return KINDS[name]
    except KeyError:
        raise TrainingError(f"method: {name!r} is not one of {', '.join(KINDS)}") from None


def of_run(run: Path) -> ModelKind:
    """The kind of a run folder (its ``run.json``'s ``method``; the default without one)."""
    p = Path(run) / "run.json"
    try:
        method = json.loads(p.read_text()).get("method") if p.is_file() else None
    except (OSError, ValueError):
        method = None
    return get(method or DEFAULT)


def of_model(path: Path) -> ModelKind:
    """The kind of a model: a run folder, or an ONNX file by its sidecar's ``kind``."""
    path = Path(path)
    if path.is_dir():
        return of_run(path)
    sidecar = path.with_suffix(".json")
    if path.suffix == ".onnx" and sidecar.is_file():
        try:
            kind = json.loads(sidecar.read_text()).get("kind")
        except (OSError, ValueError, AttributeError):
            kind = None
        if kind in KINDS:
            return KINDS[kind]
    return KINDS[DEFAULT]


def configure(name: str, data: Path, values: dict) -> tuple[TrainConfig, object]:
    """A validated ``TrainConfig`` for kind ``name`` and its section's settings (or None),
    from dotted ``values``: ``{"model.image_size": 224, "anomaly.coreset": 0.1}``."""
    kind = get(name)
    cfg = override(TrainConfig(data=Path(data)), "method", kind.name)
    settings = kind.settings()() if kind.settings else None
    prefix = f"{kind.name}."
    for key, value in values.items():
        if key.startswith(prefix) and settings is not None:
            settings = override(settings, key[len(prefix) :], value)
        else:
            cfg = override(cfg, key, value)
    validate(cfg)
    if settings is not None:
        validate(settings)
    return cfg, settings


def train(cfg: TrainConfig, out: Path, settings=None, **options) -> dict:
    """Train the kind that ``cfg.method`` names into the run folder ``out``."""
    return get(cfg.method).train(cfg, out, settings, **options)
