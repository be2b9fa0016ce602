"""``inspector check CONFIG``: everything that can be validated without running the line."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from ..contract.geometry import FrameSetup
from ..contract.manifest import Manifest
from ..contract.preprocess import FrameError, PreprocessSpec, preprocess
from ..errors import InspectorError, SourceError
from .classifier import Classifier, check_anomaly_fits, check_model_fits, load_anomaly_model
from .config import StationConfig, load_config
from .sources import FolderSource, SourceEnded, SourceLost, VideoSource, make_source


def check_station(path: Path | str) -> tuple[list[str], list[str]]:
    """(problems, notes): problems empty means the station can start."""
    try:
        cfg = load_config(path)
    except InspectorError as exc:
        return exc.problems, []
    notes: list[str] = []
    problems = _check_files(cfg)
    try:
        clf, spec = station_model(cfg)
    except InspectorError as exc:
        return problems + exc.problems, notes
    notes.append(
        f"model {clf.model_id}: input {list(clf.spec.shape)} {clf.spec.color}, "
        f"classes {clf.classes}, providers {clf.providers}"
    )
    problems += check_model_fits(cfg, clf)
    problems += setup_problems(cfg, clf.manifest, notes)
    if cfg.anomaly_model is not None:
        problems += _check_anomaly_model(cfg, clf, notes)
    problems += _check_source(cfg, spec, notes)
    return problems, notes


def station_model(cfg: StationConfig) -> tuple[Classifier, PreprocessSpec]:
    """The station's model and the spec its frames go through (geometry, bit depth)."""
    clf = Classifier(cfg.model, roi=cfg.preprocess.roi, remap=cfg.preprocess.remap())
    spec = clf.spec
    if cfg.source.bit_depth is not None:
        spec = dataclasses.replace(spec, bit_depth=cfg.source.bit_depth)
    return clf, spec


def _check_anomaly_model(cfg: StationConfig, clf: Classifier, notes: list[str]) -> list[str]:
    """``anomaly_model``: loads, is an anomaly model, takes the classifier's input."""
    try:
        anomaly = load_anomaly_model(cfg, clf.workers)
    except InspectorError as exc:
        return exc.problems
    notes.append(
        f"anomaly model {anomaly.model_id}: input {list(anomaly.spec.shape)} "
        f"{anomaly.spec.color}, classes {anomaly.classes}, providers {anomaly.providers}"
    )
    return check_anomaly_fits(cfg, anomaly, clf) or setup_problems(cfg, anomaly.manifest, notes)


def setup_problems(cfg: StationConfig, manifest: Manifest, notes: list[str]) -> list[str]:
    """The station's geometry and bit depth against the ones its model was trained with."""
    station = FrameSetup(cfg.preprocess.geometry(), cfg.source.bit_depth)
    model = manifest.frame_setup
    if model is None:
        notes.append(
            f"model {manifest.model_id}: its manifest does not say which geometry it was "
            "trained with (exported before geometry travelled with the data); not compared"
        )
        return []
    if model == station:
        return []
    return [
        f"preprocess: this station prepares frames with {station.describe()}, but model "
        f"{manifest.model_id} was trained on frames prepared with {model.describe()}; "
        "retrain on this station's recordings, or make preprocess and source.bit_depth match"
    ]


def _check_files(cfg: StationConfig) -> list[str]:
    problems = []
    tls = cfg.mqtt.tls
    if tls is not None:
        for key in ("ca", "cert", "key"):
            p = getattr(tls, key)
            if p is not None and not p.is_file():
                problems.append(f"mqtt.tls.{key}: file not found: {p}")
        if (tls.cert is None) != (tls.key is None):
            problems.append("mqtt.tls: give both cert and key, or neither")
    if cfg.recorder.enabled:
        folder = cfg.recorder.path
        existing = next((p for p in [folder, *folder.parents] if p.exists()), None)
        if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK):
            problems.append(f"recorder.path: cannot create or write {folder}")
    golden = cfg.model.golden
    if golden is not None and not any((golden / d).is_dir() for d in ("pass", "fail")):
        problems.append(f"model.golden: {golden} has no pass/ or fail/ folder of golden images")
    if cfg.model.shadow is not None and not cfg.model.shadow.is_file():
        problems.append(f"model.shadow: model file not found: {cfg.model.shadow}")
    return problems


def _check_source(cfg: StationConfig, spec: PreprocessSpec, notes: list[str]) -> list[str]:
    source = make_source(cfg.source)
    if not isinstance(source, (FolderSource, VideoSource)):
        notes.append(f"{source.describe()}: not opened by check (a live camera or stream)")
        return []
    try:
        source.open()
        source.pacer.period = 0.0
        frame = source.read()
    except SourceError as exc:
        return [f"source: {p}" for p in exc.problems]
    except (SourceLost, SourceEnded) as exc:
        return [f"source: {exc}"]
    finally:
        source.close()
    if frame.image is None:
        return [f"source: first frame unreadable: {frame.error}"]
    h, w = frame.image.shape[:2]
    cam = spec.geometry.camera if spec.geometry is not None else None
    if cfg.preprocess.camera is not None and cam is not None and cam.image_size != (w, h):
        return [
            f"preprocess.camera: calibrated for {cam.image_size[0]}x{cam.image_size[1]} frames, "
            f"but the source delivers {w}x{h}; recalibrate or fix the camera's resolution"
        ]
    try:
        x = preprocess(frame.image, spec)
    except FrameError as exc:
        return [f"preprocess: {exc} (first frame of {source.describe()}, {frame.origin})"]
    notes.append(f"{source.describe()}: first frame {w}x{h} -> model input {list(x.shape)}")
    return []
