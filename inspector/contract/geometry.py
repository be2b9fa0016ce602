"""Station geometry for the preprocessing function: undistortion and perspective in one remap.

``calibration/`` measures the camera (``camera.yaml``); the station config names that
file and the part's region: a rectangle, or four corner points (top-left, top-right,
bottom-right, bottom-left) mapped to a fixed output size. ``build_maps`` turns both into
one pair of lookup tables, built once, so each frame costs a single ``cv2.remap``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml

from ..errors import ConfigError


@dataclass(frozen=True)
class CameraModel:
    matrix: np.ndarray  # 3x3
    dist: np.ndarray  # k1 k2 p1 p2 [k3 ...]
    image_size: tuple[int, int]  # width, height
    mm_per_px: float | None = None


def load_camera(path: Path) -> CameraModel:
    """Read a ``camera.yaml`` written by ``inspector calibrate camera``."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: camera calibration file not found") from None
    except (yaml.YAMLError, OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"{path}: not a readable camera calibration ({str(exc).splitlines()[0]})"
        ) from None
    try:
        matrix = np.array(data["camera_matrix"], dtype=np.float64)
        dist = np.array(data["dist_coeffs"], dtype=np.float64).ravel()
        w, h = (int(v) for v in data["image_size"])
        if matrix.shape != (3, 3) or dist.size < 4 or w <= 0 or h <= 0:
            raise ValueError("wrong shapes")
    except (KeyError, TypeError, ValueError):
        raise ConfigError(
            f"{path}: needs camera_matrix (3x3), dist_coeffs and image_size [w, h]"
        ) from None
    return CameraModel(matrix, dist, (w, h), data.get("mm_per_px"))


def homography_to(corners: list[list[float]], size: tuple[int, int]) -> np.ndarray:
    """The homography taking the four corners (TL, TR, BR, BL) onto a size[0] x size[1] image.

    The corners are the region's outer edges: they land on the outer edges of the corner
    pixels (-0.5 and w - 0.5), so pixel centres sample the region evenly.
    """
    w, h = size
    src = np.array(corners, dtype=np.float64).reshape(4, 2)
    dst = np.array(
        [[-0.5, -0.5], [w - 0.5, -0.5], [w - 0.5, h - 0.5], [-0.5, h - 0.5]], dtype=np.float64
    )
    return cv2.getPerspectiveTransform(src.astype(np.float32), dst.astype(np.float32)).astype(
        np.float64
    )


def corners_size(corners: list[list[float]]) -> tuple[int, int]:
    """A natural output size for a quadrilateral: its mean edge lengths."""
    c = np.array(corners, dtype=np.float64).reshape(4, 2)
    w = (np.linalg.norm(c[1] - c[0]) + np.linalg.norm(c[2] - c[3])) / 2
    h = (np.linalg.norm(c[3] - c[0]) + np.linalg.norm(c[2] - c[1])) / 2
    return max(1, round(w)), max(1, round(h))


def build_maps(
    size: tuple[int, int],
    camera: CameraModel | None = None,
    corners: list[list[float]] | None = None,
    roi: list[int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Lookup tables for ``cv2.remap``: output pixel -> source (distorted camera) pixel.

    The region (``corners`` or ``roi``) is given in undistorted image coordinates when
    a camera model is given, else in camera pixels. ``size`` is the output (w, h).
    """
    w, h = size
    if corners is not None:
        inv = np.linalg.inv(homography_to(corners, size))
    else:
        x0, y0 = (roi[0], roi[1]) if roi else (0, 0)
        inv = np.array([[1, 0, x0], [0, 1, y0], [0, 0, 1]], dtype=np.float64)
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    pts = np.stack([u.ravel(), v.ravel(), np.ones(u.size)])
    und = inv @ pts
    und = und[:2] / und[2]
    if camera is not None:
        k = camera.matrix
        xn = (und[0] - k[0, 2]) / k[0, 0]
        yn = (und[1] - k[1, 2]) / k[1, 1]
        obj = np.stack([xn, yn, np.ones_like(xn)], axis=1).reshape(-1, 1, 3)
        src, _ = cv2.projectPoints(obj, np.zeros(3), np.zeros(3), k, camera.dist)
        src = src.reshape(-1, 2).T
    else:
        src = und
    mapx = src[0].reshape(h, w).astype(np.float32)
    mapy = src[1].reshape(h, w).astype(np.float32)
    return cv2.convertMaps(mapx, mapy, cv2.CV_16SC2)
