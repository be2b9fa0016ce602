"""What a model kind gives the training verbs: ``ModelKind``, one per room (``training.classify``,
``training.anomaly``), collected by ``training.registry``.

A kind's functions import their room (and TensorFlow) only when called, so building the
command line stays cheap. ``settings`` is the dataclass of the kind's own config section
(``<name>:`` in a training config, ``--set <name>.KEY=VALUE``), or None.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ModelKind:
    name: str  # run.json's ``method`` and the manifest's ``kind``
    help: str  # one line for ``inspector train --method``
    train: Callable[..., dict]  # (cfg, out, settings=None, **options) -> run.json
    export: Callable[..., dict]  # (run, out, **options) -> manifest
    evaluate: Callable[..., dict]  # (model, data, out, **options) -> metrics
    cli_train: Callable[[Any, Any], int]  # (args, TrainingYaml) -> exit code; prints
    cli_export: Callable[[Any], int]  # (args) -> exit code; prints
    cli_evaluate: Callable[[Any], int]  # (args) -> exit code; prints
    settings: Callable[[], type] | None = None  # the class of its ``<name>:`` section
