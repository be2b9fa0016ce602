"""Station geometry for the preprocessing function: undistortion and perspective in one remap.

``calibration/`` measures the camera (``camera.yaml``); the station config names that
file and the part's region: a rectangle, or four corner points (top-left, top-right,
bottom-right, bottom-left) mapped to a fixed output size. ``build_maps`` turns both into
one pair of lookup tables, built once, so each frame costs a single ``cv2.remap``.

``Geometry`` holds that description (with the camera file's numbers) and ``FrameSetup``
adds the pixels' bit depth: the station's part of preprocessing, which travels with the
data (recorder sidecars, model manifests) so that training applies the same.
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


BIT_DEPTHS = (8, 10, 12, 14, 16)


@dataclass(frozen=True, eq=False)
class Geometry:
    """Where the part lies in the camera frame: a ROI, or four corners warped to
    ``warp_size``, optionally through a camera calibration (undistortion).

    Built from the station config, or from the JSON that recorder sidecars and model
    manifests carry (``to_dict`` / ``from_dict``: the camera file's numbers travel, not its
    path), so training rebuilds exactly the remap the station uses. Two geometries are equal
    when their JSON is. Constructing one is cheap; ``maps()`` builds the remap tables.

    Example::

        g = Geometry(corners=[[10, 5], [90, 8], [88, 60], [12, 58]], warp_size=(64, 48))
        spec = PreprocessSpec(size=(32, 32), geometry=g)
    """

    roi: tuple[int, int, int, int] | None = None  # x, y, width, height
    corners: tuple[tuple[float, float], ...] | None = None  # TL, TR, BR, BL
    warp_size: tuple[int, int] | None = None  # corners only; default: their edge lengths
    camera: CameraModel | None = None

    def __post_init__(self) -> None:
        try:
            roi = None if self.roi is None else tuple(int(v) for v in self.roi)
            if roi is not None and (len(roi) != 4 or min(roi[:2]) < 0 or min(roi[2:]) <= 0):
                raise ValueError
        except (TypeError, ValueError):
            raise ValueError("roi: must be [x, y, width, height], x, y >= 0, sizes > 0") from None
        try:
            corners = None
            if self.corners is not None:
                corners = tuple(tuple(float(c) for c in p) for p in self.corners)
                if len(corners) != 4 or any(len(p) != 2 for p in corners):
                    raise ValueError
        except (TypeError, ValueError):
            raise ValueError("corners: must be four [x, y] points (TL, TR, BR, BL)") from None
        if roi is not None and corners is not None:
            raise ValueError("corners: give roi or corners, not both")
        try:
            size = None if self.warp_size is None else tuple(int(v) for v in self.warp_size)
            if size is not None and (corners is None or len(size) != 2 or min(size) <= 0):
                raise ValueError
        except (TypeError, ValueError):
            raise ValueError("warp_size: [width, height], both > 0, only with corners") from None
        if corners is not None and size is None:
            size = corners_size([list(p) for p in corners])
        object.__setattr__(self, "roi", roi)
        object.__setattr__(self, "corners", corners)
        object.__setattr__(self, "warp_size", size)
        problems = self._outside(self.camera.image_size) if self.camera is not None else []
        if problems:
            raise ValueError("; ".join(problems))

    def _outside(self, frame: tuple[int, int]) -> list[str]:
        """Corners or ROI that lie outside a frame of ``frame`` (w, h) pixels."""
        w, h = frame
        where = f"the {w}x{h} frame of the camera calibration"
        if self.corners is not None:
            bad = [list(p) for p in self.corners if not (0 <= p[0] <= w and 0 <= p[1] <= h)]
            if bad:
                return [f"corners: {bad} lie outside {where}"]
        if self.roi is not None:
            x, y, rw, rh = self.roi
            if x + rw > w or y + rh > h:
                return [f"roi: {list(self.roi)} lies outside {where}"]
        return []

    @property
    def empty(self) -> bool:
        """No geometry: the whole frame goes to the resize."""
        return self.roi is None and self.corners is None and self.camera is None

    @property
    def needs_remap(self) -> bool:
        return self.corners is not None or self.camera is not None

    @property
    def output_size(self) -> tuple[int, int] | None:
        """(w, h) of the region handed to the resize; None: the frame's own size."""
        if self.corners is not None:
            return self.warp_size
        if self.roi is not None:
            return self.roi[2], self.roi[3]
        return self.camera.image_size if self.camera is not None else None

    @property
    def frame_size(self) -> tuple[int, int] | None:
        """(w, h) every frame must have: the calibrated size (None without a camera)."""
        return self.camera.image_size if self.camera is not None else None

    def maps(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The remap tables (None when a plain ROI crop, or nothing, does)."""
        if not self.needs_remap:
            return None
        corners = [list(p) for p in self.corners] if self.corners is not None else None
        roi = list(self.roi) if self.roi is not None else None
        return build_maps(self.output_size, self.camera, corners=corners, roi=roi)

    def to_dict(self) -> dict:
        out: dict = {}
        if self.roi is not None:
            out["roi"] = list(self.roi)
        if self.corners is not None:
            out["corners"] = [list(p) for p in self.corners]
            out["warp_size"] = list(self.warp_size)
        if self.camera is not None:
            out["camera"] = {
                "matrix": self.camera.matrix.tolist(),
                "dist": self.camera.dist.tolist(),
                "image_size": list(self.camera.image_size),
            }
        return out

    @classmethod
    def from_dict(cls, data: dict) -> Geometry:
        """The inverse of ``to_dict``; ValueError names what is wrong."""
        if not isinstance(data, dict):
            raise ValueError("geometry: expected a JSON object")
        unknown = set(data) - {"roi", "corners", "warp_size", "camera"}
        if unknown:
            raise ValueError(f"geometry: unknown keys {sorted(unknown)}")
        camera = None
        if data.get("camera") is not None:
            c = data["camera"]
            try:
                matrix = np.array(c["matrix"], dtype=np.float64)
                dist = np.array(c["dist"], dtype=np.float64).ravel()
                w, h = (int(v) for v in c["image_size"])
                if matrix.shape != (3, 3) or dist.size < 4 or w <= 0 or h <= 0:
                    raise ValueError
            except (KeyError, TypeError, ValueError):
                raise ValueError(
                    "geometry.camera: needs matrix (3x3), dist and image_size [w, h]"
                ) from None
            camera = CameraModel(matrix, dist, (w, h))
        try:
            return cls(data.get("roi"), data.get("corners"), data.get("warp_size"), camera)
        except ValueError as exc:
            raise ValueError(f"geometry.{exc}") from None

    def describe(self) -> str:
        parts = []
        if self.roi is not None:
            parts.append(f"roi {list(self.roi)}")
        if self.corners is not None:
            corners = [[round(v, 1) for v in p] for p in self.corners]
            parts.append(f"corners {corners} -> {self.warp_size[0]}x{self.warp_size[1]}")
        if self.camera is not None:
            k = self.camera.matrix
            w, h = self.camera.image_size
            parts.append(
                f"camera {w}x{h} (fx {k[0, 0]:.1f} fy {k[1, 1]:.1f} cx {k[0, 2]:.1f} "
                f"cy {k[1, 2]:.1f}, dist {np.round(self.camera.dist[:5], 4).tolist()})"
            )
        return ", ".join(parts) or "the whole frame"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Geometry) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(repr(self.to_dict()))


@dataclass(frozen=True, eq=False)
class FrameSetup:
    """What the station does to a raw frame before the model's resize and colour: its
    geometry and the bit depth of its pixels (None: as the data says, 8 for ``uint8`` and
    16 for ``uint16``).

    Recorder sidecars carry it as JSON under ``preprocess`` and model manifests inside their
    ``preprocess`` section (``to_dict``: ``{"geometry": {...}, "bit_depth": ...}``), so that
    training prepares a recorded frame exactly as the station did, and ``inspector check``
    can refuse a station whose setup differs from its model's.
    """

    geometry: Geometry = Geometry()
    bit_depth: int | None = None

    def __post_init__(self) -> None:
        if self.bit_depth is not None and self.bit_depth not in BIT_DEPTHS:
            raise ValueError(f"bit_depth: {self.bit_depth!r} is not one of {list(BIT_DEPTHS)}")

    @property
    def plain(self) -> bool:
        """Whole frames, bit depth from the data: what a folder of ordinary images gets."""
        return self.geometry.empty and self.bit_depth is None

    def to_dict(self) -> dict:
        return {"geometry": self.geometry.to_dict(), "bit_depth": self.bit_depth}

    @classmethod
    def from_dict(cls, data: dict) -> FrameSetup:
        if not isinstance(data, dict) or not isinstance(data.get("geometry"), dict):
            raise ValueError("expected {'geometry': {...}, 'bit_depth': ...}")
        depth = data.get("bit_depth")
        if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int)):
            raise ValueError(f"bit_depth: {depth!r} is not one of {list(BIT_DEPTHS)}")
        return cls(Geometry.from_dict(data["geometry"]), depth)

    def describe(self) -> str:
        depth = f"{self.bit_depth}-bit pixels" if self.bit_depth else "bit depth from the data"
        return f"{self.geometry.describe()}, {depth}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FrameSetup) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(repr(self.to_dict()))
