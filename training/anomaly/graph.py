"""The anomaly model as one Keras graph: backbone taps -> patch features -> nearest-bank
(or region-Gaussian) distance -> the normalised score and the heat map (see
``training.anomaly.fit``).

``embedder`` turns uint8 images into patch features; ``scorer`` adds the memory bank
(plain MatMul/ReduceMin in ONNX, no custom operators) or the region Gaussians
(``training.anomaly.gaussian``: batched MatMul); ``load_model`` rebuilds both from a run
folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import TrainingError
from ..common.runs import load_run
from .config import AnomalyConfig, load_anomaly_config


def _keras():
    from ..common.tf import keras

    return keras


def embedder(variant: str, size: int, color: str, acfg: AnomalyConfig, weights="imagenet"):
    """uint8 images (N, size, size, C) -> patch features (N, h, w, D), all in the graph."""
    from ..common.backbone import Standardise, efficientnet_lite

    keras = _keras()
    channels = 1 if color == "gray" else 3
    inputs = keras.Input((size, size, channels), dtype="uint8", name="image")
    x = keras.ops.cast(inputs, "float32")
    if acfg.standardise > 0:  # straight to the backbone's input range
        x = Standardise(acfg.standardise, name="standardise")(x)
    if channels == 1:
        x = keras.layers.Concatenate(name="grey_to_rgb")([x, x, x])
    elif color == "bgr":
        x = keras.layers.Lambda(lambda t: keras.ops.flip(t, axis=-1), name="bgr_to_rgb")(x)
    if acfg.standardise <= 0:  # on three channels: see Standardise on one
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
        """Distance from every patch to its nearest bank patch: |f|^2 + min(|m|^2 - 2 f.m)
        with the bracket as one matrix product plus a bias over all patches of the batch
        (a 2-D MatMul + Add that ONNX Runtime runs as one Gemm, the -2 folded into the bank
        matrix) and a min: no element-wise pass over the (patches x bank) product."""

        def __init__(self, bank: np.ndarray, **kwargs):
            super().__init__(**kwargs)
            bank = np.asarray(bank, np.float32)
            self.bank_t = self.add_weight(  # -2 m as columns: exact in float32
                shape=bank.T.shape, initializer="zeros", trainable=False, name="bank_t"
            )
            self.bank_sq = self.add_weight(
                shape=(len(bank),), initializer="zeros", trainable=False, name="bank_sq"
            )
            self.bank_t.assign(np.ascontiguousarray(-2.0 * bank.T))
            self.bank_sq.assign(np.sum(bank.astype(np.float64) ** 2, axis=1).astype(np.float32))

        def call(self, f):  # (N, P, D) -> (N, P)
            ops = keras.ops
            p, d = f.shape[1], f.shape[2]
            rows = ops.reshape(f, (-1, d))  # (N * P, D)
            cross = ops.matmul(rows, self.bank_t) + self.bank_sq  # (N * P, K)
            d2 = ops.min(cross, axis=-1) + ops.sum(rows * rows, axis=-1)
            return ops.reshape(ops.sqrt(ops.maximum(d2, 0.0)), (-1, p))

    return NearestBank


def scorer(embed, statistics, t: float, top_k: int = 1):
    """The whole anomaly model: ``scores`` [1 - n, n] and ``anomaly_map`` (N, h, w).
    ``statistics``: the memory bank (an array) or the region Gaussians (``Gaussians``);
    the image score is the mean of the ``top_k`` largest patch distances."""
    from .gaussian import Gaussians, gaussian_layer_class

    keras = _keras()
    ops = keras.ops
    feats = embed.output
    _, h, w, d = feats.shape
    flat = keras.layers.Reshape((h * w, d), name="patches")(feats)
    if isinstance(statistics, Gaussians):
        dist = gaussian_layer_class()(statistics, name="region_gaussians")(flat)
    else:
        dist = nearest_layer_class()(statistics, name="nearest_bank")(flat)
    t = float(t)
    norm = keras.layers.Lambda(lambda v: v / (v + t), name="normalise_score")
    if top_k > 1:
        largest = ops.top_k(dist, min(int(top_k), h * w), sorted=False)[0]
        raw = ops.mean(largest, axis=-1, keepdims=True)
    else:
        raw = ops.max(dist, axis=-1, keepdims=True)
    score = norm(raw)
    scores = keras.layers.Concatenate(name="scores")([1.0 - score, score])
    amap = keras.layers.Reshape((h, w), name="anomaly_map")(norm(dist))
    return keras.Model(embed.input, {"scores": scores, "anomaly_map": amap}, name="anomaly")


# -- features and a run's model --------------------------------------------------------------
def features(embed, x: np.ndarray, batch: int) -> np.ndarray:
    """Patch features (N, h, w, D), float32. Through the compiled graph (``predict_on_batch``),
    not an eager call: eager execution holds every layer's activations of the batch (about
    1.2 GB for 16 images at 224 px; the graph, about 0.2 GB)."""
    if not len(x):
        return np.zeros((0, *embed.output.shape[1:]), np.float32)
    return np.concatenate(
        [np.asarray(embed.predict_on_batch(x[i : i + batch])) for i in range(0, len(x), batch)]
    ).astype(np.float32)


def load_model(run: Path):
    """(keras scoring model, embedder, TrainConfig, AnomalyConfig, run.json) of a run."""
    run = Path(run)
    cfg, info = load_run(run)
    acfg = load_anomaly_config(run / "anomaly.yaml")
    embed = embedder(cfg.model.type, cfg.model.image_size, cfg.model.color, acfg)
    model = scorer(embed, load_statistics(run), info["threshold"]["raw"], acfg.top_k)
    return model, embed, cfg, acfg, info


def load_statistics(run: Path):
    """A run's model of normal: its memory bank (``bank.npy``) or its region Gaussians."""
    from .gaussian import FILE, Gaussians

    run = Path(run)
    if (run / FILE).is_file():
        return Gaussians.load(run)
    return np.load(run / "bank.npy")


def reference_scores(feats: np.ndarray, statistics, top_k: int = 1) -> np.ndarray:
    """The numpy reference of the graph's image score for either model of normal."""
    from .bank import raw_scores
    from .gaussian import Gaussians

    if isinstance(statistics, Gaussians):
        return statistics.scores(feats, top_k=top_k)
    return raw_scores(feats, statistics, top_k=top_k)
