"""The memory bank of an anomaly model: which training patches it keeps, and the threshold.

Patches arrive batch by batch (``PatchReservoir``: a uniform sample of at most
``anomaly.max_patches`` of them, whatever the number of images), a greedy k-center coreset
picks the bank from that sample (``greedy_coreset``), and ``choose_threshold`` sets the
raw distance that maps to the score 0.5. ``raw_scores`` is the numpy reference of the
graph's nearest-bank distance.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from .. import TrainingError
from ..common import bounds
from ..common.config import TrainConfig
from ..common.metrics import binary_at
from ..common.thresholds import choose, describe
from .config import AnomalyConfig

log = logging.getLogger(__name__)


class PatchReservoir:
    """A uniform random sample, without replacement, of at most ``capacity`` patch features
    from a stream of batches (reservoir sampling, Vitter's algorithm R), kept in stream
    order. Memory: ``capacity x dim`` float32 however many patches stream through; while
    fewer than ``capacity`` have come, it holds every one of them, in order.

    Example::

        r = PatchReservoir(250_000, 152, seed=0, expected=n_images * 28 * 28)
        for batch in batches:
            r.add(features(batch))  # (N, h, w, 152)
        candidates = r.sample()
    """

    def __init__(self, capacity: int, dim: int, seed: int, expected: int | None = None):
        self.capacity, self.dim, self.seen = int(capacity), int(dim), 0
        self._rng = np.random.default_rng(seed)
        rows = self.capacity if expected is None else max(1, min(self.capacity, int(expected)))
        self._buf = np.empty((rows, self.dim), np.float32)
        self._order = np.empty(rows, np.int64)  # stream position of each kept patch

    def add(self, patches: np.ndarray) -> None:
        patches = np.asarray(patches, np.float32).reshape(-1, self.dim)
        t = np.arange(self.seen, self.seen + len(patches))
        self.seen += len(patches)
        fill = t < self.capacity
        if fill.any():
            end = int(t[fill][-1]) + 1
            if end > len(self._buf):  # more than expected: grow up to the capacity
                rows = min(self.capacity, max(end, 2 * len(self._buf)))
                self._buf = np.concatenate(
                    [self._buf, np.empty((rows - len(self._buf), self.dim), np.float32)]
                )
                self._order = np.concatenate(
                    [self._order, np.empty(rows - len(self._order), np.int64)]
                )
            self._buf[t[fill]] = patches[fill]
            self._order[t[fill]] = t[fill]
        rest = ~fill
        if rest.any():  # patch t replaces a random slot with probability capacity / (t + 1)
            slot = (self._rng.random(int(rest.sum())) * (t[rest] + 1)).astype(np.int64)
            hit = slot < self.capacity
            slot, src = slot[hit], np.flatnonzero(rest)[hit]
            _, last = np.unique(slot[::-1], return_index=True)  # a slot hit twice: the later wins
            keep = len(slot) - 1 - last
            self._buf[slot[keep]] = patches[src[keep]]
            self._order[slot[keep]] = t[src[keep]]

    def __len__(self) -> int:
        return min(self.seen, self.capacity)

    @property
    def nbytes(self) -> int:
        return int(self._buf.nbytes + self._order.nbytes)

    def sample(self) -> np.ndarray:
        """The kept patches (at most ``capacity``, float32), in the order they came."""
        n = len(self)
        order = np.argsort(self._order[:n], kind="stable")
        return self._buf[:n][order]

    def positions(self) -> np.ndarray:
        """The stream position of each patch of ``sample()`` (its image: position // patches
        per image)."""
        return np.sort(self._order[: len(self)], kind="stable")


def bank_plan(n_patches: int, dim: int, acfg: AnomalyConfig) -> tuple[int, int]:
    """(patches kept, bytes) for ``n_patches`` candidates; refuses a bank over the cap."""
    k = max(1, min(acfg.max_bank, math.ceil(acfg.coreset * n_patches), n_patches))
    nbytes = k * dim * 4
    cap = acfg.max_bank_mb * 1024 * 1024
    if nbytes > cap:
        raise TrainingError(
            f"anomaly: the memory bank would hold {k:,} patches x {dim} features = "
            f"{nbytes / 2**20:.1f} MB, over the cap anomaly.max_bank_mb = {acfg.max_bank_mb:g} "
            f"MB; lower anomaly.coreset or anomaly.max_bank, or raise the cap"
        )
    return k, nbytes


def greedy_coreset(x: np.ndarray, k: int, projection: int, seed: int) -> np.ndarray:
    """Indices of ``k`` rows of ``x`` chosen by greedy k-center (each new one the farthest
    from those chosen so far), distances measured in a random Gaussian projection."""
    rng = np.random.default_rng(seed)
    if k >= len(x):
        return np.arange(len(x))
    z = x
    if projection and projection < x.shape[1]:
        r = rng.normal(0, 1 / math.sqrt(projection), (x.shape[1], projection)).astype(np.float32)
        z = x @ r
    zz = np.einsum("ij,ij->i", z, z)
    chosen = np.empty(k, np.int64)
    chosen[0] = int(rng.integers(len(x)))
    best = np.full(len(x), np.inf, np.float32)
    for i in range(k):
        c = z[chosen[i]]
        d = zz - 2.0 * (z @ c) + float(c @ c)
        np.minimum(best, d, out=best)
        if i + 1 < k:
            chosen[i + 1] = int(np.argmax(best))
    return chosen


def raw_scores(
    feats: np.ndarray, bank: np.ndarray, chunk: int = 4096, top_k: int = 1
) -> np.ndarray:
    """The numpy reference of the graph: per image, the mean of the ``top_k`` largest
    nearest-bank distances."""
    from .score import image_scores

    n = len(feats)
    flat = feats.reshape(n, -1, feats.shape[-1])
    mm = np.sum(bank.astype(np.float64) ** 2, axis=1)
    out = np.empty(n)
    for i in range(n):
        f = flat[i].astype(np.float64)
        d2 = np.full(len(f), np.inf)
        for j in range(0, len(bank), chunk):
            b = bank[j : j + chunk].astype(np.float64)
            np.minimum(d2, (mm[j : j + chunk] - 2.0 * f @ b.T).min(axis=1), out=d2)
        d2 += np.sum(f * f, axis=1)
        out[i] = image_scores(np.sqrt(np.maximum(d2, 0.0))[None], top_k)[0]
    return out


# what a good-only threshold falls back to when its validation set cannot promise the rate
GOOD_ONLY_FALLBACK = (
    "the threshold falls back to the lowest that rejects no good validation image, and "
    "promises only that bound"
)


def choose_threshold(
    good: np.ndarray,
    defect: np.ndarray,
    cfg: TrainConfig,
    acfg: AnomalyConfig,
    on: str = "validation",
    images: str = "validation images",
) -> dict:
    """The raw-distance threshold ``t`` and how it was chosen (``raw``; ``value`` is 0.5),
    with its confidence, promise and warning (``training.common.thresholds.describe``).

    Good images only: the lowest threshold whose Clopper-Pearson *upper* bound on the
    false-reject rate (good validation images rejected, k of n) holds
    ``anomaly.false_reject_rate`` at ``threshold.confidence``: it rejects at most
    ``bounds.largest_k(n, rate)`` of them. Too few good images to promise the rate (1 % at
    95 % needs 299): the lowest threshold that rejects none of them, and a warning that
    says how many more it needs. Labelled defects too: the classifier's policy. ``on`` and
    ``images`` name where the scores come from (``anomaly.folds``: validation and
    out-of-fold)."""
    good, defect = np.sort(np.asarray(good, np.float64)), np.asarray(defect, np.float64)
    if not len(good):
        raise TrainingError(
            "the validation split has no good images: an anomaly threshold needs held-out "
            "good parts (raise split.val or add good images)"
        )
    confidence = cfg.threshold.confidence
    fallback = None
    if len(defect):  # labelled defects: the classifier's policies, on a monotone [0, 1) map
        ref = float(np.median(good)) or 1.0
        u = np.r_[good, defect] / (np.r_[good, defect] + ref)
        truth = np.r_[np.zeros(len(good), bool), np.ones(len(defect), bool)]
        chosen = choose(truth, u, cfg.threshold.policy, cfg.threshold.value, confidence=confidence)
        v = min(chosen["value"], 1 - 1e-9)
        t = ref * v / (1 - v)
        policy, target = chosen["policy"], chosen["target"]
    else:
        policy, target = "max_false_reject_rate", acfg.false_reject_rate
        allowed = bounds.largest_k(len(good), target, confidence)
        if allowed is None:
            allowed, fallback = 0, GOOD_ONLY_FALLBACK
        t = _lowest_rejecting_at_most(good, allowed)
    t = max(t, 1e-6)
    truth = np.r_[np.zeros(len(good), bool), np.ones(len(defect), bool)]
    scores = np.r_[good, defect]
    described = describe(
        truth,
        scores / (scores + t),
        0.5,
        policy=policy,
        target=target,
        confidence=confidence,
        fallback=fallback,
        on=on,
        images=images,
    )
    if described["warning"]:
        log.warning("threshold: %s", described["warning"])
    return {
        "value": 0.5,
        "raw": t,
        "policy": policy,
        "target": target,
        "fallback": fallback,
        "metrics": {"on": on, **binary_at(truth, scores / (scores + t), 0.5)},
        **{k: described[k] for k in ("confidence", "promise", "warning")},
    }


def _lowest_rejecting_at_most(good: np.ndarray, allowed: int) -> float:
    """The lowest raw threshold that rejects (score >= t) at most ``allowed`` of the sorted
    ``good`` scores, with a margin: halfway to the next higher good score (rejected
    anyway), or 0.1 % above when there is none, so that no validation image sits on the
    threshold (a rounding difference would flip it). Ties at the edge pass together."""
    edge = good[len(good) - 1 - min(allowed, len(good) - 1)]
    above = good[good > edge]
    return float((edge + above[0]) / 2) if len(above) else float(edge) * 1.001
