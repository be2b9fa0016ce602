"""The one preprocessing function: shapes, colour orders, ROI, bit depth."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from inspector.contract.preprocess import FrameError, PreprocessSpec, preprocess


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


def test_roi_outside_frame_is_a_frame_error():
    with pytest.raises(FrameError, match="outside"):
        preprocess(np.zeros((50, 50), np.uint8), PreprocessSpec(size=(8, 8), roi=(40, 40, 20, 20)))


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
