"""The one acceptance rule (DESIGN 11): may this model unit decide parts on this station?

    problems = acceptance(cfg, unit, golden=folder, live_spec=spec)

``inspector run`` (refuses to start, exit 2), ``inspector check``, ``inspector verify``,
every swap, shadow and promote on a running station, and the workbench all ask this
function, so they agree and refuse with the same words. It checks, in order:

- fit: the station config's size, colour and threshold overrides against the classifier;
  the anomaly model is one and takes the classifier's very input and batch sizes;
- geometry: the station's ROI/corners/calibration and bit depth against the ones each model
  was trained with (the manifest's ``preprocess.geometry``);
- input: a candidate takes the input the station prepares for the running unit (parts
  already queued are decided by whichever unit is live when their batch forms);
- golden: every golden part through the station's preprocessing and the line's own decision
  rule (both models, combined), when a golden folder is given.

Problems are sentences; an empty list means the unit may go live.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2

from ..contract.geometry import FrameSetup
from ..contract.manifest import Manifest
from ..contract.preprocess import FrameError, PreprocessSpec, preprocess
from ..errors import InspectorError
from .classifier import Classifier, ModelRunError
from .config import StationConfig
from .decision import ANOMALY_MODEL
from .sources import IMAGE_SUFFIXES
from .unit import ModelUnit


def acceptance(
    cfg: StationConfig,
    unit: ModelUnit,
    golden: Path | None = None,
    live_spec: PreprocessSpec | None = None,
    pace_s: float = 0.0,
) -> list[str]:
    """Why ``unit`` may not decide parts on the station ``cfg`` (empty: it may)."""
    problems = fit_problems(cfg, unit.classifier)
    problems += setup_problems(cfg, unit.classifier.manifest)
    if unit.anomaly is not None:
        problems += anomaly_problems(cfg, unit.anomaly, unit.classifier, unit.anomaly_path)
        problems += setup_problems(cfg, unit.anomaly.manifest)
    if live_spec is not None:
        have = station_spec(cfg, unit)
        if _input(have) != _input(live_spec):
            problems.append(
                f"the model takes {_describe(have)} but the station prepares "
                f"{_describe(live_spec)} for the running model; a model with other "
                "preprocessing needs a restart"
            )
    if golden is not None and not problems:
        results = golden_results(unit, station_spec(cfg, unit), golden, pace_s)
        bad = [r.line() for r in results if not r.agrees]
        if bad:
            problems.append(f"{len(bad)} golden part(s) disagree: {'; '.join(bad[:5])}")
    return problems


def station_spec(cfg: StationConfig, unit: ModelUnit) -> PreprocessSpec:
    """The spec the station's frames go through for ``unit``: the model's input, the
    station's geometry, the camera's bit depth."""
    import dataclasses

    spec = unit.spec
    if cfg.source.bit_depth is not None:
        spec = dataclasses.replace(spec, bit_depth=cfg.source.bit_depth)
    return spec


def fit_problems(cfg: StationConfig, classifier: Classifier) -> list[str]:
    """The station config's preprocessing and threshold overrides against the classifier."""
    problems = []
    spec = classifier.spec
    if cfg.preprocess.size is not None and tuple(cfg.preprocess.size) != spec.size:
        problems.append(
            f"preprocess.size: {cfg.preprocess.size} does not match the model's input "
            f"size {list(spec.size)} (width, height)"
        )
    if cfg.preprocess.color is not None and cfg.preprocess.color != spec.color:
        problems.append(
            f"preprocess.color: {cfg.preprocess.color!r} does not match the model's "
            f"colour order {spec.color!r}"
        )
    defects = classifier.manifest.defect_classes
    for name in cfg.decision.thresholds:
        if name not in defects:
            problems.append(
                f"decision.thresholds.{name}: not a defect class of the model "
                f"(defect classes: {', '.join(defects)})"
            )
    return problems


