"""The one preprocessing function: camera frame -> model input.

Training (``training/``) and the line runtime both call ``preprocess``; there is no
second implementation anywhere. Steps, always in this order:

1. 16-bit frames to 8 bits by the source's ``bit_depth`` (a 12-bit sensor's 0..4095 ->
   0..255; default 16: the top 8 bits);
2. geometry: the calibration remap (undistort + perspective, one ``cv2.remap``) when
   the station has one, else the ROI crop. A frame of another size than the geometry was
   built for raises ``GeometryMismatch`` (one shape comparison, before any pixel is read);
3. resize to the model's input size with the manifest's interpolation;
4. colour conversion to the model's channel order;
5. ``uint8`` out. Scaling and normalisation live inside the model graph.

The station's part (geometry, bit depth) is a ``FrameSetup``: recorder sidecars and model
manifests carry it, so training prepares a recorded frame exactly as the station did.

Example::

    spec = PreprocessSpec(size=(64, 64), color="gray")
    x = preprocess(cv2.imread("part.png"), spec)   # (64, 64, 1) uint8
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import cv2
import numpy as np

from .geometry import BIT_DEPTHS, FrameSetup, Geometry

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
    bit_depth: int | None = None  # significant bits of 16-bit frames (None: 16)
    geometry: Geometry | None = None  # where roi / remap come from (built from it when given)
    # (w, h) a frame must have (a calibration), or at least have (the region the maps sample)
    _exact: tuple[int, int] | None = field(default=None, init=False, repr=False, compare=False)
    _least: tuple[int, int] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.color not in CHANNELS:
            raise ValueError(f"unknown colour order {self.color!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"unknown interpolation {self.interpolation!r}")
        if self.bit_depth is not None and self.bit_depth not in BIT_DEPTHS:
            raise ValueError(f"bit_depth {self.bit_depth!r} is not one of {list(BIT_DEPTHS)}")
        g = self.geometry
        if g is None and self.roi is not None and self.remap is None:
            g = Geometry(roi=self.roi)
        if g is not None and g.empty:
            g = None
        object.__setattr__(self, "geometry", g)
        if g is not None and self.remap is None:
            object.__setattr__(self, "remap", g.maps())
            object.__setattr__(self, "roi", g.roi if self.remap is None else None)
        if self.remap is not None:
            object.__setattr__(self, "_exact", g.frame_size if g is not None else None)
            cells = self.remap[0].reshape(-1, 2)  # CV_16SC2: the integer part of each source point
            least = (int(cells[:, 0].max()) + 1, int(cells[:, 1].max()) + 1)
            object.__setattr__(self, "_least", least)

    def setup(self) -> FrameSetup | None:
        """The station's part of this spec (geometry, bit depth); None when it was given as
        bare remap tables, which no sidecar or manifest can describe."""
        if self.remap is not None and self.geometry is None:
            return None
        return FrameSetup(self.geometry or Geometry(), self.bit_depth)

    @property
    def shape(self) -> tuple[int, int, int]:
        """The model input shape for one image: (height, width, channels)."""
        return (self.size[1], self.size[0], CHANNELS[self.color])


def setup_of_record(record: dict) -> FrameSetup | None:
    """The frame setup (geometry, bit depth) a recorder sidecar names under ``preprocess``;
    None when it names none (a sidecar from before setups were recorded). ValueError when
    the block is malformed."""
    if not isinstance(record, dict) or "preprocess" not in record:
        return None
    return FrameSetup.from_dict(record["preprocess"])


def spec_with(spec: PreprocessSpec, setup: FrameSetup) -> PreprocessSpec:
    """``spec`` (size, colour, interpolation) with this frame setup."""
    geometry = None if setup.geometry.empty else setup.geometry
    return dataclasses.replace(
        spec, roi=None, remap=None, geometry=geometry, bit_depth=setup.bit_depth
    )


def spec_from_record(record: dict, spec: PreprocessSpec) -> PreprocessSpec:
    """The spec that prepares a recorded frame exactly as its station did: the model's size,
    colour and interpolation from ``spec``, the geometry and bit depth from the sidecar
    ``record``; one that names no setup gets the whole frame. ValueError on a bad block."""
    return spec_with(spec, setup_of_record(record) or FrameSetup())


def preprocess(
    image: np.ndarray, spec: PreprocessSpec, out: np.ndarray | None = None
) -> np.ndarray:
    """Turn a camera frame (gray, BGR or BGRA; uint8 or uint16) into the model's uint8 input.

    ``out``, when given, is a preallocated (H, W, C) uint8 array that receives the result.
    Raises ``GeometryMismatch`` when the frame's size is not the one the geometry was built
    for, and ``FrameError`` for any other frame it cannot use.
    """
    if image is None or not isinstance(image, np.ndarray) or image.size == 0:
        raise FrameError("empty frame")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise FrameError(f"unsupported frame shape {image.shape}")
    if image.dtype != np.uint8 or spec.bit_depth not in (None, 8):
        image = _to_8_bits(image, spec.bit_depth)
    if spec.remap is not None:
        _check_size(image.shape, spec)
        image = cv2.remap(image, spec.remap[0], spec.remap[1], cv2.INTER_LINEAR)
    elif spec.roi is not None:
        x, y, w, h = spec.roi
        if x + w > image.shape[1] or y + h > image.shape[0]:
            raise GeometryMismatch(
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


def _to_8_bits(image: np.ndarray, bit_depth: int | None) -> np.ndarray:
    """uint16 frames scaled by their significant bits (the top 8 of them are kept)."""
    if image.dtype == np.uint8:
        if bit_depth in (None, 8):
            return image
        raise FrameError(f"an 8-bit frame, but the source's bit_depth is {bit_depth}")
    if image.dtype != np.uint16:
        raise FrameError(f"unsupported pixel type {image.dtype}")
    shift = (bit_depth or 16) - 8
    scaled = image >> shift
    if shift < 8:  # values above the stated depth (hot pixels, a wrong setting) saturate
        np.minimum(scaled, 255, out=scaled)
    return scaled.astype(np.uint8)


def _check_size(shape: tuple[int, ...], spec: PreprocessSpec) -> None:
    """The remap samples where the geometry says; a frame of another size would be sampled
    outside itself (black) without a word. Shape comparisons only."""
    height, width = shape[0], shape[1]
    exact, least = spec._exact, spec._least
    if exact is not None and (width != exact[0] or height != exact[1]):
        raise GeometryMismatch(
            f"the frame is {width}x{height}, but the camera calibration is for "
            f"{exact[0]}x{exact[1]} frames"
        )
    if least is not None and (width < least[0] or height < least[1]):
        raise GeometryMismatch(
            f"the {width}x{height} frame is smaller than the region the station's corners "
            f"sample (at least {least[0]}x{least[1]})"
        )


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
