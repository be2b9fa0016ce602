"""A run's split as its folder keeps it (``split.json``): written when a run is trained, read
back by export and evaluate, with each image's metadata joined by path (the columns of the
dataset the run was trained on, or of a manifest of the same files given at evaluate)."""

from __future__ import annotations

import json
from pathlib import Path

from .. import TrainingError
from . import datasets


def samples_of_run(run: Path, split: str, data: Path | None = None) -> list[datasets.Sample]:
    """The samples of one split as a run folder's ``split.json`` names them, with the
    metadata of the run's dataset and, for files it has none for, of ``data`` (a CSV
    manifest of the same files: a run trained on the folder, split by its columns)."""
    saved = json.loads((Path(run) / "split.json").read_text())
    root = Path(saved["root"])
    meta = _meta(root)
    if data is not None and Path(data).resolve() != root.resolve():
        meta = {**_meta(Path(data)), **meta}
    samples = []
    for f in saved["files"][split]:
        path = root.parent / f["path"] if root.is_file() else root / f["path"]
        samples.append(datasets.Sample(path, f["label"], split, meta.get(str(path.resolve()), ())))
    return samples


def _meta(root: Path) -> dict[str, tuple[tuple[str, str], ...]]:
    """Every image's metadata per resolved file path: a CSV manifest's extra columns, or a
    folder's review sidecars (none for a dataset that is gone or no longer reads)."""
    try:
        samples = datasets.scan(root).samples
    except TrainingError:
        return {}
    return {str(s.path.resolve()): s.meta for s in samples if s.meta}


def split_file(prepared: datasets.Prepared, root: Path) -> dict:
    """The split as saved in a run folder: counts and the files of every split."""

    def rel(f: str) -> str:
        try:
            return str(Path(f).resolve().relative_to(Path(root).resolve()))
        except ValueError:
            return f

    return {
        "root": str(root),
        "seed": prepared.report.get("split_seed"),
        "given": prepared.report.get("split_given"),
        "classes": prepared.classes,
        "counts": prepared.counts(),
        "files": {
            name: [
                {"path": rel(f), "label": prepared.classes[y]}
                for f, y in zip(s.files, s.y, strict=True)
            ]
            for name, s in prepared.splits.items()
        },
    }
