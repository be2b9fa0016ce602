"""Camera intrinsics, distortion and pixel size from checkerboard photos.

    inspector calibrate camera IMAGES_DIR --board 9x6 --square-mm 10 --out camera.yaml

``--board`` counts inner corners (columns x rows). Corners are refined to sub-pixel
accuracy; photos where the board is not found are listed and skipped. The result has
the RMS reprojection error overall and per photo, a warning when the photos cover the
frame poorly, and the pixel size (mm per pixel) at the part plane, taken from the photo
of the board lying where the parts pass (``--plane-image``, default: the first photo).
"""

from __future__ import annotations

import datetime as _dt
import logging
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import yaml

from inspector.errors import InspectorError
from inspector.station.sources import IMAGE_SUFFIXES

log = logging.getLogger(__name__)
SUBPIX_CRITERIA = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 100, 1e-4)


class CalibrationError(InspectorError):
    """The photos cannot give a calibration (no board found, no images …)."""

    exit_code = 2


@dataclass
class CameraCalibration:
    camera_matrix: np.ndarray
    dist_coeffs: np.ndarray
    image_size: tuple[int, int]
    rms_px: float
    per_image_rms: dict[str, float]
    mm_per_px: float
    plane_image: str
    board: tuple[int, int]
    square_mm: float
    skipped: list[str] = field(default_factory=list)
    coverage: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def to_yaml(self) -> str:
        data = {
            "camera_matrix": self.camera_matrix.round(6).tolist(),
            "dist_coeffs": self.dist_coeffs.ravel().round(8).tolist(),
            "image_size": list(self.image_size),
            "rms_px": round(float(self.rms_px), 4),
            "mm_per_px": round(float(self.mm_per_px), 6),
            "per_image_rms_px": {k: round(float(v), 4) for k, v in self.per_image_rms.items()},
            "plane_image": self.plane_image,
            "board": {"inner_corners": list(self.board), "square_mm": self.square_mm},
            "coverage": round(self.coverage, 3),
            "skipped": self.skipped,
            "warnings": self.warnings,
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        return yaml.safe_dump(data, sort_keys=False)


def parse_board(text: str) -> tuple[int, int]:
    try:
        cols, rows = (int(v) for v in text.lower().split("x"))
        if cols < 2 or rows < 2:
            raise ValueError
    except ValueError:
        raise CalibrationError(
            f"--board: expected COLSxROWS inner corners such as 9x6, got {text!r}"
        ) from None
    return cols, rows


def list_images(folder: Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise CalibrationError(f"{folder}: folder not found")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise CalibrationError(f"{folder}: no images (.png .jpg .bmp .tif)")
    return files


def find_corners(gray: np.ndarray, board: tuple[int, int]) -> np.ndarray | None:
    flags = cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE
    found, corners = cv2.findChessboardCorners(gray, board, flags)
    if not found:
        return None
    refined = cv2.cornerSubPix(gray, corners, (5, 5), (-1, -1), SUBPIX_CRITERIA)
    return refined.reshape(-1, 1, 2).astype(np.float32)


def calibrate_camera(
    folder: Path, board: tuple[int, int], square_mm: float, plane_image: str | None = None
) -> CameraCalibration:
    if square_mm <= 0:
        raise CalibrationError("--square-mm must be positive")
    files = list_images(folder)
    cols, rows = board
    obj = np.zeros((cols * rows, 3), np.float32)
    obj[:, :2] = np.mgrid[0:cols, 0:rows].T.reshape(-1, 2) * square_mm
    obj_pts, img_pts, names, skipped = [], [], [], []
    size = None
    for path in files:
        gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if gray is None:
            skipped.append(f"{path.name}: unreadable")
            continue
        if size is None:
            size = (gray.shape[1], gray.shape[0])
        elif (gray.shape[1], gray.shape[0]) != size:
            skipped.append(
                f"{path.name}: size {gray.shape[1]}x{gray.shape[0]} differs from {size[0]}x{size[1]}"
            )
            continue
        corners = find_corners(gray, board)
        if corners is None:
            skipped.append(f"{path.name}: board not found")
            continue
        obj_pts.append(obj)
        img_pts.append(corners)
        names.append(path.name)
    for line in skipped:
        log.info("skipped %s", line)
    if not names:
        raise CalibrationError(
            f"{folder}: no {cols}x{rows} board found in any of {len(files)} images "
            "(check --board: it counts inner corners)"
        )
    if len(names) < 3:
        raise CalibrationError(
            f"{folder}: the board was found in only {len(names)} images; take at least 10"
        )
    rms, k, dist, rvecs, tvecs = cv2.calibrateCamera(obj_pts, img_pts, size, None, None)
    per_image = {}
    for name, o, i, r, t in zip(names, obj_pts, img_pts, rvecs, tvecs, strict=True):
        proj, _ = cv2.projectPoints(o, r, t, k, dist)
        err = proj.reshape(-1, 2) - i.reshape(-1, 2)
        per_image[name] = float(np.sqrt(np.mean(np.sum(err**2, axis=1))))
    plane = plane_image or names[0]
    if plane not in names:
        raise CalibrationError(
            f"--plane-image: {plane} is not among the photos where the board was found"
        )
    mm_per_px = pixel_size(img_pts[names.index(plane)], board, square_mm, k, dist)
    coverage = frame_coverage(img_pts, size)
    warnings = []
    if coverage < 0.5:
        warnings.append(
            f"the board covers only {coverage:.0%} of the frame across all photos; "
            "add photos with the board near the edges and corners"
        )
    if len(names) < 10:
        warnings.append(f"only {len(names)} usable photos; 10 to 20 give a steadier result")
    for w in warnings:
        log.info("%s", w)
    return CameraCalibration(
        k,
        dist,
        size,
        float(rms),
        per_image,
        mm_per_px,
        plane,
        board,
        square_mm,
        skipped,
        coverage,
        warnings,
    )


def pixel_size(
    corners: np.ndarray, board: tuple[int, int], square_mm: float, k: np.ndarray, dist: np.ndarray
) -> float:
    """mm per pixel at the board's plane: square size over the median undistorted corner spacing."""
    cols, rows = board
    und = cv2.undistortPoints(corners, k, dist, P=k).reshape(rows, cols, 2)
    steps = np.concatenate(
        [
            np.linalg.norm(np.diff(und, axis=1), axis=2).ravel(),
            np.linalg.norm(np.diff(und, axis=0), axis=2).ravel(),
        ]
    )
    return float(square_mm / np.median(steps))


def frame_coverage(img_pts: list[np.ndarray], size: tuple[int, int], grid: int = 6) -> float:
    """Fraction of a grid x grid tiling of the frame touched by any board corner."""
    w, h = size
    hit = np.zeros((grid, grid), bool)
    for pts in img_pts:
        p = pts.reshape(-1, 2)
        gx = np.clip((p[:, 0] / w * grid).astype(int), 0, grid - 1)
        gy = np.clip((p[:, 1] / h * grid).astype(int), 0, grid - 1)
        hit[gy, gx] = True
    return float(hit.mean())
