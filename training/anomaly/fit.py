"""Anomaly models from good parts only (PatchCore-style), computed wholly in one Keras graph.

``inspector train --method anomaly --data DATA --out RUN`` fits a model of "normal":

1. mid-level features of the ImageNet EfficientNet-Lite backbone (``training.common.backbone``):
   by default the stride-8 stage output (``block4_add``, 40 channels) and the stride-16
   112-channel stage (``block10_add``), each averaged over its 3x3 neighbourhood (locally
   aware patch features), the coarser one repeated onto the stride-8 grid, concatenated;
2. a memory bank of those patch features from the ``good`` training images only, reduced
   by greedy k-center coreset sampling (run in a random projection, as PatchCore does);
   a bank over ``max_bank_mb`` is refused, never silently shrunk. The images stream
   through in batches of ``batch_size``: a uniform sample of at most ``max_patches``
   patches is kept (``bank.PatchReservoir``), never every image's features, so the fit's
   memory does not grow with the number of images (20,000 good images fit as 2,000 do);
   the fit logs its peak resident memory and records it in ``run.json``
   (``training.memory``);
   or, with ``anomaly.statistics: position`` (parts that sit in the same place), a
   Gaussian per image region and cluster of good images instead (``training.anomaly.gaussian``,
   PaDiM-style: two streaming passes, no bank);
3. a graph that scores a part: the distance of every patch to its nearest bank patch
   (matrix products and a min, no custom operators), the image score ``s`` = the largest
   of them, normalised to ``n = s / (s + t)`` so that the threshold ``t`` maps to 0.5.
   Outputs: ``scores`` = ``[1 - n, n]`` over the classes ``(good, anomaly)``, so the
   station decides it as any two-class model, and ``anomaly_map`` = the normalised patch
   distances on the feature grid (the heat map).

The threshold ``t``: with only good validation images, the lowest one whose exact
(Clopper-Pearson) upper bound on the false-reject rate holds ``anomaly.false_reject_rate``
at ``threshold.confidence`` (1 % at 95 % needs 299 good validation images; fewer: the
lowest that rejects none of them, and a warning in the log, ``run.json`` and the manifest
that says how many more it needs; ``anomaly.folds`` adds every good training image, scored
out-of-fold, to them: ``training.anomaly.folds``); with labelled defects in validation, the classifier's
policy (``threshold.policy``). ``bank.choose_threshold`` chooses it. The run folder holds ``config.yaml`` (the training config),
``anomaly.yaml`` (this method's settings), ``bank.npy``, ``split.json`` and ``run.json``
with ``method: anomaly``; ``training.anomaly.export`` turns it into one ONNX file.

Example::

    run = fit(TrainConfig(data=Path("parts")), AnomalyConfig(), Path("runs/a1"))
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from .. import TrainingError
from ..common.config import TrainConfig, as_dict
from ..common.memory import peak_rss_bytes, rss_bytes
from ..common.runs import setup_of, spec_of, versions, write_json
from ..data import datasets, runsplit
from . import folds as oof
from .bank import PatchReservoir, bank_plan, choose_threshold, greedy_coreset
from .config import CLASSES, METHOD, AnomalyConfig
from .gaussian import RegionAccumulator, cluster, mirror_views, position_plan, regions_of
from .graph import embedder, features, reference_scores
from .patchscale import fit_scales

log = logging.getLogger(__name__)


@dataclass
class Listed:
    """A split's readable images by name and label (``split.json``), without their pixels."""

    files: list[str] = field(default_factory=list)
    y: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def extend(self, split: datasets.Split) -> None:
        self.files += split.files
        self.y = np.r_[self.y, split.y]


@dataclass
class Data:
    classes: list[str]
    good: str
    samples: dict  # split name -> [Sample]
    setup: object
    spec: object
    report: dict = field(default_factory=dict)


