"""The one preprocessing function: camera frame -> model input.

Training (``training/``) and the line runtime both call ``preprocess``; there is no
second implementation anywhere. Steps, always in this order:

1. geometry: the calibration remap (undistort + perspective, one ``cv2.remap``) when
   the station has one, else the ROI crop;
2. resize to the model's input size with the manifest's interpolation;
3. colour conversion to the model's channel order;
4. ``uint8`` out. Scaling and normalisation live inside the model graph.

Example::

    spec = PreprocessSpec(size=(64, 64), color="gray")
    x = preprocess(cv2.imread("part.png"), spec)   # (64, 64, 1) uint8
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

INTERPOLATIONS = {
    "area": cv2.INTER_AREA,
    "linear": cv2.INTER_LINEAR,
    "nearest": cv2.INTER_NEAREST,
    "cubic": cv2.INTER_CUBIC,
}
CHANNELS = {"gray": 1, "rgb": 3, "bgr": 3}


class FrameError(ValueError):
    """The frame cannot be turned into a model input (wrong dtype, ROI outside it …)."""


class GeometryMismatch(FrameError):
    """The frame's size is not the one the station's geometry (ROI, corners, calibration) was
    built for: the part fails as ``unreadable_frame`` and the station reports ``degraded``."""


@dataclass(frozen=True)
class PreprocessSpec:
    size: tuple[int, int]  # (width, height) of the model input
    color: str = "gray"  # channel order the model expects: gray | rgb | bgr
    interpolation: str = "area"
    roi: tuple[int, int, int, int] | None = None  # x, y, width, height in the camera frame
    remap: tuple[np.ndarray, np.ndarray] | None = None  # calibration maps; replaces roi

    def __post_init__(self) -> None:
        if self.color not in CHANNELS:
            raise ValueError(f"unknown colour order {self.color!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"unknown interpolation {self.interpolation!r}")

    @property
    def shape(self) -> tuple[int, int, int]:
        """The model input shape for one image: (height, width, channels)."""
        return (self.size[1], self.size[0], CHANNELS[self.color])


def preprocess(
    image: np.ndarray, spec: PreprocessSpec, out: np.ndarray | None = None
) -> np.ndarray:
    """Turn a camera frame (gray, BGR or BGRA, uint8) into the model's uint8 input.

    ``out``, when given, is a preallocated (H, W, C) uint8 array that receives the result.
    """
    if image is None or not isinstance(image, np.ndarray) or image.size == 0:
        raise FrameError("empty frame")
    if image.dtype != np.uint8:
        if image.dtype == np.uint16:  # 16-bit cameras and TIFFs: keep the top 8 bits
            image = (image >> 8).astype(np.uint8)
        else:
            raise FrameError(f"unsupported pixel type {image.dtype}")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise FrameError(f"unsupported frame shape {image.shape}")
    if spec.remap is not None:
        image = cv2.remap(image, spec.remap[0], spec.remap[1], cv2.INTER_LINEAR)
    elif spec.roi is not None:
        x, y, w, h = spec.roi
        if x + w > image.shape[1] or y + h > image.shape[0]:
            raise FrameError(
                f"ROI {list(spec.roi)} lies outside the {image.shape[1]}x{image.shape[0]} frame"
            )
        image = image[y : y + h, x : x + w]
    width, height = spec.size
    if image.shape[1] != width or image.shape[0] != height:
        image = cv2.resize(image, (width, height), interpolation=INTERPOLATIONS[spec.interpolation])
    image = _convert_colour(image, spec.color)
    if out is None:
        return np.ascontiguousarray(image)
    out[...] = image
    return out


def _convert_colour(image: np.ndarray, color: str) -> np.ndarray:
    channels = 1 if image.ndim == 2 else image.shape[2]
    if color == "gray":
        if channels == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        elif channels == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
        return image.reshape(image.shape[0], image.shape[1], 1)
    if channels == 1:
        code = cv2.COLOR_GRAY2RGB if color == "rgb" else cv2.COLOR_GRAY2BGR
    elif channels == 4:
        code = cv2.COLOR_BGRA2RGB if color == "rgb" else cv2.COLOR_BGRA2BGR
    else:
        if color == "bgr":
            return image
        code = cv2.COLOR_BGR2RGB
    return cv2.cvtColor(image, code)
