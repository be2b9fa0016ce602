"""Files the app serves: only inside the configured recordings and dataset roots.

``resolve`` turns a (root name, relative path) into a real path or None; a path that
leaves its root (``..``, an absolute path, a symlink out, NUL) is None, which the views
answer with 404. Thumbnails are made once into the cache folder, keyed by the file's
path, size and modification time.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import cv2

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def resolve(roots: dict[str, Path], root: str, rel: str) -> Path | None:
    """The file ``rel`` inside ``roots[root]``, or None if it is not a file there."""
    base = roots.get(root)
    if base is None or "\x00" in rel or rel.startswith(("/", "\\")):
        return None
    base = base.resolve()
    try:
        path = (base / rel).resolve()
    except (OSError, RuntimeError, ValueError):
        return None
    if not path.is_relative_to(base) or not path.is_file():
        return None
    return path


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def thumbnail(path: Path, cache: Path, size: int) -> Path | None:
    """A JPEG of at most ``size`` px on its longest side, made once; None if unreadable."""
    st = path.stat()
    key = hashlib.sha256(f"{path}|{st.st_size}|{st.st_mtime_ns}|{size}".encode()).hexdigest()
    out = cache / key[:2] / f"{key}.jpg"
    if out.is_file():
        return out
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        log.warning("thumbnail: cannot read %s", path)
        return None
    if image.dtype != "uint8":  # 16-bit frames: scale to 8 bits for a preview
        image = cv2.convertScaleAbs(image, alpha=255.0 / max(1, int(image.max())))
    h, w = image.shape[:2]
    scale = size / max(h, w)
    if scale < 1:
        image = cv2.resize(
            image,
            (max(1, round(w * scale)), max(1, round(h * scale))),
            interpolation=cv2.INTER_AREA,
        )
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(data.tobytes())
    tmp.replace(out)
    return out