def load_data(cfg: TrainConfig) -> Data:
    """The dataset's splits (files, not yet pixels) and the station's preprocessing;
    ``good`` may be the only class (the point of this method)."""
    if cfg.data is None:
        raise TrainingError("no dataset: give --data DIR (or 'data:' in the config)")
    ds = datasets.scan(cfg.data)
    good = [c for c in ds.classes if c.lower() in datasets.GOOD_NAMES]
    if cfg.defect_classes:
        good = [c for c in ds.classes if c not in cfg.defect_classes]
    if len(good) != 1:
        raise TrainingError(
            f"classes {ds.classes}: an anomaly model needs exactly one good class (named "
            f"good, ok, pass or normal; or set defect_classes)"
        )
    setup = setup_of(cfg)
    spec = spec_of(cfg, setup)
    parts = datasets.split_samples(ds.samples, cfg.split.val, cfg.split.test, cfg.split.seed)
    report = {
        "source": str(cfg.data),
        "classes": ds.classes,
        "good_class": good[0],
        "unreadable": [],
        "split_seed": cfg.split.seed,
        "split_given": any(s.split for s in ds.samples),
    }
    return Data(ds.classes, good[0], parts, setup, spec, report)


def fit(cfg: TrainConfig, acfg: AnomalyConfig, out: Path) -> dict:
    """Fit the bank, choose the threshold, write the run folder; returns run.json."""
    from ..common.pretrained import VARIANTS

    out = Path(out)
    if (out / "run.json").exists():
        raise TrainingError(f"{out}: holds a finished run; choose another --out")
    if cfg.model.type not in VARIANTS:
        raise TrainingError(
            f"model.type: an anomaly model builds on a pretrained backbone "
            f"({', '.join(VARIANTS)}), not {cfg.model.type}"
        )
    started = time.monotonic()
    rss_start = rss_bytes()
    data = load_data(cfg)
    gi = data.classes.index(data.good)
    good_train = [s for s in data.samples["train"] if s.label == data.good]
    if len(good_train) < 2:
        raise TrainingError(f"the training split has {len(good_train)} good image(s); need more")
    embed = embedder(cfg.model.type, cfg.model.image_size, cfg.model.color, acfg)
    _, h, w, dim = embed.output.shape
    position = acfg.statistics == "position"
    if position:  # refuse before the work, not after
        position_plan((h, w), dim, acfg)
    else:
        bank_plan(len(good_train) * h * w, dim, acfg)
    folds = oof.assign(len(good_train), acfg)
    listed = {name: Listed() for name in datasets.SPLITS}
    unreadable: list[tuple[str, str]] = []

    def stream(name: str):
        for split, bad in datasets.batches(
            data.samples[name], data.spec, data.classes, acfg.batch_size
        ):
            listed[name].extend(split)
            unreadable.extend(bad)
            yield split

    t0 = time.monotonic()
    stats = datasets.ImageStats()
    fold_models, fold_seconds = None, 0.0  # fold_seconds: building the fold banks
    if position:
        normal, seen, fold_models = _fit_position(
            embed, data, good_train, stream, stats, acfg, folds
        )
        if acfg.patch_scale == "position":
            normal, fold_models = fit_scales(
                embed, data, good_train, acfg, normal, folds, fold_models
            )
        n_good = len(stats.rows)
        feature_seconds, coreset_seconds, candidates_kept = time.monotonic() - t0, 0.0, 0
        log.info(
            "region Gaussians: %d component(s) (good images %s) x %d regions, %d features, "
            "%.1f MB; %.1f s",
            len(normal.mean),
            normal.images.tolist(),
            normal.mean.shape[1],
            dim,
            normal.nbytes / 2**20,
            feature_seconds,
        )
        sample_bytes = 0
    else:
        reservoir = PatchReservoir(
            acfg.max_patches, dim, acfg.seed, expected=len(good_train) * h * w
        )
        for split in stream("train"):
            x = split.x[split.y == gi]
            if len(x):
                reservoir.add(features(embed, x, acfg.batch_size))
                stats.add(x)
        n_good = len(stats.rows)
        if n_good < 2:
            raise TrainingError(f"the training split has {n_good} good image(s); need more")
        k, _ = bank_plan(reservoir.seen, dim, acfg)
        candidates = reservoir.sample()
        k = min(k, len(candidates))
        feature_seconds = time.monotonic() - t0
        t1 = time.monotonic()
        normal = np.ascontiguousarray(
            candidates[greedy_coreset(candidates, k, acfg.projection, acfg.seed)]
        )
        coreset_seconds = time.monotonic() - t1
        if folds is not None:
            t2 = time.monotonic()
            fold_models = oof.fold_banks(
                candidates, reservoir.positions(), h * w, folds, len(normal), acfg
            )
            fold_seconds = time.monotonic() - t2
        del candidates
        seen, candidates_kept, sample_bytes = reservoir.seen, len(reservoir), reservoir.nbytes
        log.info(
            "bank: %d of %d patches (%d x %d grid, %d features), %.1f MB; features %.1f s, "
            "coreset %.1f s",
            len(normal),
            reservoir.seen,
            h,
            w,
            dim,
            normal.nbytes / 2**20,
            feature_seconds,
            coreset_seconds,
        )
    scores, truth = [], []
    for split in stream("val"):
        if len(split.y):
            scores.append(
                reference_scores(features(embed, split.x, acfg.batch_size), normal, acfg.top_k)
            )
            truth.append(split.y == gi)
    for _ in stream("test"):  # read once, as the classifier's split does: counts, unreadable
        pass
    s = np.concatenate(scores) if scores else np.zeros(0)
    is_good = np.concatenate(truth) if truth else np.zeros(0, bool)
    held_out, out_of_fold_seconds = {"validation_good": int(is_good.sum())}, 0.0
    where, oof_scores = {}, None
    good_scores = s[is_good]
    if fold_models is not None:
        o = oof.out_of_fold_scores(embed, data, good_train, folds, fold_models, acfg)
        good_scores = np.r_[good_scores, o["scores"]]
        out_of_fold_seconds = fold_seconds + o["seconds"]
        held_out.update(out_of_fold_good=len(o["scores"]), folds=acfg.folds)
        del fold_models
        where = dict(on=oof.ON, images=oof.IMAGES)
        oof_scores = o["scores"]
    threshold = choose_threshold(good_scores, s[~is_good], cfg, acfg, **where)
    threshold["held_out_good"] = held_out
    for path, why in unreadable:
        log.warning("skipped unreadable image %s: %s", path, why)
    data.report["unreadable"] = [{"file": f, "why": why} for f, why in unreadable]
    out.mkdir(parents=True, exist_ok=True)
    if oof_scores is not None:
        oof.save(out, oof_scores)
    if position:
        normal.save(out)
    else:
        np.save(out / "bank.npy", normal)
    (out / "config.yaml").write_text(yaml.safe_dump(as_dict(cfg), sort_keys=False))
    (out / "anomaly.yaml").write_text(yaml.safe_dump(as_dict(acfg), sort_keys=False))
    prepared = datasets.Prepared(data.classes, [], data.spec, listed, data.report)
    write_json(out / "split.json", runsplit.split_file(prepared, Path(cfg.data)))
    memory = {
        "peak_rss_bytes": peak_rss_bytes(),
        "rss_at_start_bytes": rss_start,
        "patch_sample_bytes": sample_bytes,
        "measured": "the process's peak resident set size at the end of the fit "
        "(getrusage ru_maxrss): it includes whatever the process held before the fit",
    }
    log.info(
        "memory: peak RSS %.0f MB (%.0f MB at the start; patch sample %.0f MB) for %d good images",
        memory["peak_rss_bytes"] / 2**20,
        rss_start / 2**20,
        sample_bytes / 2**20,
        n_good,
    )
    spec = data.spec
    run = {
        "name": cfg.name or out.name,
        "method": METHOD,
        "classes": CLASSES,
        "defect_classes": ["anomaly"],
        "data_classes": data.classes,
        "good_class": data.good,
        "preprocess": {
            "size": list(spec.size),
            "color": spec.color,
            "interpolation": spec.interpolation,
            **data.setup.to_dict(),
        },
        "threshold": threshold,
        "anomaly": {
            "backbone": cfg.model.type,
            "weights": "imagenet",
            "layers": list(acfg.layers),
            "neighbourhood": acfg.neighbourhood,
            "standardise": acfg.standardise,
            "top_k": acfg.top_k,
            "grid": [int(h), int(w)],
            "feature_dims": int(dim),
            "training_patches": int(seen),
            **_normal_summary(normal, acfg, seen, candidates_kept),
            "normalisation": {"formula": "n = s / (s + t)", "t": threshold["raw"]},
        },
        "image_stats": stats.result(),
        "dataset": {
            "source": str(cfg.data),
            "counts": {
                n: {c: int(np.sum(sp.y == i)) for i, c in enumerate(data.classes)}
                for n, sp in listed.items()
            },
            "unreadable": len(data.report["unreadable"]),
            "fingerprint": "",
        },
        "training": {
            "model": f"anomaly ({cfg.model.type} patch features + "
            + ("region Gaussians)" if position else "memory bank)"),
            "method": METHOD,
            "parameters": 0,
            "good_images": int(n_good),
            "feature_seconds": round(feature_seconds, 1),
            "coreset_seconds": round(coreset_seconds, 1),
            "out_of_fold_seconds": round(out_of_fold_seconds, 1),
            "fit_seconds": round(time.monotonic() - t0, 1),
            "total_seconds": round(time.monotonic() - started, 1),
            "memory": memory,
            "config": {**as_dict(cfg), "anomaly": as_dict(acfg)},
            "versions": versions(),
        },
    }
    write_json(out / "run.json", run)
    return run


