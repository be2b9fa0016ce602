"""The training loss: categorical cross-entropy, and optionally a pairwise AUC term.

``train.auc_weight`` > 0 adds the squared hinge of the AUC-margin loss (Yuan et al., "Large-
scale Robust Deep AUC Maximization", ICCV 2021) over every (defective, good) pair of the
batch: ``mean(relu(1 - (s_defective - s_good))^2)``, where ``s`` is the probability of the
defect classes together. Cross-entropy scores each image alone; this term scores the order
of the pairs, which is what AUROC counts, and weighs most the defective images ranked at or
below good ones (ELPV's uncertain cells). A batch without both kinds adds nothing.
"""

from __future__ import annotations

import numpy as np

MARGIN = 1.0  # on probabilities: every pair short of (1, 0) still pulls


def loss_for(auc_weight: float, classes: list[str], defects: list[str]):
    """The Keras loss for ``model.compile``: cross-entropy alone when ``auc_weight`` is 0."""
    if auc_weight <= 0:
        return "categorical_crossentropy"
    from ..common.tf import keras

    ops = keras.ops
    mask = np.array([c in defects for c in classes], np.float32)

    def crossentropy_and_auc(y_true, y_pred):
        y_pred = ops.cast(y_pred, "float32")
        y_true = ops.cast(y_true, "float32")
        base = keras.losses.categorical_crossentropy(y_true, y_pred)
        score = ops.sum(y_pred * mask, axis=-1)
        defective = ops.cast(ops.sum(y_true * mask, axis=-1) >= 0.5, "float32")
        pairs = defective[:, None] * (1.0 - defective[None, :])
        short = ops.relu(MARGIN - (score[:, None] - score[None, :]))
        auc = ops.sum(pairs * ops.square(short)) / ops.maximum(ops.sum(pairs), 1.0)
        return base + auc_weight * auc

    return crossentropy_and_auc
