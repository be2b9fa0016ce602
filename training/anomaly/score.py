"""The image score from its patch distances, as the exported graph computes it: the numpy
reference that the bank, the region Gaussians and export's parity check share."""

from __future__ import annotations

import numpy as np


def image_scores(dist: np.ndarray, top_k: int = 1) -> np.ndarray:
    """(N, P) patch distances -> (N,) image scores: the mean of the ``top_k`` largest, as the
    graph computes them (``top_k`` 1: the largest)."""
    dist = np.asarray(dist, np.float64)
    k = min(int(top_k), dist.shape[1])
    if k <= 1:
        return dist.max(axis=1)
    return np.partition(dist, dist.shape[1] - k, axis=1)[:, -k:].mean(axis=1)