def _fit_position(embed, data, good_train, stream, stats, acfg: AnomalyConfig, folds=None):
    """Two passes over the good training images: the first (which also lists the split and
    its image statistics) clusters their mean features, the second sums each cluster's
    region statistics (per fold, with ``folds``). Returns (Gaussians, patches seen, each
    fold's Gaussians or None)."""
    gi = data.classes.index(data.good)
    means = []
    for split in stream("train"):
        x = split.x[split.y == gi]
        if len(x):
            means.append(features(embed, x, acfg.batch_size).mean((1, 2)))
            stats.add(x)
    if len(stats.rows) < 2:
        raise TrainingError(f"the training split has {len(stats.rows)} good image(s); need more")
    _, h, w, dim = embed.output.shape
    centroids = cluster(np.concatenate(means), acfg.components, acfg.seed)
    parts = [
        RegionAccumulator(centroids, (h, w), acfg.region, dim)
        for _ in range(1 if folds is None else acfg.folds)
    ]
    at = 0
    for split, _ in datasets.batches(good_train, data.spec, data.classes, acfg.batch_size):
        if not len(split.x):
            continue
        which = np.zeros(len(split.x), int) if folds is None else folds[at : at + len(split.x)]
        at += len(split.x)
        for v, x in enumerate(mirror_views(split.x, acfg.flips)):
            f = features(embed, x, acfg.batch_size)
            for k in np.unique(which):
                parts[k].add(f[which == k], images=v == 0)
    total = RegionAccumulator.merged(parts) if len(parts) > 1 else parts[0]
    fold_models = None if folds is None else oof.fold_gaussians(parts, acfg.shrinkage)
    return total.gaussians(acfg.shrinkage), int(len(stats.rows) * h * w), fold_models


