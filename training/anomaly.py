"""Anomaly models from good parts only (PatchCore-style), computed wholly in one Keras graph.

``inspector train --method anomaly --data DATA --out RUN`` fits a model of "normal":

1. mid-level features of the ImageNet EfficientNet-Lite backbone (``training.models``):
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
with ``method: anomaly``; ``training.anomalyexport`` turns it into one ONNX file.

Example::

    run = fit(TrainConfig(data=Path("parts")), AnomalyConfig(), Path("runs/a1"))
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from inspector.contract.schema import load_yaml, setting

from . import TrainingError, datasets
from .config import TrainConfig, as_dict
from .train import write_json

log = logging.getLogger(__name__)

METHOD = "anomaly"
CLASSES = ["good", "anomaly"]  # the model's two output columns
DEFAULT_LAYERS = ["block4_add", "block10_add"]


@dataclass(frozen=True, kw_only=True)
class AnomalyConfig:
    layers: list[str] = setting(
        factory=lambda: list(DEFAULT_LAYERS),
        help="backbone layers whose outputs are the patch features (the first sets the grid)",
    )
    neighbourhood: int = setting(3, "average each feature over this many cells square (odd)")
    coreset: float = setting(0.01, "fraction of the training patches kept in the memory bank")
    max_bank: int = setting(16384, "at most this many patches in the bank")
    max_bank_mb: float = setting(64.0, "refuse a bank larger than this (float32 bytes)")
    max_patches: int = setting(
        250_000, "coreset candidates: a random subset of the training patches when more"
    )
    projection: int = setting(64, "dimensions of the random projection the coreset runs in")
    false_reject_rate: float = setting(
        0.01, "good parts only: the threshold rejects at most this share of held-out good ones"
    )
    seed: int = setting(0, "seed of the projection and the subsets")
    batch_size: int = setting(16, "images per feature-extraction batch")

    def problems(self):
        if not self.layers:
            yield "layers", "name at least one backbone layer"
        if self.neighbourhood < 1 or self.neighbourhood % 2 == 0:
            yield "neighbourhood", "an odd number >= 1"
        if not 0 < self.coreset <= 1:
            yield "coreset", "a fraction in (0, 1]"
        if self.max_bank < 1:
            yield "max_bank", "at least 1"
        if self.max_bank_mb <= 0:
            yield "max_bank_mb", "must be positive"
        if not 0 <= self.false_reject_rate < 1:
            yield "false_reject_rate", "a rate in [0, 1)"


def load_anomaly_config(path: Path | None) -> AnomalyConfig:
    return load_yaml(AnomalyConfig, path) if path else AnomalyConfig()


# -- the graph ------------------------------------------------------------------------------
def _keras():
    from .tf import keras

    return keras


def embedder(variant: str, size: int, color: str, acfg: AnomalyConfig, weights="imagenet"):
    """uint8 images (N, size, size, C) -> patch features (N, h, w, D), all in the graph."""
    from .models import efficientnet_lite

    keras = _keras()
    channels = 1 if color == "gray" else 3
    inputs = keras.Input((size, size, channels), dtype="uint8", name="image")
    x = keras.ops.cast(inputs, "float32")
    if channels == 1:
        x = keras.layers.Concatenate(name="grey_to_rgb")([x, x, x])
    elif color == "bgr":
        x = keras.layers.Lambda(lambda t: keras.ops.flip(t, axis=-1), name="bgr_to_rgb")(x)
    x = keras.layers.Rescaling(1.0 / 128.0, offset=-127.0 / 128.0, name="normalise")(x)
    net = efficientnet_lite(variant, size, weights)
    names = {layer.name for layer in net.layers}
    unknown = [n for n in acfg.layers if n not in names]
    if unknown:
        raise TrainingError(
            f"anomaly.layers: {unknown} are not layers of {variant} (e.g. block4_add, "
            "block10_add: blockN_add or blockN_project_bn)"
        )
    taps = keras.Model(net.input, [net.get_layer(n).output for n in acfg.layers], name="backbone")
    maps = taps(x)
    maps = maps if isinstance(maps, (list, tuple)) else [maps]
    grid = maps[0].shape[1]
    parts = []
    for name, m in zip(acfg.layers, maps, strict=True):
        if acfg.neighbourhood > 1:
            m = keras.layers.AveragePooling2D(
                acfg.neighbourhood, strides=1, padding="same", name=f"{name}_local"
            )(m)
        if m.shape[1] != grid:
            factor = grid // m.shape[1]
            if factor * m.shape[1] != grid or m.shape[1] != m.shape[2]:
                raise TrainingError(
                    f"anomaly.layers: {name} is {m.shape[1]} cells across, which does not "
                    f"divide the {grid}-cell grid; choose model.image_size a multiple of 32"
                )
            m = keras.layers.UpSampling2D(factor, name=f"{name}_to_grid")(m)
        parts.append(m)
    feats = keras.layers.Concatenate(name="patch_features")(parts) if len(parts) > 1 else parts[0]
    return keras.Model(inputs, feats, name="embedder")


def nearest_layer_class():
    keras = _keras()

    class NearestBank(keras.layers.Layer):
        """Distance from every patch to its nearest bank patch: |f|^2 - 2 f.m + |m|^2
        through one matrix product and a min (plain MatMul/ReduceMin in ONNX)."""

        def __init__(self, bank: np.ndarray, **kwargs):
            super().__init__(**kwargs)
            bank = np.asarray(bank, np.float32)
            self.bank_t = self.add_weight(
                shape=bank.T.shape, initializer="zeros", trainable=False, name="bank_t"
            )
            self.bank_sq = self.add_weight(
                shape=(len(bank),), initializer="zeros", trainable=False, name="bank_sq"
            )
            self.bank_t.assign(np.ascontiguousarray(bank.T))
            self.bank_sq.assign(np.sum(bank.astype(np.float64) ** 2, axis=1).astype(np.float32))

        def call(self, f):  # (N, P, D) -> (N, P)
            ops = keras.ops
            cross = ops.matmul(f, self.bank_t)  # (N, P, K)
            d2 = ops.min(self.bank_sq - 2.0 * cross, axis=-1) + ops.sum(f * f, axis=-1)
            return ops.sqrt(ops.maximum(d2, 0.0))

    return NearestBank


def scorer(embed, bank: np.ndarray, t: float):
    """The whole anomaly model: ``scores`` [1 - n, n] and ``anomaly_map`` (N, h, w)."""
    keras = _keras()
    ops = keras.ops
    feats = embed.output
    _, h, w, d = feats.shape
    flat = keras.layers.Reshape((h * w, d), name="patches")(feats)
    dist = nearest_layer_class()(bank, name="nearest_bank")(flat)
    t = float(t)
    norm = keras.layers.Lambda(lambda v: v / (v + t), name="normalise_score")
    score = norm(ops.max(dist, axis=-1, keepdims=True))
    scores = keras.layers.Concatenate(name="scores")([1.0 - score, score])
    amap = keras.layers.Reshape((h, w), name="anomaly_map")(norm(dist))
    return keras.Model(embed.input, {"scores": scores, "anomaly_map": amap}, name="anomaly")


# -- fitting ----------------------------------------------------------------------------------
def features(embed, x: np.ndarray, batch: int) -> np.ndarray:
    """Patch features (N, h, w, D), float32."""
    if not len(x):
        return np.zeros((0, *embed.output.shape[1:]), np.float32)
    return np.concatenate(
        [np.asarray(embed(x[i : i + batch], training=False)) for i in range(0, len(x), batch)]
    ).astype(np.float32)


def bank_plan(n_patches: int, dim: int, acfg: AnomalyConfig) -> tuple[int, int]:
    """(patches kept, bytes) for ``n_patches`` candidates; refuses a bank over the cap."""
    k = max(1, min(acfg.max_bank, math.ceil(acfg.coreset * n_patches), n_patches))
    nbytes = k * dim * 4
    cap = acfg.max_bank_mb * 1024 * 1024
    if nbytes > cap:
        raise TrainingError(
            f"anomaly: the memory bank would hold {k:,} patches x {dim} features = "
            f"{nbytes / 2**20:.1f} MB, over the cap anomaly.max_bank_mb = {acfg.max_bank_mb:g} "
            f"MB; lower anomaly.coreset or anomaly.max_bank, or raise the cap"
        )
    return k, nbytes


def greedy_coreset(x: np.ndarray, k: int, projection: int, seed: int) -> np.ndarray:
    """Indices of ``k`` rows of ``x`` chosen by greedy k-center (each new one the farthest
    from those chosen so far), distances measured in a random Gaussian projection."""
    rng = np.random.default_rng(seed)
    if k >= len(x):
        return np.arange(len(x))
    z = x
    if projection and projection < x.shape[1]:
        r = rng.normal(0, 1 / math.sqrt(projection), (x.shape[1], projection)).astype(np.float32)
        z = x @ r
    zz = np.einsum("ij,ij->i", z, z)
    chosen = np.empty(k, np.int64)
    chosen[0] = int(rng.integers(len(x)))
    best = np.full(len(x), np.inf, np.float32)
    for i in range(k):
        c = z[chosen[i]]
        d = zz - 2.0 * (z @ c) + float(c @ c)
        np.minimum(best, d, out=best)
        if i + 1 < k:
            chosen[i + 1] = int(np.argmax(best))
    return chosen


def raw_scores(feats: np.ndarray, bank: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """The numpy reference of the graph: per image, the largest nearest-bank distance."""
    n = len(feats)
    flat = feats.reshape(n, -1, feats.shape[-1])
    mm = np.sum(bank.astype(np.float64) ** 2, axis=1)
    out = np.empty(n)
    for i in range(n):
        f = flat[i].astype(np.float64)
        d2 = np.full(len(f), np.inf)
        for j in range(0, len(bank), chunk):
            b = bank[j : j + chunk].astype(np.float64)
            np.minimum(d2, (mm[j : j + chunk] - 2.0 * f @ b.T).min(axis=1), out=d2)
        d2 += np.sum(f * f, axis=1)
        out[i] = math.sqrt(max(float(d2.max()), 0.0))
    return out


def choose_threshold(
    good: np.ndarray, defect: np.ndarray, cfg: TrainConfig, acfg: AnomalyConfig
) -> dict:
    """The raw-distance threshold ``t`` and how it was chosen (``raw``; ``value`` is 0.5)."""
    from .metrics import binary_at

    good, defect = np.sort(np.asarray(good, np.float64)), np.asarray(defect, np.float64)
    if not len(good):
        raise TrainingError(
            "the validation split has no good images: an anomaly threshold needs held-out "
            "good parts (raise split.val or add good images)"
        )
    if len(defect):  # labelled defects: the classifier's policies, on a monotone [0, 1) map
        from .thresholds import choose

        ref = float(np.median(good)) or 1.0
        u = np.r_[good, defect] / (np.r_[good, defect] + ref)
        truth = np.r_[np.zeros(len(good), bool), np.ones(len(defect), bool)]
        chosen = choose(truth, u, cfg.threshold.policy, cfg.threshold.value)
        v = min(chosen["value"], 1 - 1e-9)
        t = ref * v / (1 - v)
        policy, target = chosen["policy"], chosen["target"]
    else:
        # the highest good score that must still pass, and a margin above it: halfway to
        # the next good score (rejected anyway), or 0.1 % when there is none, so that no
        # validation image sits on the threshold (a rounding difference would flip it)
        allowed = int(math.floor(acfg.false_reject_rate * len(good) + 1e-9))
        edge = good[len(good) - 1 - allowed]
        t = float((edge + good[len(good) - allowed]) / 2) if allowed else float(edge) * 1.001
        policy, target = "max_false_reject_rate", acfg.false_reject_rate
    t = max(t, 1e-6)
    truth = np.r_[np.zeros(len(good), bool), np.ones(len(defect), bool)]
    scores = np.r_[good, defect]
    return {
        "value": 0.5,
        "raw": t,
        "policy": policy,
        "target": target,
        "metrics": {"on": "validation", **binary_at(truth, scores / (scores + t), 0.5)},
    }


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
    from .train import setup_of, spec_of

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
    from .pretrained import VARIANTS
    from .train import versions

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


def load_model(run: Path):
    """(keras scoring model, embedder, TrainConfig, AnomalyConfig, run.json) of a run."""
    from .export import load_run

    run = Path(run)
    cfg, info = load_run(run)
    acfg = load_anomaly_config(run / "anomaly.yaml")
    bank = np.load(run / "bank.npy")
    embed = embedder(cfg.model.type, cfg.model.image_size, cfg.model.color, acfg)
    return scorer(embed, bank, info["threshold"]["raw"]), embed, cfg, acfg, info
