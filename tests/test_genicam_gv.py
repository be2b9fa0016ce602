"""The genicam source against a real GigE Vision camera process (Aravis' fake on 127.0.0.1):
software triggers, frame ids across the 16-bit wrap, packet loss, a killed camera."""

from __future__ import annotations

import threading
import time

import pytest

from inspector.station.sources import SourceRunner

from . import genicam_camera
from .waiting import wait


@pytest.fixture
def gv_camera():
    yield from genicam_camera.cameras()


def _source(serial: str, **kw):
    from inspector.station.genicam import GenicamSource
    from inspector.station.genicam_config import GenicamSourceConfig

    return GenicamSource(GenicamSourceConfig(serial=serial, **kw))


def _read_for(src, seconds: float, n: int | None = None) -> list:
    frames, end = [], time.monotonic() + seconds
    while time.monotonic() < end and (n is None or len(frames) < n):
        f = src.read()
        if f is not None:
            frames.append(f)
    return frames


def test_software_triggers_are_answered_one_frame_each_and_nothing_without(gv_camera):
    from inspector.station.genicam_config import CameraTrigger

    gv_camera("GVTRIG")
    src = _source("GVTRIG", region=[0, 0, 64, 64], trigger=CameraTrigger(mode="software"))
    src.open()
    try:
        assert _read_for(src, 0.6) == []  # a triggered camera waits for its parts
        frames = []
        for _ in range(6):
            sent = src.fire()
            assert sent is not None
            frames += _read_for(src, 1.0, n=1)  # the fake polls triggers at 25 Hz: no latency
        frames += _read_for(src, 0.3)
    finally:
        src.close()
    assert len(frames) == 6 and all(f.complete and f.image.shape == (64, 64) for f in frames)
    ids = [f.frame_id for f in frames]
    assert all(b == a % 65535 + 1 for a, b in zip(ids, ids[1:], strict=False)), ids
    assert src.stats()["triggers"] == 6 and src.stats()["frames"] == 6


def test_frame_ids_cross_the_16_bit_wrap_without_a_lost_frame(gv_camera):
    from inspector.station.genicam_config import CameraTrigger

    gv_camera("GVWRAP")
    src = _source("GVWRAP", region=[0, 0, 32, 32], trigger=CameraTrigger(frame_rate=100))
    src.open()
    try:
        frames = []
        end = time.monotonic() + 15
        while time.monotonic() < end and not any(f.frame_id == 2 for f in frames):
            frames += _read_for(src, 0.2)  # the fake starts near 65400: it wraps in ~1.5 s
    finally:
        src.close()
    ids = [f.frame_id for f in frames]
    assert 65535 in ids and ids[ids.index(65535) + 1] == 1, ids[-20:]
    assert all(f.complete and f.error == "" for f in frames)
    assert src.stats()["frame_id_restarts"] == 0 and "lost" not in src.stats()


def test_packet_loss_gives_incomplete_frames_with_a_reason_never_an_image(gv_camera):
    from inspector.station.genicam_config import CameraTransport, CameraTrigger

    gv_camera("GVLOSS", loss_per_thousand=20)
    src = _source(
        "GVLOSS",
        region=[0, 0, 64, 64],
        trigger=CameraTrigger(frame_rate=25),
        transport=CameraTransport(packet_resend=False),
    )
    src.open()
    try:
        frames = _read_for(src, 4.0)
    finally:
        src.close()
    broken = [f for f in frames if not f.complete]
    whole = [f for f in frames if f.complete]
    assert broken and whole, (len(broken), len(whole))
    for f in broken:
        assert f.image is None and f.error, f
        assert "packets were lost" in f.error or "never arrived" in f.error
    assert all(f.image is not None and f.image.shape == (64, 64) for f in whole)
    stats = src.stats()
    assert stats["stream_n_missing_packets"] > 0
    assert stats.get("incomplete", 0) + stats.get("lost", 0) == len(broken)


def test_a_killed_camera_is_found_again_after_it_restarts(gv_camera):
    from inspector.station.genicam_config import CameraTrigger

    cam = gv_camera("GVKILL")
    src = _source(
        "GVKILL",
        region=[0, 0, 32, 32],
        trigger=CameraTrigger(frame_rate=20),
        frame_timeout_s=1.0,
    )
    states: list[tuple[str, str]] = []
    runner = SourceRunner(src, 0.1, 0.5, on_state=lambda s, d: states.append((s, d)))
    stop = threading.Event()
    frames: list = []

    def pump():
        while not stop.is_set():
            f = runner.next(stop)
            if f is not None:
                frames.append(f)

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    try:
        wait(lambda: len(frames) >= 5, 10)
        cam.kill()
        assert wait(lambda: runner.state == "reconnecting", 8), states
        lost_at = len(frames)
        time.sleep(1.0)
        assert len(frames) == lost_at  # nothing comes from a dead camera
        cam.start()
        assert wait(lambda: len(frames) >= lost_at + 5, 20), (states, runner.detail)
    finally:
        stop.set()
        t.join(5)
        runner.close()
    assert runner.state == "stopped" and runner.reopens >= 1
    assert any(s == "reconnecting" for s, _ in states) and states[-1][0] == "ok"
    assert all(f.complete for f in frames[lost_at:])


def test_hardware_line_mode_arms_the_camera_and_waits_for_the_line(gv_camera):
    from inspector.station.genicam_config import CameraTrigger

    gv_camera("GVLINE")
    src = _source("GVLINE", region=[0, 0, 32, 32], trigger=CameraTrigger(mode="line", line="Line0"))
    src.open()
    try:
        dev = src.camera.get_device()
        armed = {n: dev.get_string_feature_value(n) for n in ("TriggerMode", "TriggerSource")}
        assert armed == {"TriggerMode": "On", "TriggerSource": "Line0"}
        assert _read_for(src, 1.5) == []  # no edge on the line, no frame; and not lost either
    finally:
        src.close()