def _normal_summary(normal, acfg: AnomalyConfig, seen: int, candidates: int) -> dict:
    """run.json's account of the model of normal (``bank_size``/``bank_bytes``: what the
    graph carries, patches or Gaussians)."""
    if acfg.statistics == "position":
        k, p = normal.mean.shape[:2]
        return {
            "statistics": "position",
            "components": int(k),
            "component_images": normal.images.tolist(),
            "region": acfg.region,
            "regions": list(regions_of(normal.grid, normal.region)),
            "shrinkage": acfg.shrinkage,
            "flips": acfg.flips,
            "patch_scale": acfg.patch_scale,
            "bank_size": int(k * p),
            "bank_bytes": normal.nbytes,
            "score": "image: max over patches of the Mahalanobis distance to the nearest "
            "Gaussian of the patch's region"
            + (
                ", each grid position's distances brought to the grid's mean and spread"
                if acfg.patch_scale == "position"
                else ""
            ),
        }
    return {
        "statistics": "bank",
        "bank_size": int(len(normal)),
        "bank_bytes": int(normal.nbytes),
        "coreset_candidates": int(candidates),
        "coreset_fraction": round(len(normal) / seen, 6),
        "coreset": f"greedy k-center in a {acfg.projection}-d random projection",
        "score": "image: max over patches of the distance to the nearest bank patch",
    }
