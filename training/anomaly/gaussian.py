"""Per-region statistics of "normal" (``anomaly.statistics: position``): PaDiM-style Gaussians.

For parts that sit in the same place in every image (solar cells, fixtured parts, anything
behind a station's ROI), where a patch is matters: a busbar is normal in one column and a
defect in another. Instead of a memory bank searched anywhere in the image, every region of
the feature grid (``anomaly.region`` cells square) gets its own mean and covariance of the
good training patches, and a patch's distance is its Mahalanobis distance to its region's
Gaussian. Good parts of several kinds (mono- and polycrystalline cells; two suppliers'
blanks) make a mixture: the good training images are clustered by their mean feature
(k-means, ``anomaly.components``) and each cluster gets its own Gaussians; a patch is
judged by the nearest one.

At batch 1 this is ``components x regions`` small matrix products of the feature width,
much cheaper than a bank search over every patch (the ELPV bank's search cost 2.3x the
backbone; these Gaussians, a fraction of it). The statistics stream: per component and
region, sums of the features and of their outer products (float64), over two passes of the
images (the first finds the clusters), so memory does not grow with the number of images.

Example::

    acc = RegionAccumulator(centroids, grid=(28, 28), region=2, dim=152)
    for batch in batches:
        acc.add(features(batch))        # (N, 28, 28, 152)
    g = acc.gaussians(shrinkage=0.3)    # Gaussians.mean (K, P, D), .chol (K, P, D, D)
    scores = g.scores(features(val))    # the numpy reference of the graph
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .. import TrainingError
from .config import AnomalyConfig

FILE = "gaussians.npz"


def regions_of(grid: tuple[int, int], region: int) -> tuple[int, int]:
    """The (rows, columns) of regions on a feature grid; refuses a grid they do not tile."""
    h, w = grid
    if h % region or w % region:
        raise TrainingError(
            f"anomaly.region: {region} cells square does not tile the {h}x{w} feature grid; "
            f"choose a region that divides {h} and {w} (or change model.image_size)"
        )
    return h // region, w // region


def statistics_bytes(components: int, grid: tuple[int, int], region: int, dim: int) -> int:
    hh, ww = regions_of(grid, region)
    return components * hh * ww * (dim * dim + dim) * 4


def position_plan(grid: tuple[int, int], dim: int, acfg: AnomalyConfig) -> int:
    """Bytes of the region Gaussians; refuses a grid the regions do not tile, or a size
    over the cap."""
    regions_of(grid, acfg.region)
    nbytes = statistics_bytes(acfg.components, grid, acfg.region, dim)
    if nbytes > acfg.max_bank_mb * 1024 * 1024:
        raise TrainingError(
            f"anomaly: the region Gaussians would take {nbytes / 2**20:.1f} MB "
            f"({acfg.components} component(s) x {dim}x{dim} covariances per region), over the "
            f"cap anomaly.max_bank_mb = {acfg.max_bank_mb:g} MB; raise anomaly.region, lower "
            f"anomaly.components, or raise the cap"
        )
    return nbytes


def mirror_views(x: np.ndarray, flips: bool) -> list[np.ndarray]:
    """The images a fit learns from: (N, H, W, C) as they are, and with ``flips`` also
    mirrored left-right, upside down and both."""
    if not flips:
        return [x]
    return [x, x[:, :, ::-1], x[:, ::-1], x[:, ::-1, ::-1]]


def _to_regions(f: np.ndarray, region: int) -> np.ndarray:
    """(N, H, W, D) -> (P, N * region^2, D): every region's patches of every image."""
    n, h, w, d = f.shape
    x = f.reshape(n, h // region, region, w // region, region, d)
    return x.transpose(1, 3, 0, 2, 4, 5).reshape((h // region) * (w // region), -1, d)


def _from_regions(x: np.ndarray, n: int, h: int, w: int, region: int) -> np.ndarray:
    """(P, N * region^2) -> (N, H * W): the inverse of ``_to_regions`` for a distance."""
    x = x.reshape(h // region, w // region, n, region, region)
    return x.transpose(2, 0, 3, 1, 4).reshape(n, h * w)


def cluster(image_means: np.ndarray, components: int, seed: int) -> np.ndarray:
    """k-means centroids (K, D) of the good training images' mean features (seeded)."""
    import cv2

    x = np.ascontiguousarray(image_means, np.float32)
    if components == 1:
        return x.mean(0, keepdims=True)
    if len(x) < 2 * components:
        raise TrainingError(
            f"anomaly.components: {components} clusters need at least {2 * components} good "
            f"training images, and there are {len(x)}; lower anomaly.components"
        )
    cv2.setRNGSeed(int(seed))
    crit = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 100, 1e-4)
    _, _, centroids = cv2.kmeans(x, components, None, crit, 10, cv2.KMEANS_PP_CENTERS)
    return centroids.astype(np.float32)


def nearest(image_means: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    d = ((image_means[:, None, :] - centroids[None]) ** 2).sum(-1)
    return np.argmin(d, axis=1)


class RegionAccumulator:
    """Sums of features and their outer products per component and region (float64)."""

    def __init__(self, centroids: np.ndarray, grid: tuple[int, int], region: int, dim: int):
        self.centroids = np.asarray(centroids, np.float32)
        self.grid, self.region, self.dim = tuple(grid), int(region), int(dim)
        k, p = len(self.centroids), int(np.prod(regions_of(self.grid, self.region)))
        self.count = np.zeros(k, np.int64)  # patches per region, per component
        self.images = np.zeros(k, np.int64)
        self.s1 = np.zeros((k, p, dim))
        self.s2 = np.zeros((k, p, dim, dim))

    def add(self, feats: np.ndarray, images: bool = True) -> None:
        """Add good images' patch features (N, h, w, D) to their clusters' sums;
        ``images=False`` for further views of images already counted (mirror images)."""
        feats = np.asarray(feats, np.float32)
        which = nearest(feats.mean((1, 2)), self.centroids)
        for k in np.unique(which):
            x = _to_regions(feats[which == k], self.region).astype(np.float64)
            self.s1[k] += x.sum(1)
            self.s2[k] += np.einsum("pmd,pme->pde", x, x, optimize=True)
            self.count[k] += x.shape[1]
            self.images[k] += int(np.sum(which == k)) if images else 0

    @classmethod
    def merged(cls, parts: list[RegionAccumulator]) -> RegionAccumulator:
        """One accumulator holding the sums of several (same clusters, grid and region)."""
        first = parts[0]
        acc = cls(first.centroids, first.grid, first.region, first.dim)
        for p in parts:
            acc.count += p.count
            acc.images += p.images
            acc.s1 += p.s1
            acc.s2 += p.s2
        return acc

    def gaussians(self, shrinkage: float) -> Gaussians:
        if np.any(self.images < 2):
            raise TrainingError(
                f"anomaly.components: a cluster holds {int(self.images.min())} good training "
                f"image(s) (clusters: {self.images.tolist()}); lower anomaly.components"
            )
        n = self.count[:, None, None]
        mean = self.s1 / n
        cov = (self.s2 - n[..., None] * np.einsum("kpd,kpe->kpde", mean, mean)) / (n[..., None] - 1)
        cov += shrinkage * np.eye(self.dim)
        try:  # precision = L L^T; distance^2 = |(x - mean) L|^2
            chol = np.linalg.cholesky(np.linalg.inv(cov))
        except np.linalg.LinAlgError:
            raise TrainingError(
                "anomaly.shrinkage: a region's covariance is singular; raise anomaly.shrinkage"
            ) from None
        return Gaussians(
            mean.astype(np.float32),
            chol.astype(np.float32),
            self.centroids,
            self.grid,
            self.region,
            self.images.copy(),
        )


@dataclass
class Gaussians:
    mean: np.ndarray  # (K, P, D)
    chol: np.ndarray  # (K, P, D, D): the precision's Cholesky factor
    centroids: np.ndarray  # (K, D)
    grid: tuple[int, int]
    region: int
    images: np.ndarray  # good training images per component
    scale: np.ndarray | None = None  # (2, H * W): patch_scale's a and b per grid position

    @property
    def nbytes(self) -> int:
        extra = 0 if self.scale is None else self.scale.nbytes
        return int(self.mean.nbytes + self.chol.nbytes + extra)

    def scaled(self, scale: np.ndarray) -> Gaussians:
        return replace(self, scale=np.asarray(scale, np.float32))

    def save(self, run: Path) -> None:
        extra = {} if self.scale is None else {"scale": self.scale}
        np.savez(
            Path(run) / FILE,
            mean=self.mean,
            chol=self.chol,
            centroids=self.centroids,
            grid=np.array(self.grid),
            region=np.array(self.region),
            images=self.images,
            **extra,
        )

    @classmethod
    def load(cls, run: Path) -> Gaussians:
        z = np.load(Path(run) / FILE)
        return cls(
            z["mean"],
            z["chol"],
            z["centroids"],
            tuple(int(v) for v in z["grid"]),
            int(z["region"]),
            z["images"],
            z["scale"] if "scale" in z.files else None,
        )

    def patch_distances(self, feats: np.ndarray) -> np.ndarray:
        """(N, H, W, D) -> (N, H * W): each patch's distance to the nearest component."""
        n, h, w, _ = feats.shape
        x = _to_regions(np.asarray(feats, np.float64), self.region)
        best = None
        for mean, chol in zip(self.mean, self.chol, strict=True):
            z = np.matmul(x - mean[:, None, :], chol.astype(np.float64))
            d2 = np.sum(z * z, axis=-1)
            best = d2 if best is None else np.minimum(best, d2)
        d = np.sqrt(np.maximum(_from_regions(best, n, h, w, self.region), 0.0))
        if self.scale is None:
            return d
        a, b = self.scale.astype(np.float64)
        return np.maximum(d * a + b, 0.0)

    def scores(self, feats: np.ndarray, chunk: int = 64, top_k: int = 1) -> np.ndarray:
        """The numpy reference of the graph: per image, the mean of the ``top_k`` largest
        patch distances."""
        from .score import image_scores

        out = [
            image_scores(self.patch_distances(feats[i : i + chunk]), top_k)
            for i in range(0, len(feats), chunk)
        ]
        return np.concatenate(out) if out else np.zeros(0)


def gaussian_layer_class():
    from ..common.tf import keras

    class RegionGaussians(keras.layers.Layer):
        """Distance of every patch to the nearest of its region's Gaussians: per component,
        (x - mean) as (regions, patches, D), one batched MatMul with the precision's
        Cholesky factors, squares summed; a min over components. (N, H*W, D) -> (N, H*W)."""

        def __init__(self, g: Gaussians, **kwargs):
            super().__init__(**kwargs)
            self.k = len(g.mean)
            self.grid, self.region = g.grid, g.region
            self.means, self.chols = [], []
            for i in range(self.k):
                m = self.add_weight(
                    shape=g.mean[i][:, None, :].shape,
                    initializer="zeros",
                    trainable=False,
                    name=f"mean_{i}",
                )
                c = self.add_weight(
                    shape=g.chol[i].shape, initializer="zeros", trainable=False, name=f"chol_{i}"
                )
                m.assign(g.mean[i][:, None, :])
                c.assign(g.chol[i])
                self.means.append(m)
                self.chols.append(c)
            self.scale = None
            if g.scale is not None:  # patch_scale: a d + b per grid position, floored at 0
                self.scale = self.add_weight(
                    shape=g.scale.shape, initializer="zeros", trainable=False, name="scale"
                )
                self.scale.assign(g.scale)

        def call(self, f):
            ops = keras.ops
            (h, w), r, d = self.grid, self.region, f.shape[-1]
            hh, ww = h // r, w // r
            x = ops.reshape(f, (-1, hh, r, ww, r, d))
            x = ops.transpose(x, (1, 3, 0, 2, 4, 5))
            x = ops.reshape(x, (hh * ww, -1, d))  # (P, N * r * r, D)
            best = None
            for m, c in zip(self.means, self.chols, strict=True):
                z = ops.matmul(x - m, c)
                d2 = ops.sum(z * z, axis=-1)
                best = d2 if best is None else ops.minimum(best, d2)
            best = ops.reshape(best, (hh, ww, -1, r, r))
            best = ops.transpose(best, (2, 0, 3, 1, 4))
            d = ops.sqrt(ops.maximum(ops.reshape(best, (-1, h * w)), 0.0))
            if self.scale is None:
                return d
            return ops.maximum(d * self.scale[0] + self.scale[1], 0.0)

    return RegionGaussians
