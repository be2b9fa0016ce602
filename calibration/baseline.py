"""Image-quality baseline: ``inspector calibrate baseline IMAGES_DIR --out baseline.yaml``."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import cv2
import yaml

from inspector.station.quality import baseline

from .camera import CalibrationError, list_images


def make_baseline(folder: Path) -> str:
    files = list_images(folder)
    images = [
        im for im in (cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in files) if im is not None
    ]
    if not images:
        raise CalibrationError(f"{folder}: none of the images could be read")
    data = {
        "stats": baseline(images),
        "images": len(images),
        "source": str(Path(folder).resolve()),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    return yaml.safe_dump(data, sort_keys=False)
