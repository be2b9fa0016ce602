"""The ``pylon`` source: a Basler camera through Basler's own SDK (pypylon, the ``basler``
extra: proprietary licence, an 88 MB wheel, never a default dependency).

The keys are the genicam source's where they mean the same (serial, model, address,
pixel_format, exposure_us, gain, region, binning, features, trigger, frame_timeout_s,
heartbeat_s; of transport: packet_size and buffers), checked against the camera's node map
before they are written, and frames carry the same evidence (``CameraFrame``: block id,
timestamp, complete or why not, error frames for ids that never arrived). The genicam source
drives Basler's GigE and USB3 cameras too; this one is for a plant standardised on pylon.

pylon's emulated cameras (``PYLON_CAMEMU=N`` in the environment) need no hardware;
``emulate_folder`` makes one replay a folder of images, one per trigger, for tests and lab runs.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from ..contract.schema import setting
from ..errors import SourceError
from .genicam_config import PIXEL_FORMATS, CameraSettings, apply_settings
from .genicam_features import CameraConfigError, DeviceInfo, choose_device, plain_number
from .genicam_match import CameraFrame, CameraFrames, FrameAssembler
from .sources import FrameSource, SourceLost, register

log = logging.getLogger(__name__)
INSTALL_HINT = (
    "the pylon source needs Basler's pypylon: pip install 'defect-inspector[basler]' "
    "(or use the genicam source, which drives Basler cameras through Aravis)"
)


def pypylon():
    """(pylon, genicam) from pypylon, or SourceError saying how to install it."""
    try:
        from pypylon import genicam, pylon
    except ImportError:
        raise SourceError(INSTALL_HINT) from None
    return pylon, genicam


@dataclass(frozen=True, kw_only=True)
class PylonSourceConfig(CameraSettings):
    type: Literal["pylon"] = "pylon"
    emulate_folder: Path | None = setting(
        None,
        "an emulated camera (PYLON_CAMEMU) replays this folder's images in name order, one "
        "per frame, instead of its test pattern; for tests and lab runs",
    )


class PylonFeatures:
    """A pylon node map with the checks of ``genicam_features.set_feature``."""

    def __init__(self, nodemap, genicam) -> None:
        self.nodemap, self.g = nodemap, genicam

    def _node(self, name: str):
        try:
            node = self.nodemap.GetNode(name)
        except self.g.GenericException:
            return None
        return node if node is not None and self.g.IsImplemented(node) else None

    def has(self, name: str) -> bool:
        return self._node(name) is not None

    def available(self, name: str) -> bool:
        node = self._node(name)
        return node is not None and self.g.IsAvailable(node)

    def set(self, name: str, value: Any, key: str) -> None:
        g, node = self.g, self._node(name)
        if node is None:
            raise CameraConfigError(f"{key}: the camera has no feature {name!r}")
        if not g.IsAvailable(node):
            raise CameraConfigError(
                f"{key}: {name} is not available now (another setting locks it)"
            )
        if not g.IsWritable(node):
            raise CameraConfigError(f"{key}: {name} is read-only on this camera")
        try:
            if isinstance(node, g.ICommand):
                if value is not True:
                    raise CameraConfigError(f"{key}: {name} is a command: give true to run it")
                node.Execute()
            elif isinstance(node, g.IEnumeration):
                entries = list(node.Symbolics)
                if str(value) not in entries:
                    raise CameraConfigError(
                        f"{key}: {name} {value!r} is not offered by the camera (one of "
                        + ", ".join(entries)
                        + ")"
                    )
                node.SetValue(str(value))
            elif isinstance(node, (g.IInteger, g.IFloat)):
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise CameraConfigError(f"{key}: {name} takes a number, not {value!r}")
                lo, hi = node.GetMin(), node.GetMax()
                if not lo <= value <= hi:
                    unit = node.GetUnit() if isinstance(node, g.IFloat) else ""
                    raise CameraConfigError(
                        f"{key}: {name} {plain_number(value)} is outside the camera's limits "
                        f"{plain_number(lo)}..{plain_number(hi)}{' ' + unit if unit else ''}"
                    )
                node.SetValue(int(value) if isinstance(node, g.IInteger) else float(value))
            elif isinstance(node, g.IBoolean):
                if not isinstance(value, bool):
                    raise CameraConfigError(f"{key}: {name} takes true or false, not {value!r}")
                node.SetValue(value)
            else:
                node.FromString(str(value))
        except g.GenericException as exc:
            raise CameraConfigError(
                f"{key}: the camera refused {name} = {value!r}: {exc.GetDescription()}"
            ) from None


@register("pylon", PylonSourceConfig)
class PylonSource(CameraFrames, FrameSource):
    """A Basler camera through pylon. ``fire()`` may be called from any thread."""

    config_errors_at_open = True  # its settings are checked against the camera on open

    POP_MS = 100

    def __init__(self, cfg: PylonSourceConfig) -> None:
        super().__init__(cfg)
        self.camera = self.device_info = None
        self.frames = FrameAssembler(self._camera_frame, cfg.transport.reorder_ms / 1000.0)
        self.counts: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        self._lost = ""
        self._tick_ns = 1.0

    def open(self) -> None:
        pylon, g = pypylon()
        cfg = self.cfg
        tl = pylon.TlFactory.GetInstance()
        devices = list(tl.EnumerateDevices())
        infos = [_info(d) for d in devices]
        info = choose_device(infos, cfg.serial, cfg.model, cfg.address)
        camera = pylon.InstantCamera(tl.CreateDevice(devices[infos.index(info)]))
        try:
            camera.Open()
            self._configure(camera, g)
            camera.StartGrabbing(pylon.GrabStrategy_OneByOne)
        except g.GenericException as exc:
            camera.DestroyDevice()
            raise SourceError(f"camera {info.label()}: {exc.GetDescription()}") from None
        except SourceError:
            camera.DestroyDevice()
            raise
        with self._lock:
            self.camera, self.device_info, self._lost = camera, info, ""
        self.frames.reset()
        self._last_frame = self._last_beat = time.monotonic()
        log.info("camera open: %s, %s", info.label(), self._decode[0])

    def _configure(self, camera, g) -> None:
        cfg = self.cfg
        features = PylonFeatures(camera.GetNodeMap(), g)
        if cfg.emulate_folder is not None:
            if not features.has("ImageFileMode"):
                raise CameraConfigError("source.emulate_folder: only an emulated camera replays")
            features.set("TestImageSelector", "Off", "source.emulate_folder")
            features.set("ImageFileMode", "On", "source.emulate_folder")
            features.set("ImageFilename", str(cfg.emulate_folder), "source.emulate_folder")
        apply_settings(features, cfg)
        tr = cfg.transport
        if tr.packet_size is not None:
            features.set("GevSCPSPacketSize", tr.packet_size, "source.transport.packet_size")
        for name in ("packet_delay_ns", "socket_buffer_bytes", "packet_timeout_ms"):
            if getattr(tr, name) is not None:
                raise CameraConfigError(
                    f"source.transport.{name}: not a pylon setting here; set the camera's "
                    "own feature under source.features (e.g. GevSCPD)"
                )
        camera.MaxNumBuffer.Value = tr.buffers
        fmt = camera.PixelFormat.Value
        if fmt not in PIXEL_FORMATS:
            raise CameraConfigError(
                f"source.pixel_format: the camera sends {fmt}, which the station does not decode"
            )
        bits = PIXEL_FORMATS[fmt][2]
        if 8 < bits < 16 and cfg.bit_depth is None:
            raise CameraConfigError(
                f"source.pixel_format: the camera sends {fmt}; set pixel_format: {fmt}"
            )
        self._decode = (fmt, PIXEL_FORMATS[fmt])
        if features.has("GevTimestampTickFrequency"):
            self._tick_ns = 1e9 / camera.GevTimestampTickFrequency.Value

    def close(self) -> None:
        with self._lock:
            camera, self.camera = self.camera, None
        if camera is None:
            return
        try:
            camera.StopGrabbing()
            camera.Close()
        except Exception:  # noqa: BLE001 - a removed camera cannot stop; let it go anyway
            pass
        camera.DestroyDevice()

    def read(self) -> CameraFrame | None:
        queued = self.frames.next()
        if queued is not None:
            return queued
        pylon, g = pypylon()
        if self._lost or self.camera.IsCameraDeviceRemoved():
            raise SourceLost(f"{self.describe()}: {self._lost or 'camera removed'}")
        try:
            wait = 10 if self.frames.holding else self.POP_MS
            result = self.camera.RetrieveResult(wait, pylon.TimeoutHandling_Return)
        except g.GenericException as exc:
            raise SourceLost(f"{self.describe()}: {exc.GetDescription()}") from None
        now = time.monotonic()
        if result is None or not result.IsValid():
            self._idle(now)
            return None
        try:
            self._last_frame = now
            fid, ticks = result.BlockID, result.TimeStamp
            if result.GrabSucceeded():
                image, error = self._image(result.GetArray()), ""
            else:
                image = None
                error = f"camera frame {fid} incomplete: {result.ErrorDescription.strip()}"
            self.frames.add(fid, int(ticks * self._tick_ns), time.time_ns(), image, error)
        finally:
            result.Release()
        return self.frames.next()

    def _idle(self, now: float) -> None:
        if self.cfg.trigger.mode == "free-run":
            if now - self._last_frame > self.cfg.frame_timeout_s:
                raise SourceLost(f"{self.describe()}: no frame for {now - self._last_frame:.1f} s")
        elif now - max(self._last_beat, self._last_frame) >= self.cfg.heartbeat_s:
            self._last_beat = now
            _, g = pypylon()
            try:
                self.camera.PixelFormat.GetValue()  # one register read
            except g.GenericException as exc:
                raise SourceLost(f"{self.describe()}: {exc.GetDescription()}") from None

    def _image(self, array: np.ndarray) -> np.ndarray:
        conversion = self._decode[1][3]
        return cv2.cvtColor(array, conversion) if conversion is not None else array

    def fire(self) -> float | None:
        """One exposure now (trigger mode software); the monotonic time it was sent, or None
        when the camera is not open or not ready for a trigger within 50 ms."""
        pylon, g = pypylon()
        with self._lock:
            camera = self.camera
        if camera is None:
            return None
        try:
            if not camera.WaitForFrameTriggerReady(50, pylon.TimeoutHandling_Return):
                self.counts["trigger_not_ready"] += 1
                return None
            camera.ExecuteSoftwareTrigger()
        except g.GenericException as exc:
            self.counts["trigger_errors"] += 1
            self._lost = f"software trigger failed: {exc.GetDescription()}"
            return None
        self.counts["triggers"] += 1
        return time.monotonic()

    def take_queued(self) -> list[CameraFrame]:
        return self.frames.take_all()

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {**self.frames.stats(), **self.counts}
        if self.device_info is not None:
            out["camera"] = self.device_info.as_dict()
        return out

    def describe(self) -> str:
        if self.device_info is not None:
            return f"camera {self.device_info.model} {self.device_info.serial}"
        return f"pylon camera {self.cfg.serial or self.cfg.model or self.cfg.address or '(any)'}"


def _info(device) -> DeviceInfo:
    try:
        address = device.GetIpAddress()
    except Exception:  # noqa: BLE001 - USB and emulated cameras have no IP address
        address = ""
    return DeviceInfo(
        id=device.GetFullName(),
        vendor=device.GetVendorName(),
        model=device.GetModelName(),
        serial=device.GetSerialNumber(),
        address=address,
        interface=device.GetDeviceClass(),
    )
