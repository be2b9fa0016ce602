"""Anomaly models from good parts only (PatchCore-style), computed wholly in one Keras graph.

``inspector train --method anomaly --data DATA --out RUN`` fits a model of "normal":

1. mid-level features of the ImageNet EfficientNet-Lite backbone (``training.common.backbone``):
   by default the stride-8 stage output (``block4_add``, 40 channels) and the stride-16
   112-channel stage (``block10_add``), each averaged over its 3x3 neighbourhood (locally
   aware patch features), the coarser one repeated onto the stride-8 grid, concatenated;
2. a memory bank of those patch features from the ``good`` training images only, reduced
   by greedy k-center coreset sampling (run in a random projection, as PatchCore does);
   a bank over ``max_bank_mb`` is refused, never silently shrunk;
3. a graph that scores a part: the distance of every patch to its nearest bank patch
   (matrix products and a min, no custom operators), the image score ``s`` = the largest
   of them, normalised to ``n = s / (s + t)`` so that the threshold ``t`` maps to 0.5.
   Outputs: ``scores`` = ``[1 - n, n]`` over the classes ``(good, anomaly)``, so the
   station decides it as any two-class model, and ``anomaly_map`` = the normalised patch
   distances on the feature grid (the heat map).

The threshold ``t``: with only good validation images, the lowest one that rejects at most
``false_reject_rate`` of them; with labelled defects in validation, the classifier's
policy (``threshold.policy``). The run folder holds ``config.yaml`` (the training config),
``anomaly.yaml`` (this method's settings), ``bank.npy``, ``split.json`` and ``run.json``
with ``method: anomaly``; ``training.anomaly.export`` turns it into one ONNX file.

Example::

    run = fit(TrainConfig(data=Path("parts")), AnomalyConfig(), Path("runs/a1"))
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from .. import TrainingError
from ..common import datasets
from ..common.config import TrainConfig, as_dict
from ..common.runs import setup_of, spec_of, versions, write_json
from .bank import bank_plan, choose_threshold, greedy_coreset, raw_scores
from .config import CLASSES, METHOD, AnomalyConfig
from .graph import embedder, features

log = logging.getLogger(__name__)


@dataclass
class Data:
    classes: list[str]
    good: str
    splits: dict
    setup: object
    spec: object
    report: dict = field(default_factory=dict)


def load_data(cfg: TrainConfig) -> Data:
    """The dataset's splits through the station's preprocessing; ``good`` may be the only
    class (the point of this method)."""
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
    splits, bad = {}, []
    for name in datasets.SPLITS:
        splits[name], b = datasets.load_split(parts[name], spec, ds.classes)
        bad += b
    for path, why in bad:
        log.warning("skipped unreadable image %s: %s", path, why)
    report = {
        "source": str(cfg.data),
        "classes": ds.classes,
        "good_class": good[0],
        "unreadable": [{"file": f, "why": w} for f, w in bad],
        "split_seed": cfg.split.seed,
        "split_given": any(s.split for s in ds.samples),
    }
    return Data(ds.classes, good[0], splits, setup, spec, report)


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
    data = load_data(cfg)
    tr, va = data.splits["train"], data.splits["val"]
    gi = data.classes.index(data.good)
    x_good = tr.x[tr.y == gi]
    if len(x_good) < 2:
        raise TrainingError(f"the training split has {len(x_good)} good image(s); need more")
    embed = embedder(cfg.model.type, cfg.model.image_size, cfg.model.color, acfg)
    _, h, w, dim = embed.output.shape
    k, _ = bank_plan(len(x_good) * h * w, dim, acfg)  # refuse before the work, not after
    t0 = time.monotonic()
    patches = features(embed, x_good, acfg.batch_size).reshape(-1, dim)
    rng = np.random.default_rng(acfg.seed)
    candidates = patches
    if len(patches) > acfg.max_patches:
        candidates = patches[rng.choice(len(patches), acfg.max_patches, replace=False)]
        k = min(k, len(candidates))
    feature_seconds = time.monotonic() - t0
    t1 = time.monotonic()
    bank = np.ascontiguousarray(
        candidates[greedy_coreset(candidates, k, acfg.projection, acfg.seed)]
    )
    coreset_seconds = time.monotonic() - t1
    log.info(
        "bank: %d of %d patches (%d x %d grid, %d features), %.1f MB; features %.1f s, "
        "coreset %.1f s",
        len(bank),
        len(patches),
        h,
        w,
        dim,
        bank.nbytes / 2**20,
        feature_seconds,
        coreset_seconds,
    )
    vf = features(embed, va.x, acfg.batch_size)
    s = raw_scores(vf, bank) if len(vf) else np.zeros(0)
    is_good = va.y == gi
    threshold = choose_threshold(s[is_good], s[~is_good], cfg, acfg)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "bank.npy", bank)
    (out / "config.yaml").write_text(yaml.safe_dump(as_dict(cfg), sort_keys=False))
    (out / "anomaly.yaml").write_text(yaml.safe_dump(as_dict(acfg), sort_keys=False))
    prepared = datasets.Prepared(data.classes, [], data.spec, data.splits, data.report)
    write_json(out / "split.json", datasets.split_file(prepared, Path(cfg.data)))
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
            "grid": [int(h), int(w)],
            "feature_dims": int(dim),
            "bank_size": int(len(bank)),
            "bank_bytes": int(bank.nbytes),
            "training_patches": int(len(patches)),
            "coreset_candidates": int(len(candidates)),
            "coreset_fraction": round(len(bank) / len(patches), 6),
            "coreset": f"greedy k-center in a {acfg.projection}-d random projection",
            "score": "image: max over patches of the distance to the nearest bank patch",
            "normalisation": {"formula": "n = s / (s + t)", "t": threshold["raw"]},
        },
        "image_stats": datasets.image_stats(x_good),
        "dataset": {
            "source": str(cfg.data),
            "counts": {
                n: {c: int(np.sum(sp.y == i)) for i, c in enumerate(data.classes)}
                for n, sp in data.splits.items()
            },
            "unreadable": len(data.report["unreadable"]),
            "fingerprint": "",
        },
        "training": {
            "model": f"anomaly ({cfg.model.type} patch features + memory bank)",
            "method": METHOD,
            "parameters": 0,
            "good_images": int(len(x_good)),
            "feature_seconds": round(feature_seconds, 1),
            "coreset_seconds": round(coreset_seconds, 1),
            "fit_seconds": round(time.monotonic() - t0, 1),
            "total_seconds": round(time.monotonic() - started, 1),
            "config": {**as_dict(cfg), "anomaly": as_dict(acfg)},
            "versions": versions(),
        },
    }
    write_json(out / "run.json", run)
    return run


def is_anomaly_run(run: Path) -> bool:
    p = Path(run) / "run.json"
    return p.is_file() and json.loads(p.read_text()).get("method") == METHOD
