"""Heat maps of anomaly models and classifiers: the map on the feature grid -> an overlay
people can read (a classifier's class map first goes through ``cam_level``, which scales
it relative to the part: its strongest location red).

An anomaly model (manifest ``kind: anomaly``) outputs, beside its scores, a map of
normalised patch scores on its feature grid (0.5 is the threshold). ``overlay`` scales it
to the image and blends a colour map over it: blue at a third of the threshold distance
(n = 0.25) and below, red at the threshold (n = 0.5) and above.

Example::

    png = overlay(image, amap)      # image: (H, W) or (H, W, 3) uint8; amap: (h, w) floats
"""

from __future__ import annotations

import cv2
import numpy as np


def upsample(amap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The map at ``size`` (width, height), bilinear, float32."""
    return cv2.resize(np.asarray(amap, np.float32), size, interpolation=cv2.INTER_LINEAR)


def overlay(image: np.ndarray, amap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """A BGR uint8 image: ``image`` with the heat map blended over it. The colour scale is
    fixed (0.25 -> blue, 0.5 = threshold -> red), so two overlays compare."""
    base = image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if base.shape[2] == 1:
        base = cv2.cvtColor(base[..., 0], cv2.COLOR_GRAY2BGR)
    base = base[..., :3]
    if base.dtype != np.uint8:
        base = cv2.normalize(base, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    heat = upsample(amap, (base.shape[1], base.shape[0]))
    level = np.clip((heat - 0.25) / 0.25, 0.0, 1.0)  # the threshold tops the scale
    colours = cv2.applyColorMap((level * 255).astype(np.uint8), cv2.COLORMAP_JET)
    return cv2.addWeighted(colours, alpha, base, 1.0 - alpha, 0.0)


def cam_level(cam: np.ndarray) -> np.ndarray:
    """A classifier's class-activation map (manifest ``outputs.class_map``: the defect-minus-
    good logit at each location) on the scale of ``overlay``, relative to the part itself:
    the location with the strongest defect evidence at 0.5 (red), the part's median
    location at 0.25 (blue), linear between and below (down to 0 at its weakest).

    Only failed and uncertain parts keep a class map, so the part is known to be over its
    threshold; what the map must show is where. A fixed scale cannot: the logit of one
    location is the part's logit if the whole part looked like it, so on a confident
    reject (logit 10 to 60) every location near the defect saturates a sigmoid and the
    map turns red all over."""
    c = np.asarray(cam, np.float64)
    lo, mid, hi = float(c.min()), float(np.median(c)), float(c.max())
    level = np.where(
        c >= mid,
        0.25 + 0.25 * (c - mid) / max(hi - mid, 1e-9),
        0.25 * (c - lo) / max(mid - lo, 1e-9),
    )
    if hi - mid <= 1e-9:  # no location stands out: the whole part at the top
        level = np.where(c >= mid, 0.5, level)
    return level.astype(np.float32)
