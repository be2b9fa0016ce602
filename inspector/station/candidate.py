"""A candidate model, loaded and checked the way the station would run it: ``load_candidate``
(session, the station's fit and geometry, the live model's input, warm-up, the golden set)
returns a ``LiveModel`` or raises ``Refused`` naming the step and why.

The golden check is ``inspector verify`` inside the station: the same preprocessing (the
station's spec) and the same providers as the line.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path

import cv2

from ..contract.preprocess import FrameError, preprocess
from ..errors import InspectorError
from .check import setup_problems
from .classifier import Classifier, ModelRunError, check_model_fits
from .config import StationConfig
from .decision import Decider
from .sources import IMAGE_SUFFIXES

PACE_S = 0.002  # between the candidate's warm-up and golden runs: the live model comes first


@dataclass(frozen=True, eq=False)
class LiveModel:
    """A loaded, checked, warmed model and its decision rule."""

    classifier: Classifier
    decider: Decider
    path: Path  # the file itself (a link resolved)
    loaded: float  # Unix s

    @property
    def model_id(self) -> str:
        return self.classifier.model_id


class Refused(InspectorError):
    """A candidate that may not go live; ``stage`` is load, fit, warmup or golden."""

    def __init__(self, stage: str, why: str) -> None:
        super().__init__(f"{stage}: {why}")
        self.stage = stage
        self.why = why


def resolve_model_path(cfg: StationConfig, path: str | Path | None) -> Path:
    """A requested model path: relative ones lie beside the station's model (its folder of
    models); None is ``model.path`` itself, its link read again."""
    base = Path(cfg.model.path)
    if path is None or str(path) == "":
        return Path(os.path.realpath(base))
    p = Path(path)
    if not p.is_absolute():
        p = base.parent / p
    return Path(os.path.realpath(p))


def load_candidate(
    cfg: StationConfig,
    path: Path,
    live_spec,
    workers: int,
    golden: Path | None = None,
    pace_s: float = PACE_S,
    intra_op_threads: int | None = None,
) -> LiveModel:
    """Load ``path`` as the station would run it, or raise ``Refused`` saying why.

    The candidate must take the very input the station prepares for the live model
    (``live_spec``: size, colour, interpolation): parts already preprocessed and queued are
    decided by whichever model is live when their batch forms."""
    model_cfg = dataclasses.replace(cfg.model, path=path, workers=workers)
    if intra_op_threads is not None:
        model_cfg = dataclasses.replace(model_cfg, intra_op_threads=intra_op_threads)
    try:
        clf = Classifier(model_cfg, roi=cfg.preprocess.roi, remap=cfg.preprocess.remap())
    except InspectorError as exc:
        raise Refused("load", "; ".join(exc.problems)) from None
    problems = check_model_fits(cfg, clf)
    if not problems:
        problems = setup_problems(cfg, clf.manifest, [])
    have, want = clf.spec, live_spec
    if (have.shape, have.color, have.interpolation) != (want.shape, want.color, want.interpolation):
        problems.append(
            f"the model takes {_describe(have)} but the station prepares {_describe(want)} "
            "for the running model; a model with other preprocessing needs a restart"
        )
    if problems:
        raise Refused("fit", "; ".join(problems))
    try:
        for _ in range(max(cfg.model.warmup_runs, 1)):
            clf.warmup(1)
            time.sleep(pace_s)
    except ModelRunError as exc:
        raise Refused("warmup", str(exc)) from None
    decider = Decider(clf.manifest, cfg.decision.thresholds, cfg.decision.uncertainty_margin)
    if golden is not None:
        spec = live_spec
        bad = golden_disagreements(clf, decider, spec, golden, pace_s)
        if bad:
            raise Refused("golden", f"{len(bad)} golden part(s) disagree: {'; '.join(bad[:5])}")
    return LiveModel(clf, decider, path, time.time())


def _describe(spec) -> str:
    h, w, c = spec.shape
    return f"{w}x{h} {spec.color} ({c} channel(s), {spec.interpolation})"


def golden_disagreements(
    clf: Classifier, decider: Decider, spec, folder: Path, pace_s: float = 0.0
) -> list[str]:
    """``inspector verify`` inside the station: each image in ``folder/pass`` and
    ``folder/fail`` through the station's preprocessing and this model; what disagrees."""
    folder = Path(folder)
    items = [
        (p, expected)
        for expected in ("pass", "fail")
        if (folder / expected).is_dir()
        for p in sorted((folder / expected).iterdir())
        if p.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not items:
        return [f"{folder}: no golden images (expected pass/ and fail/ folders of images)"]
    bad = []
    for path, expected in items:
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        try:
            if image is None:
                raise FrameError("unreadable image")
            x = preprocess(image, spec)
            d = decider.decide(clf.run(x[None])[0])
        except (FrameError, ModelRunError) as exc:
            bad.append(f"{expected}/{path.name}: {exc}")
            continue
        if d.result != expected:
            bad.append(f"{expected}/{path.name} got {d.result} ({d.reason.value})")
        time.sleep(pace_s)
    return bad
