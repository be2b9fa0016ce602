"""The live model unit: everything that decides a part, loaded, checked, swapped, shadowed and
rolled back as one thing (DESIGN 10).

A ``ModelUnit`` holds the classifier (``model``), the optional anomaly model beside it
(``anomaly_model``, run on the same preprocessed batch), their thresholds, the rule that
combines their decisions (a part fails when either fails it), the heat-map policy, and the
training statistics the quality watch compares frames with. ``load_unit`` builds one from the
station config (or a requested pair of files); ``acceptance`` (acceptance.py) says whether it
may decide parts on the station.

Model kinds register in ``kinds.KINDS``: which slot of the unit a kind fills.

    unit = load_unit(cfg)
    outcomes = unit.decide(unit.run(batch, maps=True))
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..contract.records import Part, Reason, Verdict
from ..errors import ConfigError, ModelError
from .classifier import Classifier, ModelRunError
from .config import StationConfig
from .decision import ANOMALY_MODEL, CLASSIFIER, Decider, Decision, combine
from .heatmap import cam_level
from .kinds import KINDS, Kind, kind_of


@dataclass(frozen=True, slots=True)
class Outcome:
    """One part's decision by the unit: the combined ``decision``, the models it follows
    (``decided_by``, empty on a one-model unit), the heat map the recorder keeps (or None),
    and the classifier's own decision."""

    decision: Decision
    decided_by: tuple[str, ...]
    heat: np.ndarray | None


@dataclass(frozen=True, eq=False)
class ModelUnit:
    """A loaded unit. ``path``/``anomaly_path``: the files themselves (links resolved)."""

    classifier: Classifier
    decider: Decider
    path: Path
    anomaly: Classifier | None = None
    anomaly_decider: Decider | None = None
    anomaly_path: Path | None = None
    loaded: float = dataclasses.field(default_factory=time.time)

    @property
    def model_id(self) -> str:
        return self.classifier.model_id

    @property
    def anomaly_model_id(self) -> str | None:
        return None if self.anomaly is None else self.anomaly.model_id

    @property
    def spec(self):
        return self.classifier.spec

    @property
    def max_batch(self) -> int:
        return self.classifier.max_batch

    @property
    def workers(self) -> int:
        return self.classifier.workers

    @property
    def training_stats(self) -> dict:
        """The image statistics of the classifier's training set (the quality watch's
        reference), empty when the manifest has none."""
        return self.classifier.manifest.data.get("image_stats") or {}

    @property
    def thresholds(self) -> dict[str, float]:
        out = dict(self.decider.thresholds)
        if self.anomaly_decider is not None:
            out[ANOMALY_MODEL] = next(iter(self.anomaly_decider.thresholds.values()))
        return out

    def files(self) -> tuple[Path, Path | None]:
        return self.path, self.anomaly_path

    def describe(self) -> str:
        extra = f" + anomaly model {self.anomaly_model_id}" if self.anomaly is not None else ""
        return f"model {self.model_id}{extra}"

    def status(self) -> dict:
        """What the retained status says of this unit."""
        return {
            "id": self.model_id,
            "path": str(self.path),
            "anomaly_id": self.anomaly_model_id,
            "anomaly_path": None if self.anomaly_path is None else str(self.anomaly_path),
            "thresholds": {k: round(v, 6) for k, v in self.thresholds.items()},
            "loaded": round(self.loaded, 3),
        }

    def buffer(self, n: int) -> np.ndarray:
        return self.classifier.buffer(n)

    def warmup(self, runs: int) -> None:
        self.classifier.warmup(runs)
        if self.anomaly is not None:
            self.anomaly.warmup(runs)

    def verdict(
        self,
        part: Part,
        result: str,
        reason: Reason,
        label: str | None,
        scores: dict[str, float] | None,
        detail: str,
        decided_by: tuple[str, ...],
        now: float,
        now_mono: float,
    ) -> Verdict:
        """The verdict record for ``part`` as this unit decided it (or failed it safe): its
        thresholds and model ids, the part's times and the latency of each stage."""
        frame = part.frame
        latency = {"e2e": (now_mono - part.t_trigger_mono) * 1000.0}
        if frame is not None and frame.t_capture_mono >= part.t_trigger_mono:
            latency["capture_to_verdict"] = (now_mono - frame.t_capture_mono) * 1000.0
        latency.update(part.stage_times(now_mono))
        dual = {}
        if self.anomaly is not None:
            dual = {"decided_by": decided_by, "anomaly_model_id": self.anomaly_model_id}
        return Verdict(
            part_id=part.part_id,
            seq=part.seq,
            result=result,
            reason=reason,
            label=label,
            scores=scores or {},
            thresholds=self.thresholds,
            model_id=self.model_id,
            t_trigger=part.t_trigger,
            t_capture=frame.t_capture if frame else None,
            t_verdict=now,
            deadline=part.deadline,
            deadline_mono=part.deadline_mono,
            latency_ms=latency,
            detail=detail,
            frame=frame.origin if frame else "",
            **dual,
        )

    # -- deciding ------------------------------------------------------------------------------
    def run(self, buf: np.ndarray, maps: bool = False) -> tuple:
        """Raw outputs of every model on ``buf``: (probs, maps, a_probs, a_maps), maps None
        unless asked for (the recorder keeps them). ModelRunError names the model that failed."""
        which = "model"
        try:
            probs, cmaps = _run(self.classifier, buf, maps)
            a_probs = a_maps = None
            if self.anomaly is not None:  # the same batch, after the classifier
                which = "anomaly model"
                a_probs, a_maps = _run(self.anomaly, buf, maps)
        except ModelRunError as exc:
            raise ModelRunError(f"{which} error: {exc}") from exc
        return probs, cmaps, a_probs, a_maps

    def decide(self, raw: tuple) -> list[Outcome]:
        """One ``Outcome`` per row of ``run``'s outputs: the line's decision rule."""
        probs, cmaps, a_probs, a_maps = raw
        out = []
        for i, row in enumerate(probs):
            d = self.decider.decide(row)
            heat = self._heat(cmaps[i], d) if cmaps is not None else None
            if self.anomaly is None:
                out.append(Outcome(d, (), heat))
                continue
            a = self.anomaly_decider.decide(a_probs[i])
            if a.result == "fail" and a_maps is not None:  # the recorder keeps the anomaly map
                heat = a_maps[i]
            f, by = combine(d, a)
            out.append(Outcome(f, by, heat))
        return out

    def decide_batch(self, buf: np.ndarray) -> list[Outcome]:
        return self.decide(self.run(buf))

    def _heat(self, amap: np.ndarray, d: Decision) -> np.ndarray | None:
        """The classifier's map the recorder keeps for this decision: an anomaly model's map
        as is; a class-activation map for failed and uncertain parts only, relative to the part
        (its strongest location red)."""
        if self.classifier.map_kind != "cam":
            return amap
        if d.result != "fail":
            return None
        return cam_level(amap)


