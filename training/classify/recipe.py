"""The fine-tuning recipe for pretrained backbones: what is frozen when, at which rate.

Transfer learning in two phases, as every serious tool does it:

1. ``head``: the backbone frozen (batch norm in inference mode), only the new classifier
   head learns, ``train.head_epochs`` epochs at ``train.learning_rate``; a head that starts
   from random weights would otherwise push large gradients into the pretrained blocks.
2. ``fine-tune``: the backbone unfrozen (``train.fine_tune``: ``all`` blocks, the ``top``
   stages — stride 16 and 32 — or ``none``), at ``learning_rate * fine_tune_lr_scale`` with
   cosine decay; batch-norm statistics stay frozen when the training set is small
   (``train.freeze_bn: auto``: under 5,000 images), since a few hundred images give noisy
   batch statistics that would overwrite ImageNet's.

Networks trained from scratch (``cnn``, ``vit``) skip the head phase.
"""

from __future__ import annotations

import re

from ..common.config import TrainConfig
from ..common.pretrained import VARIANTS, blocks

SMALL_DATASET = 5000  # images; below this, batch-norm statistics stay ImageNet's
TOP_STAGE = 4  # first stage of "top": the stride-16 112-channel stage onward


def pretrained(cfg: TrainConfig) -> bool:
    return cfg.model.type in VARIANTS and cfg.model.weights != "none"


def freeze_bn(cfg: TrainConfig, n_train: int) -> bool:
    if cfg.train.freeze_bn == "auto":
        return n_train < SMALL_DATASET
    return cfg.train.freeze_bn == "yes"


def freeze_backbone(model) -> None:
    model.get_layer("backbone").trainable = False


def unfreeze(model, cfg: TrainConfig, n_train: int) -> dict:
    """Set which backbone layers learn in the fine-tune phase; returns what was done."""
    from ..common.tf import keras

    backbone = model.get_layer("backbone")
    how = cfg.train.fine_tune
    if how == "none":
        backbone.trainable = False
        return {"fine_tune": "none", "freeze_bn": True, "first_block": None}
    backbone.trainable = True
    first = 0
    if how == "top":
        first = next(b.index for b in blocks(cfg.model.type) if b.stage >= TOP_STAGE)
    bn_frozen = freeze_bn(cfg, n_train)
    for layer in backbone.layers:
        m = re.match(r"block(\d+)_", layer.name)
        index = int(m.group(1)) if m else (-1 if layer.name.startswith("stem") else 10**6)
        learn = index >= first
        if isinstance(layer, keras.layers.BatchNormalization) and bn_frozen:
            learn = False
        layer.trainable = learn
    return {"fine_tune": how, "freeze_bn": bn_frozen, "first_block": first}
