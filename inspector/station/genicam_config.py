"""The genicam source's settings, and writing them to an Aravis camera.

``CameraSettings`` holds the keys every industrial camera source shares (the pylon source
takes the same); ``configure`` writes them to the camera in the order GenICam needs
(pixel format and binning before the region, the region's offsets at 0 before its size, auto
modes off before exposure and gain, the trigger, the transport, then ``features`` by name),
each checked against the camera's feature tree first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import cv2
import numpy as np

from ..contract.schema import setting
from .genicam_features import CameraConfigError, first_feature, gerror, set_feature
from .sources import SourceSettings

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
    "RGB8Packed": (np.uint8, 3, 8, cv2.COLOR_RGB2BGR),  # the older name (Basler ace GigE)
    "BGR8Packed": (np.uint8, 3, 8, None),
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
    reorder_ms: float = setting(
        200.0,
        "frames after a missing one wait this long for it (a frame whose packets were resent "
        "comes after the next one); then it counts as never arrived and its part is rejected",
    )

    def problems(self):
        if not 0 <= self.reorder_ms <= 5000:
            yield "reorder_ms", "must be between 0 and 5000"
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


class AravisFeatures:
    """An Aravis camera's features as ``apply_settings`` uses them (the pylon source has its
    own with the same three methods)."""

    def __init__(self, device) -> None:
        self.device = device

    def has(self, name: str) -> bool:
        return first_feature(self.device, (name,)) is not None

    def available(self, name: str) -> bool:
        return self.has(name) and bool(self.device.get_feature(name).is_available())

    def set(self, name: str, value: Any, key: str) -> None:
        set_feature(self.device, name, value, key)


def configure(cam, cfg: CameraSettings) -> None:
    """Write the config's settings to an open Aravis camera, each checked first."""
    dev = cam.get_device()
    apply_settings(AravisFeatures(dev), cfg)
    _configure_transport(cam, dev, cfg.transport, "source.transport")


def apply_settings(dev, cfg: CameraSettings) -> None:
    """Pixel format, binning, region, exposure, gain, trigger, then ``features``, in the order
    GenICam needs them; ``dev`` has ``has``, ``available`` and ``set`` (checked writes)."""
    key = "source"
    if cfg.pixel_format:
        dev.set("PixelFormat", cfg.pixel_format, f"{key}.pixel_format")
    if cfg.binning:
        for name, value in zip(("BinningHorizontal", "BinningVertical"), cfg.binning, strict=True):
            dev.set(name, value, f"{key}.binning")
    if cfg.region:
        x, y, w, h = cfg.region
        for name in ("OffsetX", "OffsetY"):  # at 0 first, so Width may use the whole sensor
            if dev.has(name):
                dev.set(name, 0, f"{key}.region")
        for name, value in (("Width", w), ("Height", h), ("OffsetX", x), ("OffsetY", y)):
            dev.set(name, value, f"{key}.region")
    if cfg.exposure_us is not None:
        _auto_off(dev, "ExposureAuto")
        name = _need(dev, ("ExposureTime", "ExposureTimeAbs"), f"{key}.exposure_us")
        dev.set(name, cfg.exposure_us, f"{key}.exposure_us")
    if cfg.gain is not None:
        _auto_off(dev, "GainAuto")
        name = _need(dev, ("Gain", "GainRaw", "GainAbs"), f"{key}.gain")
        dev.set(name, cfg.gain, f"{key}.gain")
    _configure_trigger(dev, cfg.trigger, f"{key}.trigger")
    for name, value in cfg.features.items():
        dev.set(name, value, f"{key}.features.{name}")


def _need(dev, names: tuple[str, ...], key: str) -> str:
    name = next((n for n in names if dev.has(n)), None)
    if name is None:
        raise CameraConfigError(f"{key}: the camera has none of the features {', '.join(names)}")
    return name


def _auto_off(dev, name: str) -> None:
    if dev.available(name):
        dev.set(name, "Off", f"source ({name})")


def _configure_trigger(dev, trig: CameraTrigger, key: str) -> None:
    if dev.has("TriggerSelector"):
        dev.set("TriggerSelector", "FrameStart", f"{key}.mode")
    if dev.has("AcquisitionMode"):
        dev.set("AcquisitionMode", "Continuous", f"{key}.mode")
    if trig.mode == "free-run":
        if dev.has("TriggerMode"):
            dev.set("TriggerMode", "Off", f"{key}.mode")
        if trig.frame_rate is not None:
            if dev.has("AcquisitionFrameRateEnable"):
                dev.set("AcquisitionFrameRateEnable", True, f"{key}.frame_rate")
            name = _need(
                dev, ("AcquisitionFrameRate", "AcquisitionFrameRateAbs"), f"{key}.frame_rate"
            )
            dev.set(name, trig.frame_rate, f"{key}.frame_rate")
        return
    dev.set("TriggerMode", "On", f"{key}.mode")
    if trig.mode == "software":
        dev.set("TriggerSource", "Software", f"{key}.mode")
        return
    dev.set("TriggerSource", trig.line, f"{key}.line")
    dev.set("TriggerActivation", trig.activation, f"{key}.activation")
    if trig.delay_us is not None:
        name = _need(dev, ("TriggerDelay", "TriggerDelayAbs"), f"{key}.delay_us")
        dev.set(name, trig.delay_us, f"{key}.delay_us")
    if trig.debounce_us is not None:
        dev.set("LineSelector", trig.line, f"{key}.debounce_us")
        name = _need(dev, ("LineDebouncerTime", "LineDebouncerTimeAbs"), f"{key}.debounce_us")
        dev.set(name, trig.debounce_us, f"{key}.debounce_us")


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
        _need(AravisFeatures(dev), ("GevSCPD",), f"{key}.packet_delay_ns")
        try:
            cam.gv_set_packet_delay(tr.packet_delay_ns)
        except gerror() as exc:
            raise CameraConfigError(
                f"{key}.packet_delay_ns: the camera refused it: {exc.message}"
            ) from None