def _run(clf: Classifier, buf: np.ndarray, maps: bool) -> tuple[np.ndarray, np.ndarray | None]:
    return clf.run_with_maps(buf) if maps else (clf.run(buf), None)


KEEP = "keep"  # load_unit's anomaly_path: the anomaly model of the unit given as ``keep_from``


def load_unit(
    cfg: StationConfig,
    path: Path | str | None = None,
    anomaly_path: Path | str | None = KEEP,
    workers: int | None = None,
    intra_op_threads: int | None = None,
    keep_from: ModelUnit | None = None,
) -> ModelUnit:
    """Load a unit as the station runs it (ModelError when a file cannot be loaded).

    ``path``: the classifier (None: ``model.path``); ``anomaly_path``: the anomaly model
    (KEEP: the one of ``keep_from``, else ``anomaly_model.path``; None or "": none). The
    station's geometry is the station config's own: a model trained on other frames is
    refused by ``acceptance``, never run with its own geometry."""
    model_cfg = cfg.model
    if path is not None:
        model_cfg = dataclasses.replace(model_cfg, path=Path(path))
    if workers is not None:
        model_cfg = dataclasses.replace(model_cfg, workers=workers)
    if intra_op_threads is not None:
        model_cfg = dataclasses.replace(model_cfg, intra_op_threads=intra_op_threads)
    clf = Classifier(model_cfg, **_station_geometry(cfg))
    kind_of(clf.manifest)  # a kind this station runs (ModelError otherwise)
    decider = Decider(clf.manifest, cfg.decision.thresholds, cfg.decision.uncertainty_margin)
    unit = ModelUnit(clf, decider, _real(model_cfg.path))
    if anomaly_path == KEEP:
        if keep_from is not None:
            return dataclasses.replace(
                unit,
                anomaly=keep_from.anomaly,
                anomaly_decider=keep_from.anomaly_decider,
                anomaly_path=keep_from.anomaly_path,
            )
        anomaly_path = None if cfg.anomaly_model is None else cfg.anomaly_model.path
    if not anomaly_path:
        return unit
    a = load_anomaly(cfg, Path(anomaly_path), clf.workers)
    return dataclasses.replace(
        unit, anomaly=a, anomaly_decider=anomaly_decider(cfg, a), anomaly_path=_real(anomaly_path)
    )


def load_anomaly(cfg: StationConfig, path: Path, workers: int) -> Classifier:
    """An anomaly model run by the classifier's ``workers``; errors name ``anomaly_model.*``."""
    from .config import AnomalyModelSection

    section = cfg.anomaly_model or AnomalyModelSection(path=path)
    section = dataclasses.replace(section, path=path).model_section(cfg.model, workers)
    try:
        clf = Classifier(section, **_station_geometry(cfg))
    except ModelError as exc:
        raise ModelError(
            *(("anomaly_" + p if p.startswith("model.") else p) for p in exc.problems)
        ) from None
    kind = kind_of(clf.manifest)
    if not kind.beside:
        raise ConfigError(
            f"anomaly_model.path: {path.name} is not an anomaly model (its manifest has no "
            "'kind: anomaly'); put a classifier under 'model'"
        )
    return clf


def anomaly_decider(cfg: StationConfig, clf: Classifier) -> Decider:
    t = None if cfg.anomaly_model is None else cfg.anomaly_model.threshold
    overrides = None if t is None else {clf.manifest.defect_classes[0]: t}
    # a band on the anomaly score only when the station asks for the models' own bands
    auto = "auto" if cfg.decision.uncertainty_margin == "auto" else 0.0
    return Decider(clf.manifest, overrides, auto)


def _station_geometry(cfg: StationConfig) -> dict:
    return {"roi": cfg.preprocess.roi, "remap": cfg.preprocess.remap(), "own_geometry": False}


def _real(path) -> Path:
    return Path(os.path.realpath(path))


__all__ = [
    "ANOMALY_MODEL",
    "CLASSIFIER",
    "KEEP",
    "KINDS",
    "Kind",
    "ModelUnit",
    "Outcome",
    "kind_of",
    "load_unit",
]
