"""``inspector evaluate MODEL --data DATA`` for an anomaly model: image AUROC, the operating
point, pixel AUROC where masks exist, and a gallery with heat maps.

The ONNX file runs through the station's own loading path (its session fetches the
``scores`` and the ``anomaly_map`` outputs the manifest names); images go through the one
preprocessing function with the model's frame setup. Every class but the good one counts
as defective. Masks, when given, are ``DATA/masks/<class>/<same name>.png`` (non-zero =
defect); the pixel AUROC compares the heat map, upsampled to the model input, with the
mask resized to it. Writes ``metrics.json``, ``predictions.csv`` and ``gallery/`` (the
worst-scored good parts and the best-hidden defective ones, each as a heat-map overlay)
with ``gallery/index.html``.
"""

from __future__ import annotations

import csv
import html
import json
import logging
from pathlib import Path

import cv2
import numpy as np

from inspector.station.heatmap import overlay, upsample

from .. import TrainingError
from ..common import groups
from ..common.metrics import auroc, binary_at
from ..common.thresholds import band_effect, band_margin, confidence_at
from ..data import datasets, runsplit
from .config import METHOD

log = logging.getLogger(__name__)


class AnomalyRunner:
    """Scores and heat maps of an exported anomaly model, on the station's session."""

    def __init__(self, model: Path):
        from inspector.errors import ModelError
        from inspector.station.classifier import Classifier
        from inspector.station.config import ModelSection

        model = Path(model)
        if model.is_dir():
            model = model / "model.onnx"
            if not model.is_file():
                raise TrainingError(f"{model}: export the run first (inspector export RUN)")
        try:
            self.clf = Classifier(ModelSection(path=model, warmup_runs=0))
        except ModelError as exc:
            raise TrainingError(*exc.problems) from None
        m = self.clf.manifest
        if m.data.get("kind") != METHOD:
            raise TrainingError(f"{model}: not an anomaly model (manifest kind)")
        self.manifest = m
        self.map_name = m.data["anomaly"]["map_output"]
        self.spec = self.clf.spec
        self.name = m.model_id

    def __call__(self, x: np.ndarray, batch: int = 8) -> tuple[np.ndarray, np.ndarray]:
        """(n per image, maps (N, h, w))."""
        ns, maps = [], []
        feeds_name = self.manifest.input_name
        for i in range(0, len(x), batch):
            s, a = self.clf.session.run(
                [self.clf.output_name, self.map_name],
                {feeds_name: np.ascontiguousarray(x[i : i + batch])},
            )
            ns.append(np.asarray(s, np.float64)[:, 1])
            maps.append(np.asarray(a, np.float32))
        return np.concatenate(ns), np.concatenate(maps)


def load_images(data: Path, spec, split: str | None = None, run: Path | None = None):
    """(split, truth, good class, masks or None) of a labelled folder, through ``spec``."""
    if split and run is not None and (Path(run) / "split.json").is_file():
        samples = runsplit.samples_of_run(run, split, data)
    else:
        samples = datasets.scan(data).samples
        if split:
            samples = [s for s in samples if s.split == split]
    samples = [s for s in samples if "masks" not in Path(s.path).parts[-3:-1]]
    classes = sorted({s.label for s in samples})
    good = [c for c in classes if c.lower() in datasets.GOOD_NAMES]
    if len(good) != 1:
        raise TrainingError(f"{data}: classes {classes}; name the good class 'good'")
    loaded, bad = datasets.load_split(samples, spec, classes)
    for f, why in bad:
        log.warning("skipped unreadable image %s: %s", f, why)
    if not len(loaded.y):
        raise TrainingError(f"{data}: no readable images to evaluate")
    truth = loaded.y != classes.index(good[0])
    masks = _masks(Path(data), loaded, classes, spec.shape[:2])
    return loaded, truth, masks


def _masks(data: Path, loaded, classes, hw) -> list[np.ndarray | None] | None:
    root = data / "masks"
    if not root.is_dir():
        return None
    out = []
    for f, y in zip(loaded.files, loaded.y, strict=True):
        p = root / classes[y] / (Path(f).stem + ".png")
        m = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) if p.is_file() else None
        out.append(None if m is None else cv2.resize(m, (hw[1], hw[0])) > 0)
    return out


