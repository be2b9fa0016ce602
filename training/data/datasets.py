"""Datasets: find the images, split them, check them, and turn them into model inputs.

Two layouts are read:

- a folder ``ROOT/<class>/*.{png,jpg,jpeg,bmp,tif,tiff}``, optionally already split as
  ``ROOT/{train,val,test}/<class>/*``; an image the review workbench labelled keeps its
  station and what the line said of it as metadata (``training.data.reviewed``);
- a CSV file with a header and the columns ``path`` and ``label`` (and optionally
  ``split``; other columns are kept as metadata). Paths are relative to the CSV.

Without a given split, ``split_samples`` makes a seeded stratified one. ``prepare`` reads
every image through the runtime's own ``inspector.contract.preprocess.preprocess``, lists the
unreadable ones (skipped, not fatal), reports exact and near-duplicate images across
splits (file hash and a 64-bit difference hash) and warns about class imbalance.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import random
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from inspector.contract.preprocess import FrameError, PreprocessSpec, preprocess
from inspector.station.quality import MEASURES, baseline, measure

from .. import TrainingError
from . import reviewed
from .duplicates import cross_split_duplicates

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
SPLITS = ("train", "val", "test")
GOOD_NAMES = ("good", "ok", "pass", "normal")


@dataclass(frozen=True)
class Sample:
    path: Path
    label: str
    split: str | None = None
    meta: tuple[tuple[str, str], ...] = ()


@dataclass
class Dataset:
    root: Path
    samples: list[Sample]
    classes: list[str]


def scan(data: Path) -> Dataset:
    """Find the samples of a folder layout or a CSV manifest."""
    data = Path(data)
    if data.is_file():
        return _scan_csv(data)
    if not data.is_dir():
        raise TrainingError(f"{data}: no such dataset folder or CSV file")
    subdirs = sorted(p for p in data.iterdir() if p.is_dir() and not p.name.startswith("."))
    presplit = [p for p in subdirs if p.name in SPLITS]
    samples = []
    if presplit:
        if "train" not in {p.name for p in presplit}:
            raise TrainingError(f"{data}: a split layout needs a train/ folder")
        for split_dir in presplit:
            for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
                samples += [Sample(f, class_dir.name, split_dir.name) for f in _images(class_dir)]
    else:
        for class_dir in subdirs:
            samples += [Sample(f, class_dir.name) for f in _images(class_dir)]
    review = reviewed.metadata([s.path for s in samples])
    samples = [replace(s, meta=m) for s, m in zip(samples, review, strict=True)]
    if not samples:
        raise TrainingError(
            f"{data}: no images found (expected {data}/<class>/*.png or a train/val/test split)"
        )
    return Dataset(data, samples, sorted({s.label for s in samples}))


def _images(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


def _scan_csv(path: Path) -> Dataset:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise TrainingError(f"{path}: cannot read the CSV manifest ({exc})") from None
    if not rows or not {"path", "label"} <= set(rows[0]):
        raise TrainingError(f"{path}: a dataset CSV needs a header with 'path' and 'label'")
    samples, problems = [], []
    for line, row in enumerate(rows, start=2):
        if not row.get("path") or not row.get("label"):
            problems.append(f"{path}:{line}: empty path or label")
            continue
        split = (row.get("split") or "").strip() or None
        if split is not None and split not in SPLITS:
            problems.append(f"{path}:{line}: split {split!r} is not one of {', '.join(SPLITS)}")
            continue
        meta = tuple((k, v) for k, v in row.items() if k not in ("path", "label", "split") and k)
        samples.append(Sample(path.parent / row["path"], row["label"].strip(), split, meta))
    if problems:
        raise TrainingError(*problems[:20])
    if any(s.split for s in samples) and not all(s.split for s in samples):
        raise TrainingError(f"{path}: give a split for every row or for none")
    return Dataset(path.parent, samples, sorted({s.label for s in samples}))


def defect_classes(classes: list[str], given: list[str]) -> list[str]:
    if given:
        unknown = [c for c in given if c not in classes]
        if unknown:
            raise TrainingError(f"defect_classes: {unknown} not in the dataset's classes {classes}")
        if set(given) == set(classes):
            raise TrainingError("defect_classes: at least one class must be a good class")
        return list(given)
    good = [c for c in classes if c.lower() in GOOD_NAMES]
    if len(good) != 1:
        raise TrainingError(
            f"classes {classes}: name the good class 'good' (or set defect_classes)"
        )
    return [c for c in classes if c != good[0]]


def split_samples(
    samples: list[Sample], val: float, test: float, seed: int
) -> dict[str, list[Sample]]:
    """Seeded, stratified split; a given split is kept (val carved from train when absent)."""
    given = {s.split for s in samples}
    if given != {None}:
        out = {name: [s for s in samples if s.split == name] for name in SPLITS}
        if not out["val"]:
            rest = _stratified(out["train"], {"val": val}, seed)
            out["train"], out["val"] = rest["train"], rest["val"]
        return out
    return _stratified(samples, {"val": val, "test": test}, seed)


def _stratified(samples: list[Sample], fractions: dict[str, float], seed: int):
    rng = random.Random(seed)
    out = {name: [] for name in SPLITS}
    by_class: dict[str, list[Sample]] = {}
    for s in sorted(samples, key=lambda s: str(s.path)):
        by_class.setdefault(s.label, []).append(s)
    for label in sorted(by_class):
        items = by_class[label]
        rng.shuffle(items)
        n = len(items)
        start = 0
        for name in ("test", "val"):
            k = round(n * fractions.get(name, 0.0))
            if fractions.get(name) and k == 0 and n - start > 1:
                k = 1  # every split sees every class when there are at least two
            out[name] += [Sample(s.path, s.label, name, s.meta) for s in items[start : start + k]]
            start += k
        out["train"] += [Sample(s.path, s.label, "train", s.meta) for s in items[start:]]
    return out


@dataclass
class Split:
    """One split's model inputs, labels and the files they came from."""

    x: np.ndarray
    y: np.ndarray
    files: list[str]
    dhash: np.ndarray
    sha: list[str]
    thumbs: np.ndarray  # (N, 32, 32) float32, zero mean and unit variance
    meta: list[dict[str, str]] = field(default_factory=list)  # extra CSV columns per image


