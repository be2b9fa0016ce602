"""Out-of-fold scores of the good training images (``anomaly.folds``): more held-out good
parts behind the false-reject bound than the validation split has.

A good-only threshold promises its false-reject rate from good images the model never saw:
1 % at 95 % confidence needs 299 of them, and a new line rarely sets that many aside for
validation. With ``anomaly.folds: K`` the good training images are dealt into K seeded
folds; for each fold, a model of normal fitted on the other K-1 folds scores that fold's
images. Every good training image then has a held-out score, from a model fitted on
(K-1)/K of the data, and those scores join the validation split's for the threshold and its
bound. A model fitted on fewer images scores new parts a little higher, so the bound leans
to the safe side (a few more false rejects than the final model would make, never fewer
promised than it keeps).

What each fold costs:

- ``statistics: bank``: the patch sample already records which image each patch came from;
  each fold's bank is a coreset of the sample's patches from the other folds (K more
  coresets);
- ``statistics: position``: the region sums are additive, so each fold keeps its own and a
  fold's model is the total less its sums (no refit; K times the statistics' memory while
  fitting). The k-means clusters are found once, on every good training image.

Then one more pass of the good training images scores each with its fold's model.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np

from .. import TrainingError
from ..data import datasets
from .bank import greedy_coreset
from .config import AnomalyConfig
from .gaussian import RegionAccumulator
from .graph import features, reference_scores

log = logging.getLogger(__name__)

ON = "validation and out-of-fold training images"  # the threshold's "on" with folds
IMAGES = "held-out images (validation and out-of-fold)"  # as its warning names them


FILE = "out_of_fold.npy"  # in the run folder: the raw scores, for export's confidence


def save(run: Path, scores: np.ndarray) -> None:
    np.save(Path(run) / FILE, np.asarray(scores, np.float64))


def load(run: Path) -> np.ndarray | None:
    path = Path(run) / FILE
    return np.load(path) if path.is_file() else None


def assign(n_images: int, acfg: AnomalyConfig) -> np.ndarray | None:
    """The fold of each good training image (in stream order), seeded; None without folds."""
    if not acfg.folds:
        return None
    if n_images < 2 * acfg.folds:
        raise TrainingError(
            f"anomaly.folds: {acfg.folds} folds need at least {2 * acfg.folds} good training "
            f"images, and there are {n_images}; lower anomaly.folds (or 0: validation only)"
        )
    rng = np.random.default_rng(acfg.seed + 1)
    return rng.permutation(n_images) % acfg.folds


def fold_banks(
    candidates: np.ndarray,
    positions: np.ndarray,
    patches_per_image: int,
    folds: np.ndarray,
    bank_size: int,
    acfg: AnomalyConfig,
) -> list[np.ndarray]:
    """Each fold's bank: a coreset of the sampled patches of the other folds' images, of the
    full bank's fraction."""
    of_patch = folds[positions // patches_per_image]
    banks = []
    for k in range(acfg.folds):
        rest = candidates[of_patch != k]
        size = max(1, min(len(rest), math.ceil(bank_size * len(rest) / len(candidates))))
        banks.append(np.ascontiguousarray(rest[greedy_coreset(rest, size, acfg.projection, k)]))
    return banks


def fold_gaussians(parts: list[RegionAccumulator], shrinkage: float):
    """Each fold's region Gaussians: the sums of every other fold."""
    models = []
    for k in range(len(parts)):
        try:
            models.append(RegionAccumulator.merged(parts[:k] + parts[k + 1 :]).gaussians(shrinkage))
        except TrainingError as e:
            raise TrainingError(
                f"anomaly.folds: without fold {k + 1} of {len(parts)}: {e} (or lower anomaly.folds)"
            ) from None
    return models


def out_of_fold_scores(embed, data, good_train, folds: np.ndarray, models, acfg) -> dict:
    """One pass of the good training images, each scored (raw distance) by the model of its
    fold's complement; returns the scores and what they cost."""
    t0 = time.monotonic()
    out, at = [], 0
    for split, _ in datasets.batches(good_train, data.spec, data.classes, acfg.batch_size):
        if not len(split.x):
            continue
        f = features(embed, split.x, acfg.batch_size)
        which = folds[at : at + len(f)]
        at += len(f)
        s = np.empty(len(f))
        for k in np.unique(which):
            s[which == k] = reference_scores(f[which == k], models[k], acfg.top_k)
        out.append(s)
    scores = np.concatenate(out) if out else np.zeros(0)
    seconds = time.monotonic() - t0
    log.info(
        "out-of-fold: %d good training images scored by %d fold models (%.1f s)",
        len(scores),
        len(models),
        seconds,
    )
    return {"scores": scores, "seconds": seconds}
