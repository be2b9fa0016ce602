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
import dataclasses
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal

import cv2
import numpy as np

from ..contract.schema import setting
from ..errors import SourceError
from .genicam_features import (
    CameraConfigError,
    DeviceInfo,
    aravis,
    find_device,
    first_feature,
    gerror,
    set_feature,
)
from .genicam_match import CameraClock, CameraFrame, FrameIds
from .sources import FrameSource, SourceLost, SourceSettings, register

log = logging.getLogger(__name__)

# pixel format -> (numpy dtype, channels, bit depth, OpenCV conversion to BGR or None)
_BAYER = {"RG": "RGGB", "GR": "GRBG", "GB": "GBRG", "BG": "BGGR"}
PIXEL_FORMATS: dict[str, tuple[type, int, int, int | None]] = {
    "Mono8": (np.uint8, 1, 8, None),
    "Mono10": (np.uint16, 1, 10, None),
    "Mono12": (np.uint16, 1, 12, None),
    "Mono14": (np.uint16, 1, 14, None),
    "Mono16": (np.uint16, 1, 16, None),
    "RGB8": (np.uint8, 3, 8, cv2.COLOR_RGB2BGR),
    "BGR8": (np.uint8, 3, 8, None),
}
for _p, _cv in _BAYER.items():
    for _bits in (8, 10, 12, 16):
        PIXEL_FORMATS[f"Bayer{_p}{_bits}"] = (
            np.uint8 if _bits == 8 else np.uint16,
            1,
            _bits,
            getattr(cv2, f"COLOR_Bayer{_cv}2BGR"),
        )


def bits_of(pixel_format: str) -> int | None:
    entry = PIXEL_FORMATS.get(pixel_format)
    return entry[2] if entry else None


@dataclass(frozen=True, kw_only=True)
class CameraTrigger:
    mode: Literal["free-run", "software", "line"] = setting(
        "free-run",
        "free-run: the camera runs at frame_rate; software: each part's MQTT trigger fires "
        "one exposure; line: an edge on 'line' (the part sensor) fires one exposure",
    )
    frame_rate: float | None = setting(None, "free-run frames per second (default: the camera's)")
    line: str = setting("Line1", "input line wired to the part sensor (mode: line)")
    activation: str = setting(
        "RisingEdge", "edge or level that fires (RisingEdge, FallingEdge, AnyEdge, LevelHigh...)"
    )
    delay_us: float | None = setting(None, "camera's delay from the edge to exposure (µs)")
    debounce_us: float | None = setting(
        None, "the line must hold this long to count (µs): a bouncing sensor fires once"
    )

    def problems(self):
        if self.frame_rate is not None and self.frame_rate <= 0:
            yield "frame_rate", "must be positive"
        if self.delay_us is not None and self.delay_us < 0:
            yield "delay_us", "must be 0 or more"
        if self.debounce_us is not None and self.debounce_us < 0:
            yield "debounce_us", "must be 0 or more"


@dataclass(frozen=True, kw_only=True)
class CameraTransport:
    packet_size: int | None = setting(
        None,
        "GigE Vision packet size in bytes (9000 with jumbo frames; 0: the largest the path "
        "carries, found by test packets); default: the camera's",
    )
    packet_delay_ns: int | None = setting(
        None, "inter-packet delay (ns): spreads a frame's packets when several cameras share a link"
    )
    packet_resend: bool = setting(True, "ask the camera to resend lost packets (GigE Vision)")
    buffers: int = setting(16, "frame buffers queued for the camera's stream")
    socket_buffer_bytes: int | None = setting(
        None, "receive socket buffer size (default: sized to a frame by Aravis)"
    )
    packet_timeout_ms: float | None = setting(
        None, "wait this long for a missing packet before asking for it again"
    )
    frame_retention_ms: float | None = setting(
        None, "give up on a frame still missing packets this long after its first one"
    )

    def problems(self):
        if self.buffers < 2:
            yield "buffers", "must be at least 2"
        if self.packet_size is not None and not (self.packet_size == 0 or self.packet_size >= 576):
            yield "packet_size", "must be 0 (negotiate) or at least 576 bytes"


