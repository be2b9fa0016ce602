"""Files the app reads and serves: only inside the configured roots, never through a link.

``resolve`` turns a (root name, relative path) into a path or None; a path that leaves its
root (``..``, an absolute path, NUL, an encoded separator) or passes through a symbolic
link anywhere below the root is None, which the views answer with 404. The root itself is
the operator's choice and may be a link; nothing under it may. ``read_bytes`` opens the
final file without following a link (``O_NOFOLLOW``), so a file swapped for a link after
the check is refused too. Thumbnails are made once into the cache folder, keyed by the
file's path, size and modification time.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
MAX_REL = 1024  # characters of a relative path; longer ones are refused
MAX_IMAGE_BYTES = 256 << 20  # a recorded frame larger than this is not decoded


def resolve(roots: dict[str, Path], root: str, rel: str) -> Path | None:
    """The regular file ``rel`` inside ``roots[root]``, or None (not there, a link, outside)."""
    base = roots.get(root)
    if base is None:
        return None
    return inside(Path(base), rel)


def inside(base: Path, rel: str, want_dir: bool = False) -> Path | None:
    """``base/rel`` when every component below ``base`` is a real folder or (last) a regular
    file (a folder with ``want_dir``); None for links, ``..``, absolute paths and the like."""
    if (
        not isinstance(rel, str)
        or not rel
        or len(rel) > MAX_REL
        or "\x00" in rel
        or "\\" in rel
        or rel.startswith("/")
    ):
        return None
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return None
    try:
        path = Path(os.path.realpath(base))
    except (OSError, ValueError):
        return None
    for i, name in enumerate(parts):
        path = path / name
        try:
            st = os.lstat(path)
        except (OSError, ValueError):
            return None
        last = i == len(parts) - 1
        if stat.S_ISLNK(st.st_mode):
            return None
        if not last and not stat.S_ISDIR(st.st_mode):
            return None
        if last and not (stat.S_ISDIR(st.st_mode) if want_dir else stat.S_ISREG(st.st_mode)):
            return None
    return path


def no_links_below(base: Path, path: Path) -> bool:
    """True when ``path`` lies under ``base`` and no component below ``base`` is a link
    (components that do not exist yet are fine: they will be made as real folders)."""
    try:
        base = Path(os.path.realpath(base))
        rel = Path(os.path.abspath(path)).relative_to(base)
    except (OSError, ValueError):
        return False
    current = base
    for name in rel.parts:
        if name in ("", ".", ".."):
            return False
        current = current / name
        if current.is_symlink():
            return False
    return True


def read_bytes(path: Path, limit: int = MAX_IMAGE_BYTES) -> bytes:
    """The file's bytes, opened without following a link; OSError for a link or a file that
    is not regular or is larger than ``limit``."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"{path.name}: not a regular file")
        if st.st_size > limit:
            raise OSError(f"{path.name}: larger than {limit >> 20} MiB")
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read(limit + 1)
    finally:
        os.close(fd)


def read_image(path: Path) -> np.ndarray | None:
    """The image decoded as it is stored (``IMREAD_UNCHANGED``), read without following a
    link; None when it cannot be read or decoded."""
    try:
        data = read_bytes(path)
    except OSError as exc:
        log.warning("cannot read %s: %s", path, exc)
        return None
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def thumbnail(path: Path, cache: Path, size: int) -> Path | None:
    """A JPEG of at most ``size`` px on its longest side, made once; None if unreadable.
    Decoding takes milliseconds to seconds: call it from a worker thread."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    key = hashlib.sha256(f"{path}|{st.st_size}|{st.st_mtime_ns}|{size}".encode()).hexdigest()
    out = cache / key[:2] / f"{key}.jpg"
    if out.is_file():
        return out
    image = read_image(path)
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
    tmp = out.with_suffix(f".{os.getpid()}.{id(data)}.tmp")
    tmp.write_bytes(data.tobytes())
    tmp.replace(out)
    return out
