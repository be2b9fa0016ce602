"""The models registry and the station's models folder (deploy/README.md, section 5).

A model is a folder with ``model.onnx`` and its manifest ``model.json``. Before a
promotion the model is copied into the station's models folder as ``<name>/`` (the one
folder of the station the workbench writes); ``current`` is the link in that folder that
the station's ``model.path`` goes through (``models/current/model.onnx``), moved
atomically (a new link renamed over the old one). How a promotion decides whether the
model may go live is in ``promote.py``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

from ...errors import InspectorError
from ..config import StationModelSection
from ..files import no_links_below

log = logging.getLogger(__name__)
FILES = ("model.onnx", "model.json")


def find(roots: list[Path]) -> dict[str, dict]:
    """Model name -> {folder, manifest} for every model.onnx with a model.json beside it."""
    out = {}
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            continue
        for onnx in sorted(root.rglob("model.onnx")):
            if onnx.is_symlink() or not no_links_below(root, onnx):
                continue
            try:
                manifest = json.loads((onnx.parent / "model.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if not isinstance(manifest, dict):
                continue
            rel = onnx.parent.relative_to(root).as_posix()
            name = root.name if rel == "." else f"{root.name}/{rel}"
            out[name] = {"folder": onnx.parent, "manifest": manifest}
    return out


_IDS: dict[tuple, str] = {}  # (path, size, mtime) -> model id: each file hashed once


def model_id(folder: Path) -> str | None:
    """The id the station gives this model: the manifest's name @ the file's SHA-256 (12)."""
    try:
        st = (Path(folder) / "model.onnx").stat()
        key = (str(Path(folder).resolve()), st.st_size, st.st_mtime_ns)
    except OSError:
        return None
    if key not in _IDS:
        found = _model_id(Path(folder))
        if found is None:
            return None
        _IDS[key] = found
    return _IDS[key]


def _model_id(folder: Path) -> str | None:
    try:
        manifest = json.loads((Path(folder) / "model.json").read_text(encoding="utf-8"))
        digest = hashlib.sha256()
        with open(Path(folder) / "model.onnx", "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except (OSError, ValueError):
        return None
    name = manifest.get("name", "model") if isinstance(manifest, dict) else "model"
    return f"{name}@{digest.hexdigest()[:12]}"


def current(station: StationModelSection) -> str | None:
    link = Path(station.models) / "current"
    return os.readlink(link) if link.is_symlink() else None


def slug(name: str) -> str:
    return name.replace("/", "-")


def install(station: StationModelSection, name: str, folder: Path) -> Path:
    """Copy the registry's model into the station's models folder as ``<slug>/`` (once; a
    folder of that name holding another model is an error). Returns that folder."""
    models = Path(station.models)
    target = models / slug(name)
    if not no_links_below(models, target) or target.is_symlink():
        raise InspectorError(f"{target} is a link; the models folder is written through none")
    if target.is_dir():
        for f in FILES:
            if _digest(target / f) != _digest(Path(folder) / f):
                raise InspectorError(f"{target} holds another model under the name {name!r}")
        return target
    tmp = models / f".{target.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for f in FILES:
            shutil.copyfile(Path(folder) / f, tmp / f, follow_symlinks=False)
        tmp.rename(target)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise InspectorError(f"cannot copy the model into {models}: {exc}") from None
    return target


def link_to(models: Path, target: str) -> None:
    if "/" in target or target in ("", ".", "..") or not (models / target).is_dir():
        raise InspectorError(f"{target!r} is not a model folder in {models}")
    tmp = models / ".current.tmp"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    tmp.replace(models / "current")


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None