def pixel_auroc(maps: np.ndarray, masks, truth: np.ndarray, hw) -> float | None:
    """AUROC over the pixels of every image that has a mask (good images: all normal)."""
    ys, ss = [], []
    for i, a in enumerate(maps):
        m = masks[i] if masks is not None else None
        if m is None and truth[i]:
            continue  # a defective image without a mask says nothing about where
        up = upsample(a, (hw[1], hw[0]))
        ys.append(np.zeros(up.size, bool) if m is None else m.ravel())
        ss.append(up.ravel())
    if not ys:
        return None
    y, s = np.concatenate(ys), np.concatenate(ss)
    return auroc(y, s) if y.any() and not y.all() else None


def evaluate_anomaly(
    model: Path,
    data: Path,
    out: Path,
    split: str | None = None,
    run: Path | None = None,
    threshold: float | None = None,
    gallery: int = 8,
    by: list[str] | None = None,
) -> dict:
    runner = AnomalyRunner(model)
    if run is None and Path(model).is_dir():
        run = Path(model)
    images, truth, masks = load_images(Path(data), runner.spec, split, run)
    n, maps = runner(images.x)
    t = 0.5 if threshold is None else float(threshold)
    band = band_margin(runner.manifest.data["thresholds"].get("anomaly"))
    hw = runner.spec.shape[:2]
    metrics = {
        "model": runner.name,
        "kind": "anomaly",
        "data": str(data),
        "split": split or "all",
        "images": int(len(n)),
        "good": int((~truth).sum()),
        "defective": int(truth.sum()),
        "image_auroc": auroc(truth, n) if truth.any() and not truth.all() else None,
        "pixel_auroc": pixel_auroc(maps, masks, truth, hw) if masks is not None else None,
        "operating_point": binary_at(truth, n, t),
        # its rates with counts and exact 95 % bounds on these images, and what the model's
        # uncertain band (decision.uncertainty_margin: auto) does here
        "confidence": confidence_at(truth, n, t, 0.95, on=split or "all"),
        "uncertain_band": band_effect(truth, n, t, band) if band else None,
        "by_column": groups.by_columns(truth, n, images.meta, t, by, data),
        "threshold": t,
        "score": "n = s / (s + t_raw), fail at n >= 0.5 (see the manifest's anomaly section)",
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "predictions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "label", "anomaly_score", "result"])
        for file, y, s in zip(images.files, truth, n, strict=True):
            w.writerow([file, "defective" if y else "good", f"{s:.6f}", _result(s, t)])
    metrics["gallery"] = _gallery(out / "gallery", images, truth, n, maps, t, gallery)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def _result(s: float, t: float) -> str:
    return "fail" if s >= t else "pass"


def _gallery(folder: Path, images, truth, n, maps, t, k: int) -> dict:
    """The k highest-scored good images and the k lowest-scored defective ones."""
    folder.mkdir(parents=True, exist_ok=True)
    good, bad = np.flatnonzero(~truth), np.flatnonzero(truth)
    picks = {
        "worst_good": good[np.argsort(-n[good])][:k].tolist(),
        "best_hidden_defective": bad[np.argsort(n[bad])][:k].tolist(),
    }
    rows = []
    for kind, idx in picks.items():
        rows.append(f"<h2>{kind.replace('_', ' ')}</h2><div>")
        for r, i in enumerate(idx):
            name = f"{kind}_{r:02d}.png"
            cv2.imwrite(str(folder / name), overlay(images.x[i], maps[i]))
            cap = f"{Path(images.files[i]).name}: {n[i]:.3f} ({_result(n[i], t)})"
            rows.append(
                f'<figure style="display:inline-block"><img src="{name}" width="192">'
                f"<figcaption>{html.escape(cap)}</figcaption></figure>"
            )
        rows.append("</div>")
    page = "<!doctype html><title>anomaly gallery</title>" + "".join(rows)
    (folder / "index.html").write_text(page)
    return {k: [images.files[i] for i in v] for k, v in picks.items()}
