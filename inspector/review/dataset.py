"""Labels into the dataset folder that ``inspector train`` reads (``ROOT/<class>/*``).

A label copies the part's image to ``ROOT/<label>/<station>_<stem>.<ext>`` with the
recorder's sidecar beside it (``.json``: training reads the station's geometry from it),
extended by ``review`` (who, when, the line's verdict, the recording it came from). Every
label and undo is also appended to ``ROOT/labels.jsonl``, the log that travels with the
dataset. A part is in at most one class folder: its label in force (``unsure`` puts it in
none).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

from ..errors import InspectorError
from .config import DatasetSection
from .store import Store

log = logging.getLogger(__name__)
UNSURE = "unsure"
SPLITS = ("train", "val", "test")


def disagreement(line_result: str, label: str, good: str) -> str | None:
    """``false_reject``: the line failed a part people call good; ``escape``: it passed a defect."""
    if label == UNSURE:
        return None
    if line_result == "fail" and label == good:
        return "false_reject"
    if line_result == "pass" and label != good:
        return "escape"
    return None


class Labeller:
    def __init__(self, cfg: DatasetSection, store: Store, recordings: dict[str, Path]) -> None:
        self.cfg = cfg
        self.root = Path(cfg.path)
        self.store = store
        self.recordings = recordings  # station -> recordings root
        self.classes = [cfg.good, *cfg.defects]

    def keys(self) -> list[tuple[str, str]]:
        """(key, label) pairs of the keyboard: g, 1..9, u."""
        return [("g", self.cfg.good), *((str(i + 1), c) for i, c in enumerate(self.cfg.defects))]

    def label(self, part: dict, label: str, user: str) -> int:
        if label not in self.classes and label != UNSURE:
            raise InspectorError(f"label {label!r}: expected one of {self.classes + [UNSURE]}")
        lid = self.store.add_label(
            part, user, label, disagreement(part["result"], label, self.cfg.good)
        )
        self._sync(part, label, user)
        self._log({"kind": "label", "id": lid, "label": label, "user": user, **self._origin(part)})
        return lid

    def undo(self, label_id: int, user: str) -> dict | None:
        """Take back a label in force; the part returns to the label it had before."""
        label = self.store.label(label_id)
        part = self.store.part(label["part"]) if label else None
        if part is None or part["label_id"] != label_id:
            return None
        previous = self.store.label_in_force_before(label)
        new = previous["label"] if previous else None
        disagrees = disagreement(part["result"], new, self.cfg.good) if new else None
        self.store.undo(label, user, previous, disagrees)
        self._sync(part, new, user)
        self._log(
            {"kind": "undo", "undoes": label_id, "label": new, "user": user, **self._origin(part)}
        )
        return self.store.part(part["id"])

    def _origin(self, part: dict) -> dict:
        return {
            "t": time.time(),
            "station": part["station"],
            "recording": part["sidecar"],
            "part_id": part["part_id"],
            "line_result": part["result"],
            "line_class": part["class"],
        }

    def _log(self, entry: dict) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / "labels.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")

    def file_stem(self, part: dict) -> str:
        return f"{part['station']}_{Path(part['image']).stem}"

    def _sync(self, part: dict, label: str | None, user: str) -> None:
        """Make the dataset hold the part's image in ``label``'s folder only."""
        stem = self.file_stem(part)
        source = self.recordings[part["station"]] / part["image"]
        suffix = Path(part["image"]).suffix
        for cls in self.classes:
            if cls == label:
                continue
            for ext in (suffix, ".json"):
                (self.root / cls / f"{stem}{ext}").unlink(missing_ok=True)
        if label is None or label == UNSURE:
            return
        folder = self.root / label
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{stem}{suffix}"
        if not source.is_file():
            raise InspectorError(f"{source}: the recording is gone; label kept, image not copied")
        shutil.copy2(source, target)
        sidecar = self.recordings[part["station"]] / part["sidecar"]
        try:
            meta = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            meta = {}
        meta["image"] = target.name
        meta["review"] = {
            "label": label,
            "user": user,
            "t": time.time(),
            "station": part["station"],
            "recording": part["sidecar"],
            "line_result": part["result"],
            "line_class": part["class"],
        }
        (folder / f"{stem}.json").write_text(json.dumps(meta, indent=2) + "\n")

    def counts(self) -> dict:
        """Images per class, and per split when the folder is already split."""
        out: dict[str, dict[str, int]] = {}
        if not self.root.is_dir():
            return {"all": {c: 0 for c in self.classes}}
        splits = [s for s in SPLITS if (self.root / s).is_dir()]
        for split in splits or ["all"]:
            base = self.root / split if splits else self.root
            names = sorted({*self.classes, *(p.name for p in base.iterdir() if p.is_dir())})
            out[split] = {c: _count_images(base / c) for c in names if not c.startswith(".")}
        return out


def _count_images(folder: Path) -> int:
    if not folder.is_dir():
        return 0
    n = 0
    for _root, _dirs, files in os.walk(folder):
        n += sum(1 for f in files if not f.endswith((".json", ".jsonl")))
    return n
