"""Reads the recorders' folders into the store: one row per kept part (its JSON sidecar).

Only new sidecars are read on a rescan, so a folder of 100,000 parts is read once. A
sidecar that is not valid JSON or lacks the verdict's fields is skipped and counted;
unknown keys (geometry, newer fields) are ignored.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..files import read_bytes
from .store import MAX_ID, Store

log = logging.getLogger(__name__)
GOOD_NAMES = ("good", "ok", "pass", "normal")
MAX_SIDECAR = 4 << 20  # bytes; a recorder's sidecar is a few KiB


@dataclass
class ScanResult:
    added: int = 0
    skipped: list[str] = field(default_factory=list)


def defect_score(scores: dict) -> float:
    """The part's defect score: the highest score of a class that is not a good class."""
    values = [float(v) for k, v in scores.items() if str(k).lower() not in GOOD_NAMES]
    if values:
        return max(values)
    good = [float(v) for v in scores.values()]
    return 1.0 - max(good) if good else 0.0


def row_of(station: str, root: Path, sidecar: Path) -> dict:
    """The store's row for one sidecar; ValueError when it is not a recorder sidecar."""
    if sidecar.is_symlink():
        raise ValueError("a link (only files the recorder wrote are read)")
    try:
        data = json.loads(read_bytes(sidecar, MAX_SIDECAR))
    except (OSError, UnicodeDecodeError, RecursionError, json.JSONDecodeError) as exc:
        raise ValueError(f"unreadable ({exc})") from None
    if not isinstance(data, dict) or not {"part_id", "result", "t_verdict", "image"} <= set(data):
        raise ValueError("not a recorder sidecar")
    name = str(data["image"])
    image = sidecar.parent / name
    if image.parent != sidecar.parent or name in ("", ".", "..") or "\x00" in name:
        raise ValueError(f"image {data['image']!r} is not beside its sidecar")
    scores = data.get("scores") or {}
    if not isinstance(scores, dict):
        raise ValueError("scores is not a mapping")
    try:
        seq = int(data.get("seq") or 0)
        t = float(data["t_verdict"])
        score = defect_score(scores)
    except (TypeError, OverflowError) as exc:
        raise ValueError(f"a field of the wrong type ({exc})") from None
    if not (0 <= seq <= MAX_ID and math.isfinite(t) and math.isfinite(score)):
        raise ValueError("seq, t_verdict or a score out of range")
    return {
        "station": station,
        "sidecar": sidecar.relative_to(root).as_posix(),
        "image": image.relative_to(root).as_posix(),
        "part_id": str(data["part_id"]),
        "seq": seq,
        "t": t,
        "result": str(data["result"]),
        "reason": str(data.get("reason") or ""),
        "class": None if data.get("class") is None else str(data["class"]),
        "score": score,
        "model_id": str(data.get("model_id") or ""),
    }


def scan(store: Store, station: str, root: Path, batch: int = 2000) -> ScanResult:
    """Add every sidecar under ``root`` the store does not know yet."""
    root = Path(root).resolve()
    out = ScanResult()
    if not root.is_dir():
        log.warning("recordings folder %s of station %s does not exist", root, station)
        return out
    known = store.known_sidecars(station)
    rows: list[dict] = []
    for folder, _dirs, files in os.walk(root):
        for name in files:
            if not name.endswith(".json"):
                continue
            path = Path(folder) / name
            rel = path.relative_to(root).as_posix()
            if rel in known:
                continue
            try:
                rows.append(row_of(station, root, path))
            except ValueError as exc:
                out.skipped.append(f"{rel}: {exc}")
                continue
            if len(rows) >= batch:
                out.added += store.add_parts(rows)
                rows = []
    if rows:
        out.added += store.add_parts(rows)
    if out.skipped:
        log.warning("%s: %d sidecar(s) skipped, e.g. %s", root, len(out.skipped), out.skipped[0])
    return out
