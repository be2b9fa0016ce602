"""A run's split as its folder keeps it (``split.json``): written when a run is trained, read
back by export and evaluate, with each image's metadata joined by path (the columns of the
dataset the run was trained on, or of a manifest of the same files given at evaluate)."""

from __future__ import annotations

import json
from pathlib import Path

from .. import TrainingError
from . import datasets, reviewed


def samples_of_run(run: Path, split: str, data: Path | None = None) -> list[datasets.Sample]:
    """The samples of one split as a run folder's ``split.json`` names them, with the
    metadata of the run's dataset (a CSV manifest's columns; a folder's review sidecars of
    these files) and, for files it has none for, of ``data`` (a CSV manifest of the same
    files: a run trained on the folder, split by its columns)."""
    saved, base = _saved(run)
    root = Path(saved["root"])
    files = saved["files"][split]
    paths = [base / f["path"] for f in files]
    if root.is_file():
        own = _manifest_meta(root)
        meta = [own.get(str(p.resolve()), ()) for p in paths]
    else:
        meta = reviewed.metadata(paths)
    if data is not None and Path(data).is_file() and Path(data).resolve() != root.resolve():
        given = _manifest_meta(Path(data))
        meta = [m or given.get(str(p.resolve()), ()) for m, p in zip(meta, paths, strict=True)]
    return [
        datasets.Sample(p, f["label"], split, m) for p, f, m in zip(paths, files, meta, strict=True)
    ]


def files_of_run(run: Path) -> tuple[Path, dict[str, list[Path]]]:
    """The folder a run's ``split.json`` is relative to (the dataset folder, or a manifest's
    folder) and the image paths of every split."""
    saved, base = _saved(run)
    return base, {name: [base / f["path"] for f in files] for name, files in saved["files"].items()}


def _saved(run: Path) -> tuple[dict, Path]:
    saved = json.loads((Path(run) / "split.json").read_text())
    root = Path(saved["root"])
    return saved, root.parent if root.is_file() else root


def _manifest_meta(manifest: Path) -> dict[str, tuple[tuple[str, str], ...]]:
    """A CSV manifest's extra columns per resolved file path (none for a manifest that is
    gone or changed so that it no longer reads)."""
    try:
        samples = datasets.scan(manifest).samples
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
