"""Frame sources: video files, streams through FFmpeg, cameras that aren't there, GStreamer."""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest

from inspector.errors import SourceError
from inspector.lab.modelkit import synthetic_part
from inspector.station.sources import (
    DeviceSourceConfig,
    FolderSourceConfig,
    SourceRunner,
    UrlSourceConfig,
    VideoSourceConfig,
    gstreamer_available,
    make_source,
)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "line.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (96, 96))
    rng = np.random.default_rng(0)
    for i in range(10):
        w.write(synthetic_part(rng, defect=i % 3 == 0, size=96, color=True))
    w.release()
    return path


def test_video_file_plays_to_the_end_or_loops(video):
    stop = threading.Event()
    runner = SourceRunner(make_source(VideoSourceConfig(path=video)))
    frames = []
    while (f := runner.next(stop)) is not None:
        frames.append(f)
    assert len(frames) == 10 and runner.state == "ended"
    assert frames[0].image.shape == (96, 96, 3)
    looped = SourceRunner(make_source(VideoSourceConfig(path=video, loop=True)))
    assert sum(looped.next(stop) is not None for _ in range(25)) == 25
    looped.close()


def test_url_source_reads_a_stream_through_ffmpeg(video):
    stop = threading.Event()
    runner = SourceRunner(make_source(UrlSourceConfig(url=str(video))))
    f = runner.next(stop)
    assert f is not None and f.image.shape == (96, 96, 3) and runner.state == "ok"
    runner.close()


def test_gstreamer_pipeline_without_gstreamer_says_how_to_get_it():
    source = make_source(UrlSourceConfig(pipeline="videotestsrc ! appsink"))
    if gstreamer_available():
        source.open()
        assert source.read().image is not None
        source.close()
        return
    with pytest.raises(SourceError, match="no GStreamer support.*deploy/README.md"):
        source.open()


def test_missing_camera_is_reported_and_retried_with_backoff():
    states = []
    runner = SourceRunner(
        make_source(DeviceSourceConfig(index=97)),
        initial_backoff_s=0.01,
        max_backoff_s=0.04,
        on_state=lambda s, d: states.append(s),
    )
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    assert runner.next(stop) is None
    assert states == ["reconnecting"] and "cannot open device 97" in runner.detail
    assert runner.backoff == 0.04


def test_folder_without_images_is_a_clear_error(tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(SourceError, match="no images"):
        make_source(FolderSourceConfig(path=tmp_path)).open()
    with pytest.raises(SourceError, match="not found"):
        make_source(FolderSourceConfig(path=tmp_path / "nope")).open()


def test_a_looping_folder_replay_decodes_each_image_once(tmp_path, monkeypatch):
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"p{i}.png"), np.full((8, 8), i * 50, np.uint8))
    reads = []
    real_imread = cv2.imread
    monkeypatch.setattr(cv2, "imread", lambda *a: reads.append(a[0]) or real_imread(*a))
    src = make_source(FolderSourceConfig(path=tmp_path, rate_fps=0))
    src.open()
    frames = [src.read() for _ in range(9)]  # three passes
    assert len(reads) == 3
    assert [int(f.image[0, 0]) for f in frames] == [0, 50, 100] * 3
    assert not frames[0].image.flags.writeable  # shared by every pass: nobody may change it
    with pytest.raises(ValueError):
        frames[3].image[0, 0] = 7
    # without the cache, every pass decodes again
    reads.clear()
    src = make_source(FolderSourceConfig(path=tmp_path, rate_fps=0, cache_mb=0))
    src.open()
    [src.read() for _ in range(6)]
    assert len(reads) == 6
