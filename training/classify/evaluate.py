"""``inspector evaluate MODEL --data DIR --out REPORT``: the same report for a run folder
(its Keras checkpoint) and for an exported ONNX file.

Writes ``metrics.json`` (accuracy, balanced accuracy, F1, AUROC, confusion matrix,
per-class precision/recall/F1, escape and false-reject rates at the operating point),
``predictions.csv`` (one row per image: score and decision) and ``report.html`` with PNG
plots (see ``report.py``). Images go through the runtime's preprocessing function with
the frame setup (geometry, bit depth) the model was trained with, and recordings whose
sidecars say otherwise are refused (``frames``); ONNX files run through the runtime's own
classifier, so the decisions are the line's.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np

from .. import TrainingError
from ..common import groups
from ..common.metrics import defect_score, is_defect, report
from ..common.thresholds import band_effect, band_margin, confidence_at
from ..data import datasets, frames, runsplit

log = logging.getLogger(__name__)


class _Scorer:
    """Class probabilities for model inputs, with the model's classes and threshold."""

    def __init__(self, model: Path):
        model = Path(model)
        self.kind = "onnx" if model.is_file() else "keras"
        if self.kind == "onnx":
            from inspector.errors import ModelError
            from inspector.station.classifier import Classifier
            from inspector.station.config import ModelSection

            try:
                self.clf = Classifier(ModelSection(path=model, warmup_runs=0))
            except ModelError as exc:
                raise TrainingError(*exc.problems) from None
            m = self.clf.manifest
            self.classes, self.defects = m.classes, m.defect_classes
            self.threshold = min(m.thresholds.values())
            self.band = max(band_margin(v) for v in m.data["thresholds"].values())
            self.spec = self.clf.spec  # with the manifest's geometry and bit depth
            self.setup = m.frame_setup
            self.name = m.model_id
        elif (model / "run.json").is_file():
            from ..common.runs import load_run, spec_of
            from .models import load_best

            cfg, info = load_run(model)
            self.classes, self.defects = info["classes"], info["defect_classes"]
            self.threshold = info["threshold"]["value"]
            self.band = band_margin(info["threshold"])
            self.setup = frames.of_run(info)
            self.spec = spec_of(cfg, self.setup)
            self.model = load_best(model, cfg.model, len(self.classes))
            self.name = f"{info['name']} (Keras checkpoint {model / 'best.keras'})"
        else:
            raise TrainingError(f"{model}: neither an ONNX file nor a finished run folder")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.kind == "keras":
            return self.model.predict(x, batch_size=64, verbose=0).astype(np.float64)
        return self.clf.run_all(x)


def _images(data: Path, scorer: _Scorer, split: str | None, run: Path | None, given=None):
    """The model inputs of the images, prepared as the model's station prepares frames."""
    classes = scorer.classes
    if split and run is not None and (Path(run) / "split.json").is_file():
        samples = runsplit.samples_of_run(run, split, data)
    else:
        ds = datasets.scan(data)
        samples = ds.samples
        if split:
            samples = [s for s in samples if s.split == split]
            if not samples:
                raise TrainingError(
                    f"{data}: no images in split {split!r} (give the run folder with --run, "
                    "or a dataset with that split)"
                )
    unknown = sorted({s.label for s in samples} - set(classes))
    if unknown:
        raise TrainingError(f"{data}: labels {unknown} are not classes of the model {classes}")
    setup = frames.resolve(
        [s.path for s in samples], given=given, model=scorer.setup, model_name=scorer.name
    )
    spec = scorer.spec if scorer.setup is not None else frames.spec_with(scorer.spec, setup)
    loaded, bad = datasets.load_split(samples, spec, classes)
    for f, why in bad:
        log.warning("skipped unreadable image %s: %s", f, why)
    if not len(loaded.y):
        raise TrainingError(f"{data}: no readable images to evaluate")
    return loaded, bad, setup


def evaluate(
    model: Path,
    data: Path,
    out: Path,
    split: str | None = None,
    run: Path | None = None,
    threshold: float | None = None,
    gallery: int = 12,
    geometry: Path | None = None,
    by: list[str] | None = None,
) -> dict:
    """Score the images, write metrics.json, predictions.csv and report.html; return metrics.

    ``geometry``: a station config whose frame setup the images get (for a model that does
    not record its own; otherwise it must agree with the model's)."""
    scorer = _Scorer(model)
    if run is None and scorer.kind == "keras":
        run = Path(model)
    given = frames.station_setup(geometry) if geometry is not None else None
    images, bad, setup = _images(Path(data), scorer, split, run, given)
    probs = scorer(images.x)
    t = scorer.threshold if threshold is None else float(threshold)
    metrics = report(probs, images.y, scorer.classes, scorer.defects, t)
    metrics.update(
        model=scorer.name,
        model_kind=scorer.kind,
        data=str(data),
        split=split or "all",
        frame_setup=setup.to_dict(),
        unreadable=[{"file": f, "why": w} for f, w in bad],
    )
    regions = _regions(scorer, images, setup)
    if regions is not None:
        metrics["regions"] = regions
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    score = defect_score(probs, scorer.classes, scorer.defects)
    truth = is_defect(images.y, scorer.classes, scorer.defects)
    # the operating point's rates with their counts and exact 95 % bounds on these images,
    # and what the model's uncertain band (decision.uncertainty_margin: auto) does here
    metrics["confidence"] = confidence_at(truth, score, t, 0.95, on=split or "all")
    metrics["uncertain_band"] = band_effect(truth, score, t, scorer.band) if scorer.band else None
    # where the model loses: the figures per value of each of the manifest's columns
    metrics["by_column"] = groups.by_columns(truth, score, images.meta, t, by, data)
    with open(out / "predictions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "label", "defect_score", "result", *[f"p_{c}" for c in scorer.classes]])
        for i, file in enumerate(images.files):
            w.writerow(
                [
                    file,
                    scorer.classes[images.y[i]],
                    f"{score[i]:.6f}",
                    "fail" if score[i] >= t else "pass",
                    *[f"{p:.6f}" for p in probs[i]],
                ]
            )
    from ..common.report import write_report

    write_report(out, metrics, truth, score, t, images, scorer.classes, gallery)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def _regions(scorer: _Scorer, images, setup) -> dict | None:
    """The heat maps against the reviewers' boxes (``regions``), for a model with maps."""
    if scorer.kind != "onnx" or scorer.clf.map_output is None:
        return None
    from .regions import region_metrics

    step = scorer.clf.max_batch
    maps = [
        scorer.clf.run_with_maps(np.ascontiguousarray(images.x[i : i + step]))[1]
        for i in range(0, len(images.x), step)
    ]
    return region_metrics(np.concatenate(maps), images.files, setup)
