"""Frame sources: video files, streams through FFmpeg, cameras that aren't there, GStreamer."""

from __future__ import annotations

import threading
import time

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


def test_a_stream_that_opens_but_cannot_be_read_is_retried_with_backoff(tmp_path):
    """A url that opens and then fails every read (here: a video with no frames) is
    reopened at the backoff's pace, not hundreds of times a second."""
    empty = tmp_path / "empty.avi"
    cv2.VideoWriter(str(empty), cv2.VideoWriter_fourcc(*"MJPG"), 25, (96, 96)).release()
    states = []
    runner = SourceRunner(
        make_source(UrlSourceConfig(url=str(empty))),
        initial_backoff_s=0.05,
        max_backoff_s=0.2,
        on_state=lambda s, d: states.append(s),
    )
    stop = threading.Event()
    threading.Timer(0.8, stop.set).start()
    assert runner.next(stop) is None
    assert states[:2] == ["ok", "reconnecting"]
    assert runner.state == "reconnecting" and "stopped delivering frames" in runner.detail
    assert 2 <= runner.reopens <= 6  # waits 0.05, 0.1, 0.2, 0.2 ... between tries
    assert runner.backoff == 0.2
    runner.close()


class _StallingStream:
    """An HTTP MJPEG stream (multipart/x-mixed-replace) that sends ``frames`` frames on each
    connection and then goes quiet with the connection still open, as a hung camera does."""

    def __init__(self, frames: int = 3) -> None:
        import socket

        self.frames = frames
        self.connections = 0
        self._open: list = []
        self._quit = threading.Event()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}/stream"
        jpg = cv2.imencode(".jpg", np.full((48, 64, 3), 128, np.uint8))[1].tobytes()
        head = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpg)
        self._part = head + jpg + b"\r\n"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._quit.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            self._open.append(conn)
            conn.recv(4096)
            conn.sendall(
                b"HTTP/1.0 200 OK\r\n"
                b"Content-Type: multipart/x-mixed-replace;boundary=frame\r\n\r\n"
                + self._part
                * self.frames
            )

    def close(self) -> None:
        self._quit.set()
        self._thread.join(2)
        for conn in self._open:
            conn.close()
        self._sock.close()


def test_a_stalled_stream_is_lost_after_its_read_timeout_and_reopened():
    server = _StallingStream(frames=3)
    states = []
    runner = SourceRunner(
        make_source(UrlSourceConfig(url=server.url, read_timeout_s=0.5)),
        initial_backoff_s=0.05,
        on_state=lambda s, d: states.append(s),
    )
    stop = threading.Event()
    threading.Timer(10, stop.set).start()  # FFmpeg alone would wait 30 s for the 4th frame
    try:
        frames = [runner.next(stop) for _ in range(3)]
        assert all(f is not None and f.image.shape == (48, 64, 3) for f in frames)
        t0 = time.monotonic()
        frame = runner.next(stop)  # the stream stalls: lost after 0.5 s, reopened, flows again
        assert frame is not None and 0.4 < time.monotonic() - t0 < 3
        assert states == ["ok", "reconnecting", "ok"] and runner.reopens == 1
        assert server.connections == 2
        assert runner.backoff == 0.05  # frames flow again: the next loss starts short again
    finally:
        stop.set()
        runner.close()
        server.close()


def test_url_read_timeout_is_range_checked(tmp_path, model_path):
    from inspector.errors import ConfigError
    from inspector.station.config import load_config

    path = tmp_path / "station.yaml"
    for bad in (0, -1, 7200):
        path.write_text(
            f"source: {{type: url, url: rtsp://cam/stream, read_timeout_s: {bad}}}\n"
            f'model: {{path: "{model_path}"}}\n'
        )
        with pytest.raises(ConfigError, match="source.read_timeout_s: must be between 0.1 and"):
            load_config(path)
    assert UrlSourceConfig(url="rtsp://cam/stream").read_timeout_s == 10.0
