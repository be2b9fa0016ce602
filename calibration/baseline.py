"""Image-quality baseline: ``inspector calibrate baseline IMAGES_DIR --out baseline.yaml``.

Given the station (``make_baseline(folder, station=STATION.yaml)``), every image is
measured as that station's model sees it (geometry, resize, colour), which is what the
station's quality watch and the manifest's ``image_stats`` measure; without it, whole
images (right only for a station without geometry).
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import cv2
import yaml

from inspector.contract.preprocess import FrameError, preprocess
from inspector.station.quality import MODEL_INPUT, baseline

from .camera import CalibrationError, list_images


def make_baseline(folder: Path, station: Path | None = None) -> str:
    files = list_images(folder)
    read = [(p, cv2.imread(str(p), cv2.IMREAD_UNCHANGED)) for p in files]
    read = [(p, im) for p, im in read if im is not None]
    if not read:
        raise CalibrationError(f"{folder}: none of the images could be read")
    images = [im for _, im in read]
    if station is not None:
        from inspector.station.check import station_model
        from inspector.station.config import load_config

        _, spec = station_model(load_config(station))
        try:
            images = [preprocess(im, spec) for _, im in read]
        except FrameError as exc:
            raise CalibrationError(f"{folder}: an image does not fit the station: {exc}") from None
    stats = baseline(images)
    stats["measured_on"] = MODEL_INPUT if station is not None else "whole frame"
    data = {
        "stats": stats,
        "images": len(images),
        "source": str(Path(folder).resolve()),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    return yaml.safe_dump(data, sort_keys=False)
