"""Render checkerboard photos through a known camera (intrinsics + distortion), for tests."""

from __future__ import annotations

import cv2
import numpy as np

K = np.array([[800.0, 0, 330.0], [0, 790.0, 245.0], [0, 0, 1]])
DIST = np.array([-0.18, 0.06, 0.0008, -0.0006, 0.0])
SIZE = (640, 480)
BOARD = (9, 6)
SQUARE = 20.0


def render(
    rvec, tvec, k=K, dist=DIST, size=SIZE, board=BOARD, square=SQUARE, ss=2, rng=None
) -> np.ndarray:
    """A photo of the board at pose (rvec, tvec): exact inverse mapping, ss x ss supersampled."""
    w, h = size
    u = (np.arange(w * ss) + 0.5) / ss - 0.5
    v = (np.arange(h * ss) + 0.5) / ss - 0.5
    uu, vv = np.meshgrid(u, v)
    pts = np.stack([uu.ravel(), vv.ravel()], axis=1).reshape(-1, 1, 2)
    crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 40, 1e-9)
    norm = cv2.undistortPoints(pts, k, dist, None, None, None, crit).reshape(-1, 2)
    r, _ = cv2.Rodrigues(np.asarray(rvec, float))
    hom = np.column_stack([r[:, 0], r[:, 1], np.asarray(tvec, float).ravel()])
    plane = np.linalg.inv(hom) @ np.vstack([norm.T, np.ones(len(norm))])
    x, y = plane[0] / plane[2], plane[1] / plane[2]
    cols, rows = board
    ix, iy = np.floor(x / square), np.floor(y / square)
    on_board = (ix >= -1) & (ix <= cols - 1) & (iy >= -1) & (iy <= rows - 1)
    margin = (
        (x >= -2 * square)
        & (x <= (cols + 1) * square)
        & (y >= -2 * square)
        & (y <= (rows + 1) * square)
    )
    img = np.full(len(x), 90.0)
    img[margin] = 235.0
    dark = on_board & ((ix + iy) % 2 == 0)
    img[dark] = 25.0
    img = img.reshape(h, ss, w, ss).mean(axis=(1, 3))
    if rng is not None:
        img += rng.normal(0, 1.5, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def board_corners(rvec, tvec, k=K, dist=DIST, board=BOARD, square=SQUARE) -> np.ndarray:
    cols, rows = board
    obj = np.zeros((cols * rows, 3))
    obj[:, :2] = np.mgrid[0:cols, 0:rows].T.reshape(-1, 2) * square
    img, _ = cv2.projectPoints(obj, np.asarray(rvec, float), np.asarray(tvec, float), k, dist)
    return img.reshape(-1, 2)


def views(n: int, seed: int = 0, size=SIZE, board=BOARD, square=SQUARE):
    """n poses whose board (with its white margin) lies inside the frame, spread over it."""
    rng = np.random.default_rng(seed)
    w, h = size
    cols, rows = board
    out = []
    while len(out) < n:
        rvec = np.array(
            [rng.uniform(-0.45, 0.45), rng.uniform(-0.45, 0.45), rng.uniform(-0.3, 0.3)]
        )
        z = rng.uniform(330, 520)
        cx = rng.uniform(-0.22, 0.22) * z - (cols - 1) * square / 2
        cy = rng.uniform(-0.18, 0.18) * z - (rows - 1) * square / 2
        tvec = np.array([cx, cy, z])
        corners = (
            np.array([[-2, -2], [cols + 1, -2], [cols + 1, rows + 1], [-2, rows + 1]], float)
            * square
        )
        obj = np.column_stack([corners, np.zeros(4)])
        img, _ = cv2.projectPoints(obj, rvec, tvec, K, DIST)
        img = img.reshape(-1, 2)
        if (
            img[:, 0].min() > 5
            and img[:, 1].min() > 5
            and img[:, 0].max() < w - 5
            and img[:, 1].max() < h - 5
        ):
            out.append((rvec, tvec))
    return out
