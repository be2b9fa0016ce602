"""The ``genicam`` source: a GigE Vision or USB3 Vision camera of any vendor, through Aravis.

The camera is chosen by serial, model or address; every setting in the config is checked
against the camera's own feature tree before it is written (``genicam_features``). Trigger
modes:

| mode       | who starts an exposure                                                   |
| ---------- | ------------------------------------------------------------------------ |
| free-run   | the camera, at ``frame_rate``                                            |
| software   | ``GenicamSource.fire()``, called when a part's MQTT trigger arrives      |
| line       | an edge on the camera's input line (``Line1``), wired to the part sensor |

Every frame is a ``CameraFrame`` with the camera's frame id and timestamp; its
``t_capture`` is the camera's timestamp on the host's clock, so ``trigger.match_by:
timestamp`` ties a hardware-triggered frame to the trigger that names its part. A frame
with missing packets comes as a frame with an ``error`` (never as an image), and a frame
id that never arrived comes as an error frame of its own, just before the next one: the
part that frame showed is rejected, and no part is given its neighbour's image.

A camera that stops answering (``control-lost``, register timeouts, no frames in free-run)
raises ``SourceLost``; ``SourceRunner`` reopens it with backoff. Aravis does not
reconnect by itself, so reopening finds the camera again from scratch.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any

import cv2
import numpy as np

from ..errors import SourceError
from .genicam_config import PIXEL_FORMATS, CameraSettings, GenicamSourceConfig, configure
from .genicam_features import (
    CameraConfigError,
    DeviceInfo,
    aravis,
    find_device,
    first_feature,
    gerror,
)
from .genicam_match import CameraFrame, CameraFrames, FrameAssembler
from .sources import FrameSource, SourceLost, register

log = logging.getLogger(__name__)

GV_CONTROL_PRIVILEGE = 0x0A00  # GigE Vision bootstrap register every camera answers


def _let_go(objects: list) -> None:
    """Drop the last references to a dead camera and its stream (Aravis says goodbye to it,
    waiting out the timeouts) on a thread of its own."""
    objects.clear()


@register("genicam", GenicamSourceConfig)
class GenicamSource(CameraFrames, FrameSource):
    """An Aravis camera. ``fire()`` (software trigger) may be called from any thread."""

    config_errors_at_open = True  # its settings are checked against the camera on open

    POP_US = 100_000  # read() returns None after this long without a frame

    def __init__(self, cfg: CameraSettings) -> None:
        super().__init__(cfg)
        self.camera = self.stream = self.device_info = None
        self.frames = FrameAssembler(self._camera_frame, cfg.transport.reorder_ms / 1000.0)
        self.counts: collections.Counter[str] = collections.Counter()
        self.temperature_c: float | None = None
        self.link_speed: str = ""
        self._lock = threading.RLock()  # the camera's control channel: fire, heartbeat, close
        self._lost = ""
        self._decode: tuple[str, tuple] | None = None

    # -- open / close ----------------------------------------------------------------------
    def open(self) -> None:
        ar = aravis()
        cfg = self.cfg
        info = find_device(cfg.serial, cfg.model, cfg.address, fake=getattr(cfg, "fake", False))
        with self._lock:
            try:
                cam = ar.Camera.new(info.id)
            except gerror() as exc:
                raise SourceError(f"cannot open camera {info.label()}: {exc.message}") from None
            self.camera, self.device_info, self._lost = cam, info, ""
            try:
                self._start(ar, cam, info)
            except gerror() as exc:
                self.close()
                raise SourceError(f"camera {info.label()}: {exc.message}") from None
            except SourceError:
                self.close()
                raise
        log.info("camera open: %s, %s", info.label(), self._decode[0])

    def _start(self, ar, cam, info: DeviceInfo) -> None:
        cam.stop_acquisition()
        configure(cam, self.cfg)
        fmt = cam.get_pixel_format_as_string()
        decode = PIXEL_FORMATS.get(fmt)
        if decode is None:
            raise CameraConfigError(
                f"source.pixel_format: the camera sends {fmt}, which the station does not "
                "decode; set an unpacked one (Mono8, Mono12, BayerRG8 ...)"
            )
        if 8 < decode[2] < 16 and self.cfg.bit_depth is None:
            raise CameraConfigError(
                f"source.pixel_format: the camera sends {fmt}; set pixel_format: {fmt} so "
                f"frames are scaled by their {decode[2]} bits"
            )
        self._decode = (fmt, decode)
        dev = cam.get_device()
        self._handler = dev.connect("control-lost", self._on_control_lost)
        self.stream = cam.create_stream(None, None)
        if self.stream is None:
            raise SourceError(f"camera {info.label()}: no stream")
        self._tune_stream(ar)
        payload = cam.get_payload()
        for _ in range(self.cfg.transport.buffers):
            self.stream.push_buffer(ar.Buffer.new_allocate(payload))
        self.link_speed = self._link_speed(dev)
        self.frames.reset()
        self._last_frame = self._last_beat = time.monotonic()
        cam.start_acquisition()

    def _tune_stream(self, ar) -> None:
        if not isinstance(self.stream, ar.GvStream):
            return
        tr = self.cfg.transport
        resend = (
            ar.GvStreamPacketResend.ALWAYS if tr.packet_resend else ar.GvStreamPacketResend.NEVER
        )
        self.stream.set_property("packet-resend", resend)
        if tr.socket_buffer_bytes is not None:
            self.stream.set_property("socket-buffer", ar.GvStreamSocketBuffer.FIXED)
            self.stream.set_property("socket-buffer-size", tr.socket_buffer_bytes)
        if tr.packet_timeout_ms is not None:
            self.stream.set_property("packet-timeout", int(tr.packet_timeout_ms * 1000))
        if tr.frame_retention_ms is not None:
            self.stream.set_property("frame-retention", int(tr.frame_retention_ms * 1000))

    def close(self) -> None:
        with self._lock:
            cam, self.camera = self.camera, None
            stream, self.stream = self.stream, None
            if stream is not None:
                self._remember_stream_counts(stream, closing=True)
            if cam is None:
                return
            handler, self._handler = getattr(self, "_handler", None), None
            if handler is not None:
                cam.get_device().disconnect(handler)
            if self._lost:  # every command to a dead camera waits out its timeouts (2.5 s
                # each on GigE Vision), and so does letting go of it: not on the capture thread
                doomed = [cam, stream]
                del cam, stream  # the thread's list holds the last references
                threading.Thread(target=_let_go, args=(doomed,), daemon=True).start()
                return
            try:
                cam.stop_acquisition()
            except gerror():
                pass  # it went away just now

    def _on_control_lost(self, device) -> None:  # Aravis' heartbeat thread
        self._lost = "camera control lost (cable, power or network)"

    # -- frames ------------------------------------------------------------------------------
    def read(self) -> CameraFrame | None:
        queued = self.frames.next()
        if queued is not None:
            return queued
        if self._lost:
            raise SourceLost(f"{self.describe()}: {self._lost}")
        buf = self.stream.timeout_pop_buffer(10_000 if self.frames.holding else self.POP_US)
        now = time.monotonic()
        if buf is None:
            self._idle(now)
            return None
        try:
            self._last_frame = now
            return self._deliver(buf)
        finally:
            self.stream.push_buffer(buf)

    def take_queued(self) -> list[CameraFrame]:
        """Frames already delivered by the camera but not yet by ``read`` (the frame after a
        gap waits behind the error frames of the ones that never arrived)."""
        return self.frames.take_all()

    def _idle(self, now: float) -> None:
        """No frame for a while: in free-run the camera is gone after ``frame_timeout_s``; a
        triggered camera (silent between parts) is asked for a register every
        ``heartbeat_s``, so a dead link shows in seconds, not at control-lost."""
        if self.cfg.trigger.mode == "free-run":
            if now - self._last_frame > self.cfg.frame_timeout_s:
                self._lost = f"no frame for {now - self._last_frame:.1f} s"
                raise SourceLost(f"{self.describe()}: {self._lost}")
            return
        if now - max(self._last_beat, self._last_frame) >= self.cfg.heartbeat_s:
            self._last_beat = now
            self.heartbeat()

    def heartbeat(self) -> None:
        """Ask the camera for a register (its temperature where it has one); SourceLost when
        it does not answer."""
        with self._lock:
            if self.camera is None:
                return
            dev = self.camera.get_device()
            try:
                if first_feature(dev, ("DeviceTemperature",)):
                    self.temperature_c = dev.get_float_feature_value("DeviceTemperature")
                elif self.camera.is_gv_device():
                    dev.read_register(GV_CONTROL_PRIVILEGE)  # one transaction
                else:
                    dev.get_integer_feature_value("PayloadSize")
            except gerror() as exc:
                self._lost = f"camera does not answer: {exc.message}"
        if self._lost:
            raise SourceLost(f"{self.describe()}: {self._lost}")

    def _deliver(self, buf) -> CameraFrame | None:
        ar = aravis()
        status = buf.get_status()
        if status in (ar.BufferStatus.CLEARED, ar.BufferStatus.ABORTED):
            self.counts["buffers_unused"] += 1  # never filled by the camera: not a frame
            return None
        fid = buf.get_frame_id()
        if status == ar.BufferStatus.SUCCESS:
            image, error = self._image(buf), ""
        else:
            image = None
            error = (
                f"camera frame {fid} incomplete ({status.value_nick}): packets were lost on "
                "the network"
            )
        self.frames.add(fid, buf.get_timestamp(), buf.get_system_timestamp(), image, error)
        return self.frames.next()

    def _image(self, buf) -> np.ndarray:
        fmt, (dtype, channels, _bits, conversion) = self._decode
        width, height = buf.get_image_width(), buf.get_image_height()
        data = np.frombuffer(buf.get_image_data(), dtype=dtype)
        shape = (height, width, channels) if channels > 1 else (height, width)
        image = data[: width * height * channels].reshape(shape)
        if conversion is not None:
            image = cv2.cvtColor(image, conversion)
        return image

    # -- software trigger --------------------------------------------------------------------
    def fire(self) -> float | None:
        """Expose one frame now (trigger mode ``software``). Returns the monotonic time the
        command went out, or None when the camera is not open or refused it (then the
        capture side raises SourceLost and the part waits for no frame)."""
        with self._lock:
            if self.camera is None:
                return None
            try:
                self.camera.software_trigger()
            except gerror() as exc:
                self.counts["trigger_errors"] += 1
                self._lost = f"software trigger failed: {exc.message}"
                return None
            self.counts["triggers"] += 1
            return time.monotonic()

    # -- what the station shows ---------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Counters and camera state for /metrics and status: frames, incomplete, lost
        (never arrived), stale, trigger counts, Aravis' stream counters (missing and resent
        packets...), the clock offset and its jitter, temperature and link speed."""
        out: dict[str, Any] = {**self.frames.stats(), **self.counts}
        # never waits: a trigger or a reconnect may hold the camera for seconds, and the
        # status is built on the link's thread; then the last counts read are reported
        if self._lock.acquire(blocking=False):
            try:
                if self.stream is not None:
                    self._remember_stream_counts(self.stream)
            finally:
                self._lock.release()
        out.update(getattr(self, "_stream_counts", {}))
        out["temperature_c"] = self.temperature_c
        out["link_speed"] = self.link_speed
        if self.device_info is not None:
            out["camera"] = self.device_info.as_dict()
        return out

    def _remember_stream_counts(self, stream, closing: bool = False) -> None:
        counts = {
            stream.get_info_name(i): stream.get_info_uint64(i) for i in range(stream.get_n_infos())
        }
        totals = getattr(self, "_stream_totals", collections.Counter())
        self._stream_counts = {f"stream_{k}": totals[k] + v for k, v in counts.items()}
        if closing:  # what this stream counted, kept across reopens
            totals.update(counts)
            self._stream_totals = totals

    @staticmethod
    def _link_speed(dev) -> str:
        try:
            if first_feature(dev, ("GevLinkSpeed",)):
                return f"{dev.get_integer_feature_value('GevLinkSpeed')} Mb/s"
            if first_feature(dev, ("DeviceLinkSpeed",)):
                return f"{dev.get_integer_feature_value('DeviceLinkSpeed') * 8 / 1e6:.0f} Mb/s"
        except gerror():
            pass
        return ""

    def describe(self) -> str:
        if self.device_info is not None:
            return f"camera {self.device_info.model} {self.device_info.serial}"
        said = self.cfg.serial or self.cfg.model or self.cfg.address or "(any)"
        return f"genicam camera {said}"