def anomaly_problems(
    cfg: StationConfig, anomaly: Classifier, classifier: Classifier, path: Path | None = None
) -> list[str]:
    """The anomaly model against the unit's classifier: it takes the very input the station
    prepares for the classifier (one preprocessed batch feeds both), in the same batches."""
    name = Path(path or anomaly.manifest.data.get("model_id", "?")).name
    where = f"anomaly_model.path: {name}"
    problems = []
    have, want = anomaly.spec, classifier.spec
    for what, a, b in (
        ("input [height, width, channels]", list(have.shape), list(want.shape)),
        ("colour order", have.color, want.color),
        ("interpolation", have.interpolation, want.interpolation),
    ):
        if a != b:
            problems.append(
                f"{where}: {what} {a!r} does not match the classifier's {b!r} "
                f"({classifier.model_id}); both models must take the same preprocessed input"
            )
    fixed = anomaly._fixed_batch
    if fixed is not None and fixed != classifier._fixed_batch:
        problems.append(
            f"{where}: fixed batch size {fixed}; the station runs batches of 1 to "
            f"{classifier.max_batch} (export it with a dynamic batch)"
        )
    if ANOMALY_MODEL in classifier.classes:
        problems.append(
            f"model.path: the classifier has a class {ANOMALY_MODEL!r}, which would clash with "
            "the anomaly model's score in the verdict"
        )
    return problems


def setup_problems(
    cfg: StationConfig, manifest: Manifest, notes: list[str] | None = None
) -> list[str]:
    """The station's geometry and bit depth against the ones its model was trained with."""
    station = FrameSetup(cfg.preprocess.geometry(), cfg.source.bit_depth)
    model = manifest.frame_setup
    if model is None:
        if notes is not None:
            notes.append(
                f"model {manifest.model_id}: its manifest does not say which geometry it was "
                "trained with (exported before geometry travelled with the data); not compared"
            )
        return []
    if model == station:
        return []
    return [
        f"preprocess: this station prepares frames with {station.describe()}, but model "
        f"{manifest.model_id} was trained on frames prepared with {model.describe()}; "
        "retrain on this station's recordings, or make preprocess and source.bit_depth match"
    ]


def _input(spec: PreprocessSpec) -> tuple:
    return spec.shape, spec.color, spec.interpolation


def _describe(spec: PreprocessSpec) -> str:
    h, w, c = spec.shape
    return f"{w}x{h} {spec.color} ({c} channel(s), {spec.interpolation})"


# -- golden parts ---------------------------------------------------------------------------------
@dataclass
class GoldenResult:
    image: str  # "pass/name.png"
    expected: str
    got: str
    reason: str
    scores: dict[str, float] = field(default_factory=dict)

    @property
    def agrees(self) -> bool:
        return self.expected == self.got

    def line(self) -> str:
        return f"{self.image} got {self.got} ({self.reason})"


def golden_images(folder: Path) -> list[tuple[Path, str]]:
    """(image, expected) for each image in ``folder/pass`` and ``folder/fail``."""
    folder = Path(folder)
    items = [
        (p, expected)
        for expected in ("pass", "fail")
        if (folder / expected).is_dir()
        for p in sorted((folder / expected).iterdir())
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    ]
    if not items:
        raise InspectorError(
            f"{folder}: no golden images (expected pass/ and fail/ folders of images)"
        )
    return items


def golden_results(
    unit: ModelUnit, spec: PreprocessSpec, folder: Path, pace_s: float = 0.0
) -> list[GoldenResult]:
    """Each golden part through ``spec`` and the unit's combined decision, as on the line."""
    try:
        items = golden_images(folder)
    except InspectorError as exc:
        return [GoldenResult(str(folder), "pass", "fail", exc.problems[0])]
    results = []
    for path, expected in items:
        name = f"{expected}/{path.name}"
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        try:
            if image is None:
                raise FrameError("unreadable image")
            x = preprocess(image, spec)
            outcome = unit.decide_batch(x[None])[0]
        except (FrameError, ModelRunError) as exc:
            results.append(GoldenResult(name, expected, "fail", f"error: {exc}"))
            continue
        d = outcome.decision
        results.append(GoldenResult(name, expected, d.result, d.reason.value, d.scores))
        if pace_s:
            time.sleep(pace_s)
    return results
