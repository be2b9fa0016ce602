"""Labels into the dataset folder that ``inspector train`` reads (``ROOT/<class>/*``).

A label copies the part's image to ``ROOT/<label>/<station>_<stem>.<ext>`` with the
recorder's sidecar beside it (``.json``: training reads the station's geometry from it),
extended by ``review`` (who, when, the line's verdict, the recording it came from). Every
label and undo is also appended to ``ROOT/labels.jsonl``, the log that travels with the
dataset. A part is in at most one class folder: its label in force (``unsure`` puts it in
none).

Links are refused on every path: a recording that is a link (or lies behind one) is not
copied and the label is refused before anything is stored; a class folder, a target file
or the log that is a link is never written through (the files are opened with
``O_NOFOLLOW`` and replaced by rename). These methods copy files: call them from a worker
thread, not the event loop.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from pathlib import Path

from ..errors import InspectorError
from .config import DatasetSection
from .db.store import Store
from .files import no_links_below, read_bytes, resolve

log = logging.getLogger(__name__)
UNSURE = "unsure"
SPLITS = ("train", "val", "test")
MAX_PX = 100_000  # a region's far edge, in pixels: no camera frame is larger


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
        if label != UNSURE:
            self._source(part)  # refused before anything is stored
        self._writable()
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

    def add_region(self, part: dict, box: tuple, label: str | None, user: str) -> int:
        """A box where the defect is (x, y, w, h in the recorded image's pixels); it travels
        with the part's image into the dataset (its sidecar's ``review.regions``)."""
        x, y, w, h = box
        if not (x >= 0 and y >= 0 and w >= 1 and h >= 1 and x + w <= MAX_PX and y + h <= MAX_PX):
            raise InspectorError("a region needs x, y >= 0 and a width and height of 1 px or more")
        if label is not None and label not in self.cfg.defects:
            raise InspectorError(f"region label {label!r}: expected one of {self.cfg.defects}")
        rid = self.store.add_region(part["id"], user, (x, y, w, h), label)
        self._regions_changed(part, user, {"kind": "region", "id": rid, "box": [x, y, w, h],
                                           "label": label})  # fmt: skip
        return rid

    def remove_region(self, part: dict, rid: int, user: str) -> bool:
        if not self.store.remove_region(part["id"], rid):
            return False
        self._regions_changed(part, user, {"kind": "region_removed", "id": rid})
        return True

    def _regions_changed(self, part: dict, user: str, entry: dict) -> None:
        self._writable()
        self._log({**entry, "user": user, **self._origin(part)})
        now = self.store.part(part["id"])
        if now and now["label"] and now["label"] != UNSURE:  # in the dataset: its sidecar too
            self._sync(now, now["label"], user)

    def _source(self, part: dict) -> Path:
        """The part's recorded image: a regular file inside its station's folder."""
        source = resolve(self.recordings, part["station"], part["image"])
        if source is None:
            raise InspectorError(
                f"{part['image']}: the recording is gone, or is a link or lies behind one; "
                "nothing labelled"
            )
        return source

    def _writable(self) -> None:
        """Refuse a dataset whose class folders or log are links (they could point anywhere)."""
        for path in (self.root / "labels.jsonl", *(self.root / c for c in self.classes)):
            if not no_links_below(self.root, path) or path.is_symlink():
                raise InspectorError(f"{path} is a link; the dataset is written through none")

    def _log(self, entry: dict) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(self.root / "labels.jsonl", flags, 0o644)
        with os.fdopen(fd, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")

    def file_stem(self, part: dict) -> str:
        return f"{part['station']}_{Path(part['image']).stem}"

    def _sync(self, part: dict, label: str | None, user: str) -> None:
        """Make the dataset hold the part's image in ``label``'s folder only."""
        stem = self.file_stem(part)
        suffix = Path(part["image"]).suffix
        self._writable()
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
        source = resolve(self.recordings, part["station"], part["image"])
        if source is None:
            raise InspectorError(
                f"{part['image']}: the recording is gone or is a link; label kept, image not copied"
            )
        _write(target, read_bytes(source))
        shutil.copystat(source, target, follow_symlinks=False)
        sidecar = resolve(self.recordings, part["station"], part["sidecar"])
        try:
            meta = json.loads(read_bytes(sidecar, 4 << 20)) if sidecar else {}
        except (OSError, ValueError):
            meta = {}
        if not isinstance(meta, dict):
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
            "regions": [
                {"x": r["x"], "y": r["y"], "w": r["w"], "h": r["h"], "label": r["label"]}
                for r in self.store.regions(part["id"])
            ],
        }
        _write(folder / f"{stem}.json", (json.dumps(meta, indent=2) + "\n").encode())

    def counts(self) -> dict:
        """Images per class, and per split when the folder is already split."""
        out: dict[str, dict[str, int]] = {}
        if not self.root.is_dir():
            return {"all": {c: 0 for c in self.classes}}
        splits = [s for s in SPLITS if (self.root / s).is_dir()]
        for split in splits or ["all"]:
            base = self.root / split if splits else self.root
            names = sorted(
                {
                    *self.classes,
                    *(p.name for p in base.iterdir() if p.is_dir() and not p.is_symlink()),
                }
            )
            out[split] = {c: _count_images(base / c) for c in names if not c.startswith(".")}
        return out


def _write(target: Path, data: bytes) -> None:
    """``data`` into ``target`` through a new file renamed over it: a link at ``target`` is
    replaced, never written through."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    tmp.replace(target)


def _count_images(folder: Path) -> int:
    if not folder.is_dir() or folder.is_symlink():
        return 0
    n = 0
    for _root, _dirs, files in os.walk(folder):
        n += sum(1 for f in files if not f.endswith((".json", ".jsonl")))
    return n
