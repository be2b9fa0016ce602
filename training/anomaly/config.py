"""The anomaly method's settings (``anomaly:`` in a training config, ``--set anomaly.X=...``).

``inspector train --method anomaly --schema`` lists them; ``training.anomaly.fit`` reads them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from inspector.contract.schema import load_yaml, setting

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
    standardise: float = setting(
        0.0,
        "0: images as the camera gives them; S > 0: in the graph, each image shifted and "
        "scaled to mean 128 and standard deviation S grey levels before the backbone (parts "
        "whose brightness and contrast vary with the lamp or the sensor's gain, e.g. "
        "electroluminescence images of solar cells)",
    )
    statistics: str = setting(
        "bank",
        "bank: distance to the nearest good patch anywhere in the image (PatchCore; parts in "
        "any position); position: distance to Gaussians of each image region (PaDiM-style; "
        "parts that sit in the same place, e.g. solar cells or fixtured parts; faster)",
    )
    components: int = setting(
        2,
        "position: Gaussians per region, one per cluster of good training images (k-means "
        "on their mean features: e.g. two kinds of good part); a patch takes the nearest",
    )
    region: int = setting(
        2, "position: feature-grid cells per side that share one region's Gaussians"
    )
    shrinkage: float = setting(0.3, "position: added to the diagonal of every covariance")
    patch_scale: str = setting(
        "none",
        "position: none, or position: each grid position's distances brought to one scale "
        "(their mean and spread over the good training images, a third pass), so that the "
        "image's largest patch compares like with like: a busbar or an edge that varies more "
        "among good parts no longer outscores a defect in a quiet region",
    )
    flips: bool = setting(
        False,
        "position: the Gaussians also learn each good training image flipped left-right, "
        "upside down and both (for parts whose mirror image is a good part too, e.g. solar "
        "cells): four times the samples per region, four times the second pass's time",
    )
    top_k: int = setting(
        1,
        "the image score: the mean of its k largest patch distances (1: the largest; more "
        "lets a defect spread over several patches outscore one noisy patch of a good part)",
    )
    coreset: float = setting(0.01, "fraction of the training patches kept in the memory bank")
    max_bank: int = setting(16384, "at most this many patches in the bank")
    max_bank_mb: float = setting(
        64.0, "refuse a bank (or position statistics) larger than this (float32 bytes)"
    )
    max_patches: int = setting(
        250_000, "coreset candidates: a random subset of the training patches when more"
    )
    projection: int = setting(64, "dimensions of the random projection the coreset runs in")
    false_reject_rate: float = setting(
        0.01,
        "good parts only: the false-reject rate the threshold promises (its upper bound on "
        "held-out good parts at threshold.confidence holds this)",
    )
    folds: int = setting(
        0,
        "0: the threshold's false-reject bound rests on the good validation images alone; "
        "K (2 to 20): also on every good training image, scored by a model fitted on the "
        "other K-1 folds (out-of-fold), for lines with few validation images",
    )
    seed: int = setting(0, "seed of the projection and the subsets")
    batch_size: int = setting(16, "images per feature-extraction batch")

    def problems(self):
        if not self.layers:
            yield "layers", "name at least one backbone layer"
        if self.neighbourhood < 1 or self.neighbourhood % 2 == 0:
            yield "neighbourhood", "an odd number >= 1"
        if not 0 <= self.standardise <= 128:
            yield "standardise", "0 (off) or a standard deviation in grey levels up to 128"
        if self.statistics not in ("bank", "position"):
            yield "statistics", "bank or position"
        if self.patch_scale not in ("none", "position"):
            yield "patch_scale", "none or position"
        elif self.patch_scale == "position" and self.statistics != "position":
            yield "patch_scale", "position needs statistics: position (a bank has no positions)"
        if not 1 <= self.components <= 16:
            yield "components", "1 to 16"
        if not 1 <= self.top_k <= 64:
            yield "top_k", "1 to 64 patches"
        if self.region < 1:
            yield "region", "at least 1"
        if not self.shrinkage > 0:
            yield "shrinkage", "must be positive"
        if not 0 < self.coreset <= 1:
            yield "coreset", "a fraction in (0, 1]"
        if self.max_bank < 1:
            yield "max_bank", "at least 1"
        if self.max_bank_mb <= 0:
            yield "max_bank_mb", "must be positive"
        if self.folds != 0 and not 2 <= self.folds <= 20:
            yield "folds", "0 (validation only) or 2 to 20"
        if not 0 <= self.false_reject_rate < 1:
            yield "false_reject_rate", "a rate in [0, 1)"


def load_anomaly_config(path: Path | None) -> AnomalyConfig:
    return load_yaml(AnomalyConfig, path) if path else AnomalyConfig()
