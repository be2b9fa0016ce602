"""The class-activation map of a classifier (``inspector export --heatmap``): ``class_map``.

``cam_model`` adds the map as a second output of a network whose head is global average
pooling + Dense; the station shows it as the part's heat map.
"""

from __future__ import annotations

import numpy as np

from .. import TrainingError

MAP_OUTPUT = "class_map"


def cam_model(model, classes: list[str], defect_classes: list[str]):
    """``model`` with a second output, the class-activation map of the defect score.

    For a head ``GlobalAveragePooling2D -> [Dropout] -> Dense "logits"`` the logits are the
    mean over the last feature map A of ``A . W + b``, so the map ``m = A . (w_d - w_g) +
    (b_d - b_g)`` (d: the most probable defect class, g: the most probable good class) is
    exact: its mean is the logit difference ``z_d - z_g`` (Grad-CAM of a GAP + linear head,
    without the ReLU). It costs the logits layer applied at every location of A (a 1x1
    matmul). With ``model.head: lse`` the Dense is applied at every location already and
    its output is the map's source; the image's logits are each class's log-sum-exp over
    the locations, so the map's strongest places are the ones that decided. Output
    ``(N, h, w)`` float32 on A's grid. Any other head: TrainingError."""
    from ..common.tf import keras

    def producer(tensor):
        return tensor._keras_history.operation

    try:
        dense = model.get_layer("logits")
    except ValueError:
        raise TrainingError(
            f"--heatmap: {model.name} has no 'logits' layer; the class map needs a "
            "global-average-pooling + Dense head"
        ) from None
    layer = producer(dense.input)
    if isinstance(layer, keras.layers.Dropout):
        layer = producer(layer.input)
    if len(dense.output.shape) == 4:  # head lse: Dense already gives every location's logits
        local = dense.output
    elif isinstance(layer, keras.layers.GlobalAveragePooling2D):
        local = dense(layer.input)  # (N, h, w, C): the logits of every location
    else:
        raise TrainingError(
            f"--heatmap: the head of {model.name} is {type(layer).__name__} + Dense, not "
            "global average pooling + Dense, so no exact class map exists (for the cnn, "
            "train with model.pooling: avg)"
        )
    defect = np.array([c in defect_classes for c in classes], np.float32)
    if len(defect_classes) == 1 and len(classes) == 2:
        select = (2.0 * defect - 1.0).reshape(1, 1, 1, -1)  # w_d - w_g, a constant
    else:  # the most probable defect class minus the most probable good class, per image

        def most_probable(mask):  # one-hot (ties share); argmax would not convert
            s = model.output - 2.0 * (1.0 - mask)
            top = keras.ops.cast(s >= keras.ops.max(s, axis=-1, keepdims=True), "float32")
            return top / keras.ops.sum(top, axis=-1, keepdims=True)

        pick = most_probable(defect) - most_probable(1.0 - defect)
        select = keras.ops.reshape(pick, (-1, 1, 1, len(classes)))
    cam = keras.ops.sum(local * select, axis=-1)
    return keras.Model(model.inputs, [model.output, cam], name=f"{model.name}_cam")