@dataclass(frozen=True, kw_only=True)
class CameraSettings(SourceSettings):
    """What an industrial camera is told: the keys the genicam and pylon sources share."""

    serial: str | None = setting(None, "the camera's serial number")
    model: str | None = setting(None, "the camera's model name")
    address: str | None = setting(None, "the camera's IP address (GigE Vision)")
    pixel_format: str | None = setting(
        None,
        "PixelFormat: Mono8, Mono10, Mono12, Mono16, RGB8, BayerRG8 ... (unpacked); sets "
        "bit_depth (Mono12: 12); default: the camera's",
    )
    exposure_us: float | None = setting(None, "exposure time in µs (turns auto exposure off)")
    gain: float | None = setting(None, "gain in the camera's unit (turns auto gain off)")
    region: list[int] | None = setting(
        None, "sensor region the camera sends [x, y, width, height] (before binning)"
    )
    binning: list[int] | None = setting(None, "[horizontal, vertical] binning")
    features: dict[str, Any] = setting(
        factory=dict,
        help="any other GenICam feature by name, set in this order after the keys above "
        "(inspector camera features URI lists them with their limits)",
    )
    trigger: CameraTrigger = setting(factory=CameraTrigger, help="")
    transport: CameraTransport = setting(factory=CameraTransport, help="")
    frame_timeout_s: float = setting(
        2.0, "free-run: no frame for this long and the camera counts as lost and is reopened"
    )
    heartbeat_s: float = setting(
        1.0, "a triggered camera waiting for parts is asked for a register this often"
    )

    def __post_init__(self) -> None:
        bits = bits_of(self.pixel_format or "")
        if self.bit_depth is None and bits is not None:
            object.__setattr__(self, "bit_depth", bits)

    def problems(self):
        if self.pixel_format is not None and self.pixel_format not in PIXEL_FORMATS:
            yield (
                "pixel_format",
                f"{self.pixel_format!r} is not one the station decodes (unpacked: "
                + ", ".join(p for p in PIXEL_FORMATS if not p.startswith("Bayer"))
                + ", BayerRG8 and the other Bayer orders in 8/10/12/16 bits)",
            )
        bits = bits_of(self.pixel_format or "")
        if bits is not None and self.bit_depth not in (None, bits) and bits > 8:
            yield "bit_depth", f"{self.pixel_format} frames have {bits} bits"
        if self.region is not None and (
            len(self.region) != 4 or min(self.region[2:]) <= 0 or min(self.region[:2]) < 0
        ):
            yield "region", "must be [x, y, width, height] with x, y >= 0 and positive size"
        if self.binning is not None and (len(self.binning) != 2 or min(self.binning) < 1):
            yield "binning", "must be [horizontal, vertical], each 1 or more"
        if self.frame_timeout_s <= 0 or self.heartbeat_s <= 0:
            yield "frame_timeout_s", "frame_timeout_s and heartbeat_s must be positive"


@dataclass(frozen=True, kw_only=True)
class GenicamSourceConfig(CameraSettings):
    type: Literal["genicam"] = "genicam"
    fake: bool = setting(
        False, "include Aravis' in-process test camera (model Fake) when looking for the camera"
    )


GV_CONTROL_PRIVILEGE = 0x0A00  # GigE Vision bootstrap register every camera answers


def _let_go(objects: list) -> None:
    """Drop the last references to a dead camera and its stream (Aravis says goodbye to it,
    waiting out the timeouts) on a thread of its own."""
    objects.clear()


