"""The one preprocessing function: shapes, colour orders, ROI, bit depth."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from inspector.contract.geometry import CameraModel, Geometry
from inspector.contract.preprocess import FrameError, GeometryMismatch, PreprocessSpec, preprocess

K = np.array([[300.0, 0, 160.0], [0, 300.0, 120.0], [0, 0, 1]])
CAMERA = CameraModel(K, np.array([-0.1, 0.02, 0.0, 0.0]), (320, 240))


def test_gray_frame_to_gray_model_input():
    frame = np.arange(100 * 80, dtype=np.uint32).reshape(80, 100).astype(np.uint8)
    x = preprocess(frame, PreprocessSpec(size=(50, 40), color="gray"))
    assert x.shape == (40, 50, 1) and x.dtype == np.uint8
    expected = cv2.resize(frame, (50, 40), interpolation=cv2.INTER_AREA)
    assert np.array_equal(x[..., 0], expected)


def test_bgr_frame_to_rgb_swaps_channels():
    frame = np.zeros((10, 10, 3), np.uint8)
    frame[..., 0] = 200  # blue in OpenCV's BGR
    x = preprocess(frame, PreprocessSpec(size=(10, 10), color="rgb"))
    assert x[0, 0].tolist() == [0, 0, 200]
    assert preprocess(frame, PreprocessSpec(size=(10, 10), color="bgr"))[0, 0].tolist() == [
        200,
        0,
        0,
    ]


def test_gray_and_bgra_frames_feed_colour_models():
    gray = np.full((6, 6), 77, np.uint8)
    assert preprocess(gray, PreprocessSpec(size=(6, 6), color="rgb")).shape == (6, 6, 3)
    bgra = np.full((6, 6, 4), 9, np.uint8)
    assert preprocess(bgra, PreprocessSpec(size=(3, 3), color="gray")).shape == (3, 3, 1)


def test_roi_crop_happens_before_resize():
    frame = np.zeros((100, 100), np.uint8)
    frame[20:40, 30:70] = 255
    x = preprocess(frame, PreprocessSpec(size=(20, 10), color="gray", roi=(30, 20, 40, 20)))
    assert x.min() == 255  # only the bright window survives


def test_roi_outside_frame_is_a_geometry_mismatch():
    with pytest.raises(GeometryMismatch, match="outside"):
        preprocess(np.zeros((50, 50), np.uint8), PreprocessSpec(size=(8, 8), roi=(40, 40, 20, 20)))


def test_a_frame_of_another_size_than_the_calibration_is_refused_not_sampled_black():
    spec = PreprocessSpec(size=(32, 32), geometry=Geometry(camera=CAMERA))
    ok = np.full((240, 320), 200, np.uint8)
    assert preprocess(ok, spec).min() > 150  # undistorted, sampled inside the frame
    for shape in ((480, 640), (240, 300), (120, 160, 3)):
        with pytest.raises(GeometryMismatch, match="calibration is for 320x240 frames"):
            preprocess(np.full(shape, 200, np.uint8), spec)


def test_a_frame_smaller_than_the_corners_region_is_refused():
    corners = [[10, 10], [190, 12], [188, 140], [12, 138]]
    spec = PreprocessSpec(size=(16, 16), geometry=Geometry(corners=corners, warp_size=(90, 64)))
    assert preprocess(np.full((150, 200), 99, np.uint8), spec).min() == 99
    with pytest.raises(GeometryMismatch, match="smaller than the region"):
        preprocess(np.full((120, 160), 99, np.uint8), spec)  # would come out partly black


def test_corners_or_roi_outside_the_calibrated_frame_are_refused():
    with pytest.raises(ValueError, match=r"corners: \[\[330.0, 10.0\]\] lie outside the 320x240"):
        Geometry(corners=[[10, 10], [330, 10], [300, 200], [10, 200]], camera=CAMERA)
    with pytest.raises(ValueError, match="roi: .* lies outside the 320x240"):
        Geometry(roi=(100, 100, 300, 100), camera=CAMERA)


def test_16_bit_frames_are_scaled_by_their_bit_depth():
    twelve_bit = np.array([[0, 16, 2048, 4095], [4096, 65535, 1000, 15]], np.uint16)
    x = preprocess(twelve_bit, PreprocessSpec(size=(4, 2), interpolation="nearest", bit_depth=12))
    assert x[..., 0].tolist() == [[0, 1, 128, 255], [255, 255, 62, 0]]  # over 12 bits saturate
    ten_bit = np.full((4, 4), 1023, np.uint16)
    assert preprocess(ten_bit, PreprocessSpec(size=(4, 4), bit_depth=10)).min() == 255
    assert preprocess(ten_bit, PreprocessSpec(size=(4, 4))).max() == 3  # read as 16-bit data
    with pytest.raises(FrameError, match="8-bit frame, but the source's bit_depth is 12"):
        preprocess(np.zeros((4, 4), np.uint8), PreprocessSpec(size=(4, 4), bit_depth=12))
    with pytest.raises(ValueError, match="bit_depth 11"):
        PreprocessSpec(size=(4, 4), bit_depth=11)


def test_16_bit_frames_keep_top_bits_and_floats_are_refused():
    x = preprocess(np.full((4, 4), 0xAB00, np.uint16), PreprocessSpec(size=(4, 4)))
    assert int(x[0, 0, 0]) == 0xAB
    with pytest.raises(FrameError, match="pixel type"):
        preprocess(np.zeros((4, 4), np.float32), PreprocessSpec(size=(4, 4)))
    with pytest.raises(FrameError):
        preprocess(np.zeros((0, 0), np.uint8), PreprocessSpec(size=(4, 4)))


def test_output_buffer_is_filled_in_place():
    out = np.zeros((8, 8, 1), np.uint8)
    res = preprocess(np.full((16, 16), 5, np.uint8), PreprocessSpec(size=(8, 8)), out=out)
    assert res is out and out.min() == 5
