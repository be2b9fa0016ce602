"""The classifier's training inputs: its targets (one-hot or soft labels) and the shuffled,
balanced, augmented ``tf.data`` pipeline over uint8 images (augmentation on training only)."""

from __future__ import annotations

import numpy as np

from .. import TrainingError
from ..common.config import TrainConfig


def targets(split, cfg: TrainConfig, classes: list[str], defects: list[str]) -> np.ndarray:
    """One-hot targets, or the soft ones of ``soft_labels`` (binary models only)."""
    onehot = np.eye(len(classes), dtype=np.float32)[split.y]
    if not cfg.soft_labels:
        return onehot
    if len(classes) != 2:
        raise TrainingError("soft_labels needs exactly two classes (good and one defect class)")
    try:
        p = np.array([float(m[cfg.soft_labels]) for m in split.meta], np.float32)
    except (KeyError, ValueError):
        raise TrainingError(
            f"soft_labels: every training image needs a number in the CSV column "
            f"{cfg.soft_labels!r} (give the dataset as its CSV manifest)"
        ) from None
    if p.min() < 0 or p.max() > 1:
        raise TrainingError(f"soft_labels: column {cfg.soft_labels!r} must hold values in [0, 1]")
    d = classes.index(defects[0])
    soft = np.empty_like(onehot)
    soft[:, d], soft[:, 1 - d] = p, 1 - p
    return soft


def train_dataset(x, y, targets, cfg: TrainConfig, n_classes: int, tf, keras):
    seed = cfg.train.seed
    if cfg.train.balance == "sampling":
        per_class = [
            tf.data.Dataset.from_tensor_slices((x[y == i], targets[y == i]))
            .repeat()
            .shuffle(len(x), seed=seed + i)
            for i in range(n_classes)
            if np.any(y == i)
        ]
        ds = tf.data.Dataset.sample_from_datasets(per_class, seed=seed)
    else:
        ds = tf.data.Dataset.from_tensor_slices((x, targets)).shuffle(
            len(x), seed=seed, reshuffle_each_iteration=True
        )
    ds = ds.batch(cfg.train.batch_size)
    a = cfg.augment
    if a.enabled:
        augment = augmenter(a, seed, keras, tf)
        ds = ds.map(lambda xb, yb: (augment(xb), yb), num_parallel_calls=tf.data.AUTOTUNE)
        if a.mixup:
            ds = ds.map(mixer(a.mixup, seed, tf), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def mixer(alpha: float, seed: int, tf):
    """mixup on uint8 batches: image i blended with image n-1-i of the same (shuffled) batch,
    ``lam * x_i + (1 - lam) * x_j``, and the targets with the same weight; ``lam`` drawn per
    image from Beta(alpha, alpha) (the ratio of two Gamma draws). Images stay uint8, as the
    camera gives them."""
    gen = tf.random.Generator.from_seed(seed + 7919)

    def mix(xb, yb):
        n = tf.shape(xb)[0]
        g = [
            tf.random.stateless_gamma([n], seed=gen.make_seeds(1)[:, 0], alpha=alpha)
            for _ in range(2)
        ]
        lam = g[0] / tf.maximum(g[0] + g[1], 1e-12)
        x, y = tf.cast(xb, tf.float32), tf.cast(yb, tf.float32)
        lx = tf.reshape(lam, [-1, 1, 1, 1])
        x = lx * x + (1.0 - lx) * tf.reverse(x, [0])
        y = lam[:, None] * y + (1.0 - lam[:, None]) * tf.reverse(y, [0])
        return tf.cast(tf.round(tf.clip_by_value(x, 0.0, 255.0)), tf.uint8), tf.cast(y, yb.dtype)

    return mix


def augmenter(a, seed: int, keras, tf):
    """Training-only augmentation on uint8 batches; returns uint8 like the camera would."""
    geometric = []
    if a.flip:
        geometric.append(keras.layers.RandomFlip("horizontal_and_vertical", seed=seed))
    if a.rotation_deg:
        geometric.append(
            keras.layers.RandomRotation(a.rotation_deg / 360.0, fill_mode="reflect", seed=seed)
        )
    if a.shift:
        geometric.append(
            keras.layers.RandomTranslation(a.shift, a.shift, fill_mode="reflect", seed=seed)
        )
    gen = tf.random.Generator.from_seed(seed)

    def augment(xb):
        x = tf.cast(xb, tf.float32)
        n = tf.shape(x)[0]
        if a.rot90:
            k = gen.uniform([], 0, 4, dtype=tf.int32)
            x = tf.image.rot90(x, k)
        for layer in geometric:
            x = layer(x, training=True)
        if a.brightness:
            x = x + gen.uniform([n, 1, 1, 1], -a.brightness, a.brightness) * 255.0
        if a.contrast:
            mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
            x = (x - mean) * gen.uniform([n, 1, 1, 1], 1 - a.contrast, 1 + a.contrast) + mean
        if a.noise:
            x = x + gen.normal(tf.shape(x), stddev=a.noise)
        return tf.cast(tf.round(tf.clip_by_value(x, 0.0, 255.0)), tf.uint8)

    return augment