@dataclass
class Prepared:
    classes: list[str]
    defect_classes: list[str]
    spec: PreprocessSpec
    splits: dict[str, Split]
    report: dict = field(default_factory=dict)

    def counts(self) -> dict[str, dict[str, int]]:
        return {
            name: {c: int(np.sum(s.y == i)) for i, c in enumerate(self.classes)}
            for name, s in self.splits.items()
        }


def read_image(path: Path) -> np.ndarray:
    """Decode an image file as the camera would deliver it (gray, BGR or BGRA)."""
    data = np.fromfile(str(path), np.uint8) if path.stat().st_size else None
    if data is None or not data.size:
        raise FrameError("empty file")
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise FrameError("not a readable image")
    return image


def dhash(image: np.ndarray) -> int:
    """64-bit difference hash: robust to small changes of level, noise and compression."""
    gray = image if image.ndim == 2 else image[..., 0] if image.shape[2] == 1 else None
    if gray is None:
        gray = cv2.cvtColor(image[..., :3], cv2.COLOR_BGR2GRAY)
    small = cv2.resize(gray, (9, 8), interpolation=cv2.INTER_AREA).astype(np.int16)
    bits = (small[:, 1:] > small[:, :-1]).flatten()
    return int(np.packbits(bits).view(">u8")[0])


