"""The ELPV solar-cell dataset (PyPI ``elpv-dataset``) as a training folder.

``import_elpv(dest)`` copies the 2,624 electroluminescence cell images (300x300 gray)
into ``dest/good/`` (defect probability < 0.5) and ``dest/defect/`` (>= 0.5), and writes
``dest/manifest.csv`` with each image's probability and cell type (mono/poly). ``SEED``
is the split seed of the benchmarks on it (``training.bench.accuracy``, ``bench.anomaly``).
"""

from __future__ import annotations

import csv
import logging
import shutil
from pathlib import Path

import numpy as np

from .. import TrainingError

log = logging.getLogger(__name__)
SEED = 2019


def package_dir() -> Path:
    try:
        import elpv_dataset
    except ImportError:
        raise TrainingError(
            "the ELPV images come from the elpv-dataset package: "
            "pip install 'defect-inspector[train]'"
        ) from None
    return Path(elpv_dataset.__file__).parent / "data"


def import_elpv(dest: Path, limit: int = 0, seed: int = SEED) -> dict:
    """Write the dataset into ``dest``; ``limit`` keeps a stratified subset (for tests)."""
    src = package_dir()
    rows = []
    for line in (src / "labels.csv").read_text().splitlines():
        parts = line.split()
        if len(parts) == 3:
            rows.append((parts[0], float(parts[1]), parts[2]))
    if not rows:
        raise TrainingError(f"{src}/labels.csv: no labels found")
    if limit:
        rng = np.random.default_rng(seed)
        defect = [r for r in rows if r[1] >= 0.5]
        good = [r for r in rows if r[1] < 0.5]
        k_def = max(1, round(limit * len(defect) / len(rows)))
        pick_d = rng.choice(len(defect), size=min(k_def, len(defect)), replace=False)
        pick_g = rng.choice(len(good), size=min(limit - len(pick_d), len(good)), replace=False)
        rows = sorted([defect[i] for i in pick_d] + [good[i] for i in pick_g])
    dest = Path(dest)
    counts = {"good": 0, "defect": 0}
    dest.mkdir(parents=True, exist_ok=True)
    with open(dest / "manifest.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "probability", "cell_type"])
        for rel, prob, kind in rows:
            label = "defect" if prob >= 0.5 else "good"
            target = dest / label / Path(rel).name
            target.parent.mkdir(exist_ok=True)
            shutil.copyfile(src / rel, target)
            writer.writerow([f"{label}/{target.name}", label, f"{prob:.4f}", kind])
            counts[label] += 1
    log.info("ELPV: %s", counts)
    return {"dest": str(dest), "images": len(rows), "counts": counts}
