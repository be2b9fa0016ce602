"""Frame sources, chosen by the config's ``source.type``.

| type     | what                                                        |
| -------- | ----------------------------------------------------------- |
| device   | an OpenCV camera index (USB/V4L2)                           |
| url      | an RTSP/HTTP URL (FFmpeg) or a GStreamer pipeline string    |
| video    | a video file, optionally looped and paced                   |
| folder   | a folder of images replayed at a set rate, looped or not    |
| spool    | images dropped into a folder by another program, each once  |

A source only opens and reads; ``SourceRunner`` (in the capture thread) reopens a lost
source with exponential backoff and reports its state. PyPI's OpenCV wheels have FFmpeg
but not GStreamer: a GStreamer pipeline needs an OpenCV built with it (see
``deploy/README.md``); ``url`` sources say so clearly when it is missing.

Why one module: the frame sources share one contract (open/read/close, SourceLost/SourceEnded)
and one runner that reconnects them; the GenICam camera lives in genicam.py.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from ..contract.records import Frame
from ..contract.schema import Registry, setting
from ..errors import ConfigError, SourceError

log = logging.getLogger(__name__)

SOURCES = Registry()
SOURCE_TYPES = SOURCES.types
register = SOURCES.register  # @register("folder", FolderSourceConfig) on a FrameSource class
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


@dataclass(frozen=True, kw_only=True)
class SourceSettings:
    """Settings every source type has."""

    bit_depth: Literal[8, 10, 12, 14, 16] | None = setting(
        None,
        "significant bits of the camera's pixels: 16-bit frames are scaled by it to 8 bits "
        "(a 12-bit sensor's 0..4095 -> 0..255); default: from the data (8 or 16)",
    )


class SourceLost(Exception):
    """The source stopped delivering frames; the runner will reopen it."""


class SourceEnded(Exception):
    """A finite source (non-looping file or folder) has delivered its last frame."""


class FrameSource:
    """Base class: ``open`` may raise SourceError; ``read`` returns a Frame (None: nothing
    new yet, ask again) or raises SourceLost / SourceEnded."""

    def __init__(self, cfg) -> None:
        self.cfg = cfg
        self.index = 0

    def open(self) -> None:
        raise NotImplementedError

    def read(self) -> Frame:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def describe(self) -> str:
        return type(self).__name__

    def _frame(self, image: np.ndarray | None, origin: str, error: str = "") -> Frame:
        self.index += 1
        return Frame(
            image=image,
            t_capture=time.time(),
            t_capture_mono=time.monotonic(),
            index=self.index,
            origin=origin,
            error=error,
        )


class _Pacer:
    """Sleeps so that frames come at ``rate`` per second (0: as fast as possible)."""

    def __init__(self, rate: float) -> None:
        self.period = 1.0 / rate if rate > 0 else 0.0
        self.next = time.monotonic()

    def wait(self, stop_at: float | None = None) -> None:
        if not self.period:
            return
        now = time.monotonic()
        if self.next > now:
            time.sleep(self.next - now)
            self.next += self.period
        else:  # running late: don't try to catch up with a burst
            self.next = now + self.period


# -- folder replay --------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class FolderSourceConfig(SourceSettings):
    type: Literal["folder"] = "folder"
    path: Path = setting(help="folder of images (.png .jpg .bmp .tif), replayed in name order")
    rate_fps: float = setting(10.0, "frames per second (0: as fast as they can be read)")
    loop: bool = setting(True, "start again after the last image")
    recursive: bool = setting(False, "include images in sub-folders")
    cache_mb: float = setting(
        256.0,
        "a looping replay keeps decoded images in memory up to this many MB, so a replay at "
        "full speed measures the station, not PNG decoding (0: decode every time)",
    )

    def problems(self):
        if self.rate_fps < 0:
            yield "rate_fps", "must be 0 or more"
        if self.cache_mb < 0:
            yield "cache_mb", "must be 0 or more"


@register("folder", FolderSourceConfig)
class FolderSource(FrameSource):
    def open(self) -> None:
        root = self.cfg.path
        if not root.is_dir():
            raise SourceError(f"image folder not found: {root}")
        pattern = "**/*" if self.cfg.recursive else "*"
        self.files = sorted(p for p in root.glob(pattern) if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise SourceError(f"no images (.png .jpg .bmp .tif) in {root}")
        self.pos = 0
        self.pacer = _Pacer(self.cfg.rate_fps)
        self._root = str(root)
        self._checked = 0.0
        self._cache: dict[int, np.ndarray] = {}
        self._cache_left = int(self.cfg.cache_mb * 1e6) if self.cfg.loop else 0

    def read(self) -> Frame:
        if self.pos >= len(self.files):
            if not self.cfg.loop:
                raise SourceEnded(str(self.cfg.path))
            self.pos = 0
        pos, path = self.pos, self.files[self.pos]
        self.pos += 1
        self.pacer.wait()
        image = self._cache.get(pos)
        now = time.monotonic()
        if image is None or now - self._checked > 0.2:  # a stat per frame costs at full speed
            self._checked = now
            if not os.path.isdir(self._root):
                raise SourceLost(f"image folder disappeared: {self.cfg.path}")
        if image is None:
            image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if image is None or image.size == 0:
                return self._frame(None, path.name, f"cannot decode image {path.name}")
            if image.nbytes <= self._cache_left:
                image.flags.writeable = False  # shared by every pass: nobody may change it
                self._cache[pos] = image
                self._cache_left -= image.nbytes
        return self._frame(image, path.name)

    def describe(self) -> str:
        return f"folder {self.cfg.path}"


# -- OpenCV VideoCapture: camera index, URL / GStreamer pipeline, video file ----------------
class _CaptureSource(FrameSource):
    """Shared read loop for everything cv2.VideoCapture opens."""

    backend = cv2.CAP_ANY
    target: str | int = ""
    open_params: tuple[int, ...] = ()  # (property, value) pairs OpenCV applies while opening

    def open(self) -> None:
        if self.open_params:
            self.cap = cv2.VideoCapture(self.target, self.backend, list(self.open_params))
        else:
            self.cap = cv2.VideoCapture(self.target, self.backend)
        if not self.cap.isOpened():
            self.cap.release()
            raise SourceError(f"cannot open {self.describe()}")
        self._configure()
        self.pacer = _Pacer(getattr(self.cfg, "rate_fps", 0.0) or 0.0)

    def _configure(self) -> None:
        pass

    def read(self) -> Frame:
        self.pacer.wait()
        ok, image = self.cap.read()
        if not ok or image is None:
            return self._end_of_stream()
        return self._frame(image, str(self.target))

    def _end_of_stream(self) -> Frame:
        raise SourceLost(f"{self.describe()} stopped delivering frames")

    def close(self) -> None:
        cap = getattr(self, "cap", None)
        if cap is not None:
            cap.release()

    def describe(self) -> str:
        return f"{self.cfg.type} {self.target}"


@dataclass(frozen=True, kw_only=True)
class DeviceSourceConfig(SourceSettings):
    type: Literal["device"] = "device"
    index: int = setting(0, "OpenCV camera index (/dev/videoN)")
    width: int | None = setting(None, "requested frame width")
    height: int | None = setting(None, "requested frame height")
    fps: float | None = setting(None, "requested frame rate")
    fourcc: str | None = setting(None, "requested pixel format, e.g. MJPG")


@register("device", DeviceSourceConfig)
class DeviceSource(_CaptureSource):
    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.target = cfg.index

    def _configure(self) -> None:
        if self.cfg.fourcc:
            self.cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*self.cfg.fourcc[:4]))
        for prop, value in (
            (cv2.CAP_PROP_FRAME_WIDTH, self.cfg.width),
            (cv2.CAP_PROP_FRAME_HEIGHT, self.cfg.height),
            (cv2.CAP_PROP_FPS, self.cfg.fps),
        ):
            if value:
                self.cap.set(prop, value)
        self.cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # freshest frame, not a stale buffered one


@dataclass(frozen=True, kw_only=True)
class UrlSourceConfig(SourceSettings):
    type: Literal["url"] = "url"
    url: str | None = setting(None, "rtsp://, http:// or file URL opened through FFmpeg")
    pipeline: str | None = setting(None, "GStreamer pipeline ending in appsink (GigE, RTSP)")
    read_timeout_s: float = setting(
        10.0,
        "seconds a url stream may take to open or to deliver its next frame before it counts "
        "as lost and is reopened (without it FFmpeg waits 30 s; a GStreamer pipeline sets its "
        "own, e.g. rtspsrc timeout); a camera that sends nothing between triggered parts "
        "needs more than the longest gap between parts",
    )

    def problems(self):
        if bool(self.url) == bool(self.pipeline):
            yield "url", "give exactly one of url or pipeline"
        if not 0.1 <= self.read_timeout_s <= 3600:
            yield "read_timeout_s", "must be between 0.1 and 3600 seconds"


def gstreamer_available() -> bool:
    info = cv2.getBuildInformation()
    for line in info.splitlines():
        if line.strip().startswith("GStreamer:"):
            return "YES" in line
    return False


@register("url", UrlSourceConfig)
class UrlSource(_CaptureSource):
    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        if cfg.pipeline:
            self.target, self.backend = cfg.pipeline, cv2.CAP_GSTREAMER
        else:
            self.target, self.backend = cfg.url, cv2.CAP_FFMPEG
            ms = round(cfg.read_timeout_s * 1000)
            for name in ("CAP_PROP_OPEN_TIMEOUT_MSEC", "CAP_PROP_READ_TIMEOUT_MSEC"):
                if hasattr(cv2, name):  # OpenCV 4.5.2 on; an older one waits as FFmpeg does
                    self.open_params += (getattr(cv2, name), ms)

    def open(self) -> None:
        if self.backend == cv2.CAP_GSTREAMER and not gstreamer_available():
            raise SourceError(
                "this OpenCV has no GStreamer support (PyPI wheels don't); install the "
                "distribution's python3-opencv with gstreamer1.0-plugins, see deploy/README.md"
            )
        super().open()

    def describe(self) -> str:
        return "GStreamer pipeline" if self.cfg.pipeline else f"stream {self.cfg.url}"


@dataclass(frozen=True, kw_only=True)
class VideoSourceConfig(SourceSettings):
    type: Literal["video"] = "video"
    path: Path = setting(help="video file")
    loop: bool = setting(False, "start again at the end")
    rate_fps: float = setting(0.0, "frames per second (0: as fast as they decode)")


@register("video", VideoSourceConfig)
class VideoSource(_CaptureSource):
    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.target = str(cfg.path)

    def open(self) -> None:
        if not self.cfg.path.is_file():
            raise SourceError(f"video file not found: {self.cfg.path}")
        super().open()

    def _end_of_stream(self) -> Frame:
        if self.cfg.loop and self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0):
            ok, image = self.cap.read()
            if ok:
                return self._frame(image, self.target)
        raise SourceEnded(self.target)


@dataclass(frozen=True, kw_only=True)
class SpoolSourceConfig(SourceSettings):
    type: Literal["spool"] = "spool"
    path: Path = setting(
        help="folder another program drops images into (the simulator, a frame grabber)"
    )
    delete: bool = setting(True, "delete each image once read")
    poll_ms: float = setting(2.0, "how often to look for a new image")


@register("spool", SpoolSourceConfig)
class SpoolSource(FrameSource):
    """Each image file that appears in the folder is one frame, read once, in name order.

    Writers should create files atomically (write ``.tmp``, then rename). The file's
    modification time is the frame's capture time.
    """

    def open(self) -> None:
        if not self.cfg.path.is_dir():
            raise SourceError(f"spool folder not found: {self.cfg.path}")
        # images that piled up while we were not reading are not frames of the parts to come
        stale = [
            e.path
            for e in os.scandir(self.cfg.path)
            if os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES
        ]
        for path in stale:
            Path(path).unlink(missing_ok=True)
        if stale:
            log.warning("spool: discarded %d images left from before the source opened", len(stale))

    def read(self) -> Frame | None:
        end = time.monotonic() + 0.1
        while True:
            try:
                names = sorted(
                    e.name
                    for e in os.scandir(self.cfg.path)
                    if os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES
                )
            except FileNotFoundError:
                raise SourceLost(f"spool folder disappeared: {self.cfg.path}") from None
            if names:
                break
            if time.monotonic() >= end:
                return None  # nothing yet; the runner checks for stop and asks again
            time.sleep(self.cfg.poll_ms / 1000.0)
        path = self.cfg.path / names[0]
        try:  # the file's modification time is when the image was taken, not when we read it
            taken = path.stat().st_mtime
        except FileNotFoundError:
            return None
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if self.cfg.delete:
            path.unlink(missing_ok=True)
        if image is None or image.size == 0:
            frame = self._frame(None, path.name, f"cannot decode image {path.name}")
        else:
            frame = self._frame(image, path.name)
        now, now_mono = time.time(), time.monotonic()
        taken = min(taken, now)
        return dataclasses.replace(frame, t_capture=taken, t_capture_mono=now_mono - (now - taken))

    def describe(self) -> str:
        return f"spool {self.cfg.path}"


def make_source(cfg) -> FrameSource:
    """Build the source a ``source:`` config section describes."""
    return SOURCES.make(cfg)


class SourceRunner:
    """Keeps a source open: reopens it with exponential backoff and reports its state.

    Any failure, to open or to read, waits the backoff before the next try and doubles it;
    the first frame after a reopen sets it back, so a source that opens and then fails to
    read (a stream that accepts and stalls) is retried at the backoff's pace, not in a loop.

    States: ``starting``, ``ok``, ``reconnecting``, ``ended``, ``stopped``.
    """

    def __init__(
        self,
        source: FrameSource,
        initial_backoff_s: float = 0.2,
        max_backoff_s: float = 5.0,
        on_state=None,
    ) -> None:
        self.source = source
        self.on_state = on_state or (lambda state, detail: None)
        self.state = "starting"
        self.detail = ""
        self.initial = initial_backoff_s
        self.max = max_backoff_s
        self.backoff = initial_backoff_s
        self.reopens = 0
        self._open = False

    def open_at_start(self) -> None:
        """Open a source that can say at once that the config asks what it cannot do (a
        camera checked against its own feature tree: ``config_errors_at_open``): a
        ConfigError goes to the caller; any other failure is left to ``next``'s retries."""
        if self._open or not getattr(self.source, "config_errors_at_open", False):
            return
        try:
            self.source.open()
        except ConfigError:
            raise
        except SourceError as exc:
            log.warning("source not open yet (%s); retrying in the capture loop", exc)
            return
        self._open = True
        self._set("ok", "")

    def next(self, stop) -> Frame | None:
        """The next frame, or None when stopping or after the source ended.

        ``stop`` is a threading.Event. Blocks while the source is being reopened;
        ``on_state(state, detail)`` is called on every change of state.
        """
        while not stop.is_set():
            if not self._open:
                try:
                    self.source.open()
                except SourceError as exc:
                    self._lost(str(exc), stop)
                    continue
                if self.state != "starting":
                    self.reopens += 1
                    log.info("source reopened: %s", self.source.describe())
                self._open = True
                self._set("ok", "")
            try:
                frame = self.source.read()
                if frame is None:  # a source with nothing new yet
                    continue
                self.backoff = self.initial  # frames flow: the next loss starts short again
                return frame
            except SourceEnded:
                self.source.close()
                self._open = False
                self._set("ended", "end of replay")
                return None
            except (SourceLost, OSError, cv2.error) as exc:
                self.source.close()
                self._open = False
                self._lost(str(exc), stop)
        return None

    def _lost(self, why: str, stop) -> None:
        """Report the loss, wait the backoff (or until ``stop``), double it."""
        if self.state != "reconnecting" or why != self.detail:
            log.warning("source lost (%s); retrying in %.1f s", why, self.backoff)
        self._set("reconnecting", why)
        stop.wait(self.backoff)
        self.backoff = min(self.backoff * 2, self.max)

    def _set(self, state: str, detail: str) -> None:
        changed = state != self.state
        self.state, self.detail = state, detail
        if changed:
            self.on_state(state, detail)

    def close(self) -> None:
        self.source.close()
        self._open = False
        self.state = "stopped"


# Source types in modules of their own (one camera SDK each): importing one registers it
PLUGINS = ("genicam", "pylon")


def source_types() -> dict[str, type]:
    """Every source type's config class by name, the plugins' included."""
    for name in PLUGINS:
        importlib.import_module(f"{__package__}.{name}")
    return SOURCE_TYPES
