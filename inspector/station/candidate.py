"""A candidate unit, loaded and checked the way the station would run it: ``load_candidate``
returns a ``ModelUnit`` or raises ``Refused`` naming the step (load, acceptance, warmup) and
why. The checks are ``acceptance`` itself: the words a refused swap gives are the ones
``inspector run``, ``check`` and ``verify`` give.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from ..contract.preprocess import PreprocessSpec
from ..errors import InspectorError
from .acceptance import acceptance
from .classifier import ModelRunError
from .config import StationConfig
from .unit import KEEP, ModelUnit, load_unit

PACE_S = 0.002  # between the candidate's warm-up and golden runs: the live model comes first


class Refused(InspectorError):
    """A candidate that may not go live; ``stage`` is load, acceptance or warmup."""

    def __init__(self, stage: str, why: str) -> None:
        super().__init__(f"{stage}: {why}")
        self.stage = stage
        self.why = why


def resolve_model_path(cfg: StationConfig, path: str | Path | None) -> Path:
    """A requested model path: relative ones lie beside the station's model (its folder of
    models); None is ``model.path`` itself, its link read again."""
    base = Path(cfg.model.path)
    if path is None or str(path) == "":
        return Path(os.path.realpath(base))
    p = Path(path)
    if not p.is_absolute():
        p = base.parent / p
    return Path(os.path.realpath(p))


def load_candidate(
    cfg: StationConfig,
    path: Path,
    live: ModelUnit,
    live_spec: PreprocessSpec,
    workers: int,
    anomaly_path: Path | str | None = KEEP,
    golden: Path | None = None,
    pace_s: float = PACE_S,
    intra_op_threads: int | None = None,
) -> ModelUnit:
    """Load ``path`` (and ``anomaly_path``; KEEP: the live unit's anomaly model) as the
    station would run it, or raise ``Refused`` saying why."""
    if anomaly_path not in (KEEP, None, ""):
        anomaly_path = resolve_model_path(cfg, anomaly_path)
    try:
        unit = load_unit(
            cfg,
            path,
            anomaly_path,
            workers=workers,
            intra_op_threads=intra_op_threads,
            keep_from=live,
        )
    except InspectorError as exc:
        raise Refused("load", "; ".join(exc.problems)) from None
    problems = acceptance(cfg, unit, live_spec=live_spec)  # before warming it: cheap first
    if problems:
        raise Refused("acceptance", "; ".join(problems))
    try:
        for _ in range(max(cfg.model.warmup_runs, 1)):
            unit.warmup(1)
            time.sleep(pace_s)
    except ModelRunError as exc:
        raise Refused("warmup", str(exc)) from None
    if golden is not None:
        problems = acceptance(cfg, unit, golden=golden, live_spec=live_spec, pace_s=pace_s)
        if problems:
            raise Refused("acceptance", "; ".join(problems))
    return unit