def thumbnail(x: np.ndarray) -> np.ndarray:
    """32x32 gray thumbnail normalised to zero mean and unit variance."""
    gray = x[..., 0] if x.shape[2] == 1 else cv2.cvtColor(x, cv2.COLOR_BGR2GRAY)
    t = cv2.resize(gray, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    return (t - t.mean()) / (t.std() + 1e-6)


def load_split(samples: list[Sample], spec: PreprocessSpec, classes: list[str]):
    """Model inputs of readable samples; unreadable ones come back as (file, why)."""
    xs, ys, files, hashes, shas, bad, thumbs, meta = [], [], [], [], [], [], [], []
    for s in samples:
        try:
            raw = s.path.read_bytes()
            image = read_image(s.path)
            x = preprocess(image, spec)
        except (OSError, FrameError) as exc:
            bad.append((str(s.path), str(exc) or type(exc).__name__))
            continue
        xs.append(x)
        ys.append(classes.index(s.label))
        files.append(str(s.path))
        hashes.append(dhash(x))
        thumbs.append(thumbnail(x))
        meta.append(dict(s.meta))
        shas.append(hashlib.sha256(raw).hexdigest())
    x = np.stack(xs) if xs else np.zeros((0, *spec.shape), np.uint8)
    split = Split(
        x,
        np.array(ys, np.int64),
        files,
        np.array(hashes, np.uint64),
        shas,
        np.stack(thumbs) if thumbs else np.zeros((0, 32, 32), np.float32),
        meta,
    )
    return split, bad


def image_stats(x: np.ndarray) -> dict:
    """Percentiles of the runtime's quality measures over model inputs (for drift checks)."""
    out = baseline(list(x))  # the same figures `inspector calibrate baseline` writes
    out["images"] = len(x)
    out["measured_on"] = "model input (after preprocessing)"
    return out


class ImageStats:
    """``image_stats`` of images that arrive in batches: the per-image measures are kept,
    never the images, so a stream of any length fits in memory."""

    def __init__(self):
        self.rows: list[dict[str, float]] = []

    def add(self, x: np.ndarray) -> None:
        self.rows += [measure(im) for im in x]

    def result(self) -> dict:
        out = {}
        for key in MEASURES:  # as ``baseline`` computes them
            values = np.array([r[key] for r in self.rows])
            out[key] = {
                "p5": float(np.percentile(values, 5)),
                "p50": float(np.median(values)),
                "p95": float(np.percentile(values, 95)),
            }
        out["images"] = len(self.rows)
        out["measured_on"] = "model input (after preprocessing)"
        return out


def batches(samples: list[Sample], spec: PreprocessSpec, classes: list[str], size: int):
    """``load_split`` on ``size`` samples at a time: yields ``(Split, unreadable)`` so that
    at most one batch of images is in memory."""
    for i in range(0, len(samples), max(1, size)):
        yield load_split(samples[i : i + size], spec, classes)


def prepare(
    data: Path,
    spec: PreprocessSpec,
    given_defects: list[str],
    val: float,
    test: float,
    seed: int,
    near_bits: int = 4,
) -> Prepared:
    """Scan, split, read and check a dataset; see the module docstring."""
    dataset = scan(data)
    classes = dataset.classes
    if len(classes) < 2:
        raise TrainingError(f"{data}: found only the class {classes}; need at least two")
    defects = defect_classes(classes, given_defects)
    parts = split_samples(dataset.samples, val, test, seed)
    splits, unreadable = {}, []
    for name in SPLITS:
        splits[name], bad = load_split(parts[name], spec, classes)
        unreadable += bad
    for path, why in unreadable:
        log.warning("skipped unreadable image %s: %s", path, why)
    prepared = Prepared(classes, defects, spec, splits)
    counts = prepared.counts()
    warnings = []
    totals = Counter({c: sum(counts[s][c] for s in counts) for c in classes})
    if max(totals.values()) > 3 * max(min(totals.values()), 1):
        warnings.append(f"class imbalance: {dict(totals)} (class weights compensate)")
    dups = cross_split_duplicates(splits, near_bits)
    if dups:
        warnings.append(
            f"{len(dups)} image pair(s) in different splits are the same or look the same "
            "(perceptual hash); the validation/test figures may be optimistic"
        )
    for w in warnings:
        log.warning("%s", w)
    fingerprint = hashlib.sha256()
    for name in SPLITS:
        for f, sha, y in zip(splits[name].files, splits[name].sha, splits[name].y, strict=True):
            fingerprint.update(f"{name}\0{Path(f).name}\0{classes[y]}\0{sha}\n".encode())
    prepared.report = {
        "source": str(data),
        "classes": classes,
        "defect_classes": defects,
        "counts": counts,
        "unreadable": [{"file": f, "why": w} for f, w in unreadable],
        "duplicates": dups,
        "warnings": warnings,
        "fingerprint": fingerprint.hexdigest(),
        "split_seed": seed,
        "split_given": any(s.split for s in dataset.samples),
    }
    return prepared