def configure(cam, cfg: CameraSettings) -> None:
    """Write the config's settings to an open Aravis camera, each checked first."""
    dev = cam.get_device()
    key = "source"
    if cfg.pixel_format:
        set_feature(dev, "PixelFormat", cfg.pixel_format, f"{key}.pixel_format")
    if cfg.binning:
        for name, value in zip(("BinningHorizontal", "BinningVertical"), cfg.binning, strict=True):
            set_feature(dev, name, value, f"{key}.binning")
    if cfg.region:
        x, y, w, h = cfg.region
        for name in ("OffsetX", "OffsetY"):  # at 0 first, so Width may use the whole sensor
            if first_feature(dev, (name,)):
                set_feature(dev, name, 0, f"{key}.region")
        for name, value in (("Width", w), ("Height", h), ("OffsetX", x), ("OffsetY", y)):
            set_feature(dev, name, value, f"{key}.region")
    if cfg.exposure_us is not None:
        _auto_off(dev, "ExposureAuto")
        name = _need(dev, ("ExposureTime", "ExposureTimeAbs"), f"{key}.exposure_us")
        set_feature(dev, name, cfg.exposure_us, f"{key}.exposure_us")
    if cfg.gain is not None:
        _auto_off(dev, "GainAuto")
        name = _need(dev, ("Gain", "GainRaw", "GainAbs"), f"{key}.gain")
        set_feature(dev, name, cfg.gain, f"{key}.gain")
    _configure_trigger(dev, cfg.trigger, f"{key}.trigger")
    _configure_transport(cam, dev, cfg.transport, f"{key}.transport")
    for name, value in cfg.features.items():
        set_feature(dev, name, value, f"{key}.features.{name}")


def _need(dev, names: tuple[str, ...], key: str) -> str:
    name = first_feature(dev, names)
    if name is None:
        raise CameraConfigError(f"{key}: the camera has none of the features {', '.join(names)}")
    return name


def _auto_off(dev, name: str) -> None:
    if first_feature(dev, (name,)) and dev.get_feature(name).is_available():
        set_feature(dev, name, "Off", f"source ({name})")


def _configure_trigger(dev, trig: CameraTrigger, key: str) -> None:
    if first_feature(dev, ("TriggerSelector",)):
        set_feature(dev, "TriggerSelector", "FrameStart", f"{key}.mode")
    if first_feature(dev, ("AcquisitionMode",)):
        set_feature(dev, "AcquisitionMode", "Continuous", f"{key}.mode")
    if trig.mode == "free-run":
        if first_feature(dev, ("TriggerMode",)):
            set_feature(dev, "TriggerMode", "Off", f"{key}.mode")
        if trig.frame_rate is not None:
            if first_feature(dev, ("AcquisitionFrameRateEnable",)):
                set_feature(dev, "AcquisitionFrameRateEnable", True, f"{key}.frame_rate")
            name = _need(
                dev, ("AcquisitionFrameRate", "AcquisitionFrameRateAbs"), f"{key}.frame_rate"
            )
            set_feature(dev, name, trig.frame_rate, f"{key}.frame_rate")
        return
    set_feature(dev, "TriggerMode", "On", f"{key}.mode")
    if trig.mode == "software":
        set_feature(dev, "TriggerSource", "Software", f"{key}.mode")
        return
    set_feature(dev, "TriggerSource", trig.line, f"{key}.line")
    set_feature(dev, "TriggerActivation", trig.activation, f"{key}.activation")
    if trig.delay_us is not None:
        name = _need(dev, ("TriggerDelay", "TriggerDelayAbs"), f"{key}.delay_us")
        set_feature(dev, name, trig.delay_us, f"{key}.delay_us")
    if trig.debounce_us is not None:
        set_feature(dev, "LineSelector", trig.line, f"{key}.debounce_us")
        name = _need(dev, ("LineDebouncerTime", "LineDebouncerTimeAbs"), f"{key}.debounce_us")
        set_feature(dev, name, trig.debounce_us, f"{key}.debounce_us")


def _configure_transport(cam, dev, tr: CameraTransport, key: str) -> None:
    if not cam.is_gv_device():
        for name in ("packet_size", "packet_delay_ns"):
            if getattr(tr, name) is not None:
                raise CameraConfigError(f"{key}.{name}: only GigE Vision cameras send packets")
        return
    if tr.packet_size == 0:
        try:
            cam.gv_auto_packet_size()
        except gerror() as exc:
            raise CameraConfigError(
                f"{key}.packet_size: negotiation failed: {exc.message}"
            ) from None
    elif tr.packet_size is not None:
        set_feature(dev, "GevSCPSPacketSize", tr.packet_size, f"{key}.packet_size")
    if tr.packet_delay_ns is not None:
        _need(dev, ("GevSCPD",), f"{key}.packet_delay_ns")
        try:
            cam.gv_set_packet_delay(tr.packet_delay_ns)
        except gerror() as exc:
            raise CameraConfigError(
                f"{key}.packet_delay_ns: the camera refused it: {exc.message}"
            ) from None


