"""Recipes are the station's model files: every ``*.onnx`` in the recipes folder (by default
the live model's folder) is one recipe, named by its file name. Preparing one (OPC UA) or
promoting one by its model id (Sparkplug B) asks the station to promote it through its one
command path (load, acceptance rule, golden set, swap between batches); the station's answer
is the method's answer."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path


@dataclass(frozen=True)
class Recipe:
    name: str  # the file name: the recipe's ExternalId and InternalId
    path: Path
    modified: datetime
    sha256: bytes


class RecipeFolder:
    """The model files of one folder, with their hashes (kept while the file is unchanged)."""

    def __init__(self, folder: Path | None) -> None:
        self.configured = folder
        self._hashes: dict[tuple[str, int, int], bytes] = {}

    def folder(self, live_model_path: str | None) -> Path | None:
        if self.configured is not None:
            return Path(self.configured)
        return Path(live_model_path).parent if live_model_path else None

    def scan(self, live_model_path: str | None) -> list[Recipe]:
        folder = self.folder(live_model_path)
        if folder is None or not folder.is_dir():
            return []
        out = []
        for p in sorted(folder.glob("*.onnx")):
            if p.name.startswith(".") or not p.is_file():
                continue
            st = p.stat()
            key = (str(p), st.st_mtime_ns, st.st_size)
            digest = self._hashes.get(key)
            if digest is None:
                h = hashlib.sha256()
                with open(p, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)
                digest = self._hashes[key] = h.digest()
            modified = datetime.fromtimestamp(st.st_mtime, timezone.utc)
            out.append(Recipe(p.name, p, modified, digest))
        return out

    def find(self, name: str, live_model_path: str | None) -> Recipe | None:
        """The recipe named ``name`` (a plain file name in the folder: nothing outside it)."""
        if not name or "/" in name or "\\" in name or name in (".", ".."):
            return None
        for r in self.scan(live_model_path):
            if r.name == name:
                return r
        return None


def by_model_id(recipes: list[Recipe], model_id: str) -> list[Recipe]:
    """The files whose content the station's model id ``NAME@DIGEST`` names (DIGEST: the
    first 12 hex digits of the file's SHA-256, as the station gives it; the manifest's name is
    not read). Empty when the id is not of that form."""
    _, at, digest = model_id.rpartition("@")
    if not at or len(digest) != 12 or any(c not in "0123456789abcdef" for c in digest):
        return []
    return [r for r in recipes if r.sha256.hex().startswith(digest)]


def is_live(recipe: Recipe, live_model_path: str | None) -> bool:
    if not live_model_path:
        return False
    return os.path.realpath(recipe.path) == os.path.realpath(live_model_path)
