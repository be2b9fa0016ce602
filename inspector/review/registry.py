"""The models registry and promotion to a station (deploy/README.md, section 5).

A model is a folder with ``model.onnx`` and its manifest ``model.json``. Promotion copies
it into the station's models folder as ``<name>/``, runs ``inspector verify`` with the
station's config pointed at that copy and its golden set, and only when that passes
moves the ``current`` link to it (atomically: a new link renamed over the old one).
Roll back moves ``current`` to the folder it pointed at before.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from ..errors import InspectorError
from .config import StationModelSection

log = logging.getLogger(__name__)


def find(roots: list[Path]) -> dict[str, dict]:
    """Model name -> {folder, manifest} for every model.onnx with a model.json beside it."""
    out = {}
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            continue
        for onnx in sorted(root.rglob("model.onnx")):
            try:
                manifest = json.loads((onnx.parent / "model.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            rel = onnx.parent.relative_to(root).as_posix()
            name = root.name if rel == "." else f"{root.name}/{rel}"
            out[name] = {"folder": onnx.parent, "manifest": manifest}
    return out


def current(station: StationModelSection) -> str | None:
    link = Path(station.models) / "current"
    return os.readlink(link) if link.is_symlink() else None


def verify(station: StationModelSection, model: Path, timeout: float = 600) -> tuple[bool, str]:
    """``inspector verify`` of the station's config with its model.path set to ``model``."""
    cfg_path = Path(station.config)
    try:
        data = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise InspectorError(f"{cfg_path}: cannot read the station config ({exc})") from None
    data.setdefault("model", {})["path"] = str(model)
    tmp = cfg_path.with_name(f".review-verify-{os.getpid()}-{cfg_path.name}")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    try:
        cmd = [
            sys.executable,
            "-m",
            "inspector.cli",
            "verify",
            str(tmp),
            str(station.golden),
            "--no-publish",
        ]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"inspector verify did not finish in {timeout:.0f} s"
    finally:
        tmp.unlink(missing_ok=True)
    return r.returncode == 0, (r.stdout + r.stderr)[-4000:]


def promote(station: StationModelSection, name: str, folder: Path) -> tuple[bool, str, str | None]:
    """(passed, verify output, previous link target); ``current`` moves only on a pass."""
    models = Path(station.models)
    slug = name.replace("/", "-")
    target = models / slug
    if not target.exists():
        target.mkdir(parents=True)
        for f in ("model.onnx", "model.json"):
            shutil.copy2(Path(folder) / f, target / f)
    passed, output = verify(station, target / "model.onnx")
    previous = current(station)
    if passed:
        link_to(models, slug)
    return passed, output, previous


def link_to(models: Path, target: str) -> None:
    if "/" in target or target in ("", ".", "..") or not (models / target).is_dir():
        raise InspectorError(f"{target!r} is not a model folder in {models}")
    tmp = models / ".current.tmp"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    tmp.replace(models / "current")