@register("genicam", GenicamSourceConfig)
class GenicamSource(FrameSource):
    """An Aravis camera. ``fire()`` (software trigger) may be called from any thread."""

    POP_US = 100_000  # read() returns None after this long without a frame

    def __init__(self, cfg: CameraSettings) -> None:
        super().__init__(cfg)
        self.camera = self.stream = self.device_info = None
        self.ids = FrameIds()
        self.clock = CameraClock()
        self.counts: collections.Counter[str] = collections.Counter()
        self.temperature_c: float | None = None
        self.link_speed: str = ""
        self._lock = threading.RLock()  # the camera's control channel: fire, heartbeat, close
        self._lost = ""
        self._ready: collections.deque[CameraFrame] = collections.deque()
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
        self.ids.reset()
        self.clock.reset()
        self._ready.clear()
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
        if self._ready:
            return self._ready.popleft()
        if self._lost:
            raise SourceLost(f"{self.describe()}: {self._lost}")
        buf = self.stream.timeout_pop_buffer(self.POP_US)
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
        queued = list(self._ready)
        self._ready.clear()
        return queued

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
        fid = buf.get_frame_id()
        cam_ns, host_ns = buf.get_timestamp(), buf.get_system_timestamp()
        lost = self.ids.advance(fid)
        if lost is None:
            self.counts["stale"] += 1
            log.warning("camera frame %d came after a later one: dropped", fid)
            return None
        t_capture = self.clock.to_host(cam_ns, host_ns) if cam_ns else host_ns / 1e9
        now, now_mono = time.time(), time.monotonic()
        t_mono = now_mono - (now - t_capture)
        for k in range(lost, 0, -1):  # frames that never arrived: a reject each, in order
            self.counts["lost"] += 1
            missing = ((fid - k - 1) % 65535) + 1 if fid <= 65535 else fid - k
            self._ready.append(
                self._camera_frame(
                    None,
                    t_capture - k * 1e-6,
                    t_mono - k * 1e-6,
                    missing,
                    None,
                    f"camera frame {missing} never arrived (lost between the camera and the "
                    "station)",
                )
            )
        status = buf.get_status()
        if status != ar.BufferStatus.SUCCESS:
            self.counts["incomplete"] += 1
            frame = self._camera_frame(
                None,
                t_capture,
                t_mono,
                fid,
                cam_ns,
                f"camera frame {fid} incomplete ({status.value_nick}): packets were lost on "
                "the network",
            )
        else:
            self.counts["frames"] += 1
            frame = self._camera_frame(self._image(buf), t_capture, t_mono, fid, cam_ns)
        if lost:
            frame = dataclasses.replace(frame, lost_before=lost)
        self._ready.append(frame)
        return self._ready.popleft()

    def _image(self, buf) -> np.ndarray:
        fmt, (dtype, channels, _bits, conversion) = self._decode
        width, height = buf.get_image_width(), buf.get_image_height()
        data = np.frombuffer(buf.get_image_data(), dtype=dtype)
        shape = (height, width, channels) if channels > 1 else (height, width)
        image = data[: width * height * channels].reshape(shape)
        if conversion is not None:
            image = cv2.cvtColor(image, conversion)
        return image

    def _camera_frame(self, image, t, t_mono, fid, cam_ns, error: str = "") -> CameraFrame:
        self.index += 1
        return CameraFrame(
            image=image,
            t_capture=t,
            t_capture_mono=t_mono,
            index=self.index,
            origin=f"{self.describe()} frame {fid}",
            error=error,
            frame_id=fid,
            camera_ts_ns=cam_ns,
            complete=image is not None,
        )

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
        out: dict[str, Any] = dict(self.counts)
        out.update(self.clock.summary())
        out["frame_id_restarts"] = self.ids.restarts
        with self._lock:
            if self.stream is not None:
                self._remember_stream_counts(self.stream)
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
