"""``inspector check CONFIG``: everything that can be validated without running the line.

Whether the model unit may decide parts here is ``acceptance``'s answer, the same one
``run``, ``verify``, a swap and the workbench get; this adds the files and the source.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..contract.preprocess import FrameError, PreprocessSpec, preprocess
from ..errors import InspectorError, SourceError
from .acceptance import acceptance, setup_problems, station_spec
from .config import StationConfig, load_config
from .sources import FolderSource, SourceEnded, SourceLost, VideoSource, make_source
from .unit import ModelUnit, load_unit


def check_station(path: Path | str) -> tuple[list[str], list[str]]:
    """(problems, notes): problems empty means the station can start."""
    try:
        cfg = load_config(path)
    except InspectorError as exc:
        return exc.problems, []
    notes: list[str] = []
    problems = _check_files(cfg)
    try:
        unit = load_unit(cfg)
    except InspectorError as exc:
        return problems + exc.problems, notes
    notes += [_describe(c) for c in (unit.classifier, unit.anomaly) if c is not None]
    for c in (unit.classifier, unit.anomaly):  # the notes of models without geometry
        if c is not None:
            setup_problems(cfg, c.manifest, notes)
    problems += acceptance(cfg, unit, golden=cfg.model.golden if not problems else None)
    problems += _check_source(cfg, station_spec(cfg, unit), notes)
    return problems, notes


def station_model(cfg: StationConfig) -> tuple[ModelUnit, PreprocessSpec]:
    """The station's model unit and the spec its frames go through (geometry, bit depth)."""
    unit = load_unit(cfg)
    return unit, station_spec(cfg, unit)


def _describe(clf) -> str:
    what = "anomaly model" if clf.manifest.data.get("kind") == "anomaly" else "model"
    return (
        f"{what} {clf.model_id}: input {list(clf.spec.shape)} {clf.spec.color}, "
        f"classes {clf.classes}, providers {clf.providers}"
    )


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
