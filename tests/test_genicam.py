"""The genicam source: frame-id and clock logic by hand, and Aravis' in-process Fake camera
(features configured, frames grabbed, config errors that name the feature and its limit)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from inspector.contract.preprocess import PreprocessSpec, preprocess
from inspector.errors import SourceError
from inspector.station.genicam_match import CameraClock, CameraFrame, FrameAssembler, id_steps


def _assembler(hold_s: float = 0.0):
    def make(image, t, t_mono, fid, cam_ns, error=""):
        return CameraFrame(image, t, t_mono, 0, f"frame {fid}", error, frame_id=fid,
                           camera_ts_ns=cam_ns, complete=image is not None)  # fmt: skip

    return FrameAssembler(make, hold_s)


IMG = np.zeros((2, 2), np.uint8)
BASE = 1_800_000_000_000_000_000


def _add(frames, fid: int, k: int, image=IMG) -> None:
    """Frame ``fid`` exposed k tenths of a second into the run, received 0.5 ms later."""
    frames.add(fid, BASE + k * 100_000_000, BASE + k * 100_000_000 + 500_000, image)


def test_frame_ids_wrap_from_65535_to_1_without_counting_a_loss():
    frames = _assembler()
    for k, fid in enumerate((65533, 65534, 65535, 1, 2)):
        _add(frames, fid, k)
    assert [f.frame_id for f in frames.take_all()] == [65533, 65534, 65535, 1, 2]
    assert "lost" not in frames.stats() and frames.stats()["frame_id_restarts"] == 0
    assert id_steps(65535, 1) == 1 and id_steps(65534, 1) == 2
    # 64-bit ids (GigE Vision 2, USB3 Vision) do not wrap
    assert id_steps(65535, 65536) == 1 and id_steps(70000, 70003) == 3


def test_an_old_frame_is_stale_and_a_camera_counting_again_is_a_restart():
    frames = _assembler()
    for k, fid in enumerate((100, 101, 102)):
        _add(frames, fid, k)
    _add(frames, 101, 3)  # never delivered as a new exposure
    assert frames.stats()["stale"] == 1
    _add(frames, 1, 4)  # the camera started again
    _add(frames, 2, 5)
    assert [f.frame_id for f in frames.take_all()] == [100, 101, 102, 1, 2]
    assert frames.stats()["frame_id_restarts"] == 1 and "lost" not in frames.stats()


def test_a_frame_that_comes_late_within_the_hold_takes_its_place_without_a_reject():
    frames = _assembler(hold_s=0.3)
    _add(frames, 10, 0)
    _add(frames, 12, 2)  # 11 is still on its way (resent packets)
    assert [f.frame_id for f in frames.take_all()] == [10]  # 12 waits for it
    assert frames.holding
    _add(frames, 11, 1)
    got = frames.take_all()
    assert [f.frame_id for f in got] == [11, 12] and all(f.image is not None for f in got)
    assert frames.stats()["late"] == 1 and "lost" not in frames.stats()
    # one that does not come within the hold is a reject, then the frames after it flow
    _add(frames, 14, 4)
    assert frames.take_all() == []
    time.sleep(0.35)
    got = frames.take_all()
    assert [(f.frame_id, f.image is None) for f in got] == [(13, True), (14, False)]
    _add(frames, 13, 3)  # too late: its place was given up
    assert frames.next() is None and frames.stats()["stale"] == 1


def test_clock_offset_is_the_fastest_frame_and_a_jump_starts_again():
    clock = CameraClock(window=8)
    offset = 1_700_000_000_000_000_000 - 5_000_000_000  # camera epoch: its own power-on
    transit = [400_000, 250_000, 900_000, 300_000]  # ns from exposure to the host's receive
    for k, d in enumerate(transit):
        cam = 5_000_000_000 + k * 20_000_000
        t = clock.to_host(cam, cam + offset + d)
    # the estimate is the shortest transit: the frame's time is off by at most 0.25 ms
    assert abs(t - (cam + offset) / 1e9) <= 0.00026
    assert clock.jitter_s == pytest.approx(0.00005, abs=1e-6)
    clock.update(9_000_000_000, 9_000_000_000 + offset + 2_000_000_000)  # camera clock reset
    assert clock.jumps == 1 and clock.offset_ns == offset + 2_000_000_000


# -- Aravis' in-process Fake camera ---------------------------------------------------------
def _aravis():
    try:
        from inspector.station.genicam_features import aravis

        return aravis()
    except SourceError as exc:
        pytest.skip(str(exc))


def _fake(**kw):
    from inspector.station.genicam import GenicamSource
    from inspector.station.genicam_config import GenicamSourceConfig

    _aravis()
    return GenicamSource(GenicamSourceConfig(serial="1", model="Fake", fake=True, **kw))


def _grab(src, n, timeout=5.0):
    frames, end = [], time.monotonic() + timeout
    while len(frames) < n and time.monotonic() < end:
        f = src.read()
        if f is not None:
            frames.append(f)
    return frames


def test_fake_camera_takes_the_configured_features_and_frames_go_through_preprocess():
    from inspector.station.genicam_config import CameraTrigger

    src = _fake(
        pixel_format="Mono16",
        region=[8, 4, 64, 48],
        exposure_us=20000,
        features={"GainRaw": 3},
        trigger=CameraTrigger(frame_rate=50),
    )
    assert src.cfg.bit_depth == 16  # from the pixel format
    src.open()
    try:
        dev = src.camera.get_device()
        assert dev.get_integer_feature_value("GainRaw") == 3
        assert dev.get_float_feature_value("ExposureTimeAbs") == 20000
        assert dev.get_integer_feature_value("OffsetX") == 8
        frames = _grab(src, 4)
    finally:
        src.close()
    assert len(frames) == 4
    assert all(f.image.shape == (48, 64) and f.image.dtype == np.uint16 for f in frames)
    assert all(f.complete and not f.error for f in frames)
    ids = [f.frame_id for f in frames]
    assert all(b in (a + 1, 1) for a, b in zip(ids, ids[1:], strict=False))
    # the camera's time on the host clock: just now, in order
    assert all(abs(f.t_capture - time.time()) < 2 for f in frames)
    assert [f.t_capture for f in frames] == sorted(f.t_capture for f in frames)
    spec = PreprocessSpec(size=(32, 32), color="gray", bit_depth=src.cfg.bit_depth)
    out = preprocess(frames[-1].image, spec)
    assert out.dtype == np.uint8 and out.shape[:2] == (32, 32)
    expect = (frames[-1].image[:, :].astype(np.float64) / 257).mean()  # 16 bits -> 8
    assert abs(float(out.mean()) - expect) < 3


def test_a_bayer_camera_gives_colour_frames():
    src = _fake(pixel_format="BayerRG8", region=[0, 0, 32, 16])
    src.open()
    try:
        frames = _grab(src, 1)
    finally:
        src.close()
    assert frames[0].image.shape == (16, 32, 3) and frames[0].image.dtype == np.uint8


@pytest.mark.parametrize(
    "settings, said",
    [
        (
            {"exposure_us": 1},
            "source.exposure_us: ExposureTimeAbs 1 is outside the camera's limits 10..10000000",
        ),
        (
            {"features": {"GainRaw": 500}},
            "source.features.GainRaw: GainRaw 500 is outside the camera's limits 0..10",
        ),
        (
            {"region": [0, 0, 4096, 64]},
            "source.region: Width 4096 is outside the camera's limits 1..2048",
        ),
        (
            {"features": {"Shutter": 3}},
            "source.features.Shutter: the camera has no feature 'Shutter'",
        ),
        (
            {"pixel_format": "Mono12"},
            "source.pixel_format: PixelFormat 'Mono12' is not offered "
            "by the camera (one of BayerBG8",
        ),
        ({"features": {"DeviceModelName": "x"}}, "DeviceModelName is read-only"),
    ],
)
def test_config_errors_name_the_key_the_feature_and_the_cameras_limit(settings, said):
    from inspector.station.genicam_features import CameraConfigError

    src = _fake(**settings)
    with pytest.raises(CameraConfigError) as err:
        src.open()
    assert str(err.value).startswith(said) or said in str(err.value), str(err.value)
    assert src.camera is None  # closed again: the runner retries from scratch


def test_a_hardware_line_the_camera_does_not_have_is_named_with_the_ones_it_has():
    from inspector.station.genicam_config import CameraTrigger
    from inspector.station.genicam_features import CameraConfigError

    src = _fake(trigger=CameraTrigger(mode="line", line="Line1"))
    with pytest.raises(
        CameraConfigError,
        match=r"source.trigger.line: TriggerSource 'Line1' "
        r"is not offered by the camera \(one of Line0, Software\)",
    ):
        src.open()
    src = _fake(trigger=CameraTrigger(mode="line", line="Line0", delay_us=10))
    with pytest.raises(
        CameraConfigError,
        match="source.trigger.delay_us: the camera has none "
        "of the features TriggerDelay, TriggerDelayAbs",
    ):
        src.open()


def test_no_camera_or_an_ambiguous_choice_lists_what_was_found():
    from inspector.station.genicam import GenicamSource
    from inspector.station.genicam_config import GenicamSourceConfig

    _aravis()
    with pytest.raises(
        SourceError,
        match=r"no GenICam camera with serial NOPE \(found: .*"
        r"Aravis Fake serial 1",
    ):
        GenicamSource(GenicamSourceConfig(serial="NOPE", fake=True)).open()


def test_station_config_checks_pixel_format_and_derives_bit_depth(tmp_path):
    from inspector.station.genicam_config import GenicamSourceConfig

    assert GenicamSourceConfig(pixel_format="Mono12").bit_depth == 12
    assert GenicamSourceConfig(pixel_format="Mono8").bit_depth == 8
    problems = dict(GenicamSourceConfig(pixel_format="Mono12p").problems())
    assert "not one the station decodes" in problems["pixel_format"]
    assert "Mono12" in problems["pixel_format"]
    problems = dict(GenicamSourceConfig(pixel_format="Mono12", bit_depth=10).problems())
    assert problems["bit_depth"] == "Mono12 frames have 12 bits"


def test_frames_that_never_arrived_become_rejects_just_before_the_next_frame():
    frames = _assembler()
    for fid, k in ((65534, 0), (65535, 1), (3, 4)):  # 1 and 2 vanished across the wrap
        _add(frames, fid, k)
    got = frames.take_all()
    assert [f.frame_id for f in got] == [65534, 65535, 1, 2, 3]
    assert [f.image is None for f in got] == [False, False, True, True, False]
    assert "camera frame 1 never arrived" in got[2].error and not got[2].complete
    assert got[4].lost_before == 2 and got[4].complete
    # in time order, the rejects just before the frame after them: a part waiting for frame 1
    # takes its reject, not frame 3
    times = [f.t_capture for f in got]
    assert times == sorted(times) and got[4].t_capture - got[2].t_capture < 1e-5
    _add(frames, 2, 2)  # a frame older than one delivered: dropped, counted
    assert frames.next() is None and frames.stats()["stale"] == 1
    assert frames.stats()["lost"] == 2 and frames.stats()["frames"] == 3
