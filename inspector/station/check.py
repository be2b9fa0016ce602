"""``inspector check CONFIG``: everything that can be validated without running the line."""

from __future__ import annotations

import os
from pathlib import Path

from ..contract.preprocess import FrameError, preprocess
from ..errors import InspectorError, SourceError
from .classifier import Classifier, check_model_fits
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
        clf = Classifier(cfg.model, roi=cfg.preprocess.roi, remap=cfg.preprocess.remap())
    except InspectorError as exc:
        return problems + exc.problems, notes
    notes.append(
        f"model {clf.model_id}: input {list(clf.spec.shape)} {clf.spec.color}, "
        f"classes {clf.classes}, providers {clf.providers}"
    )
    problems += check_model_fits(cfg, clf)
    problems += _check_source(cfg, clf, notes)
    return problems, notes


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
    return problems


def _check_source(cfg: StationConfig, clf: Classifier, notes: list[str]) -> list[str]:
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
    try:
        x = preprocess(frame.image, clf.spec)
    except FrameError as exc:
        return [f"preprocess: {exc} (first frame of {source.describe()}, {frame.origin})"]
    h, w = frame.image.shape[:2]
    if cfg.preprocess.camera is not None:
        from ..contract.geometry import load_camera

        cam = load_camera(cfg.preprocess.camera)
        if cam.image_size != (w, h):
            return [
                f"preprocess.camera: calibrated for {cam.image_size[0]}x{cam.image_size[1]} frames, "
                f"but the source delivers {w}x{h}; recalibrate or fix the camera's resolution"
            ]
    notes.append(f"{source.describe()}: first frame {w}x{h} -> model input {list(x.shape)}")
    return []
