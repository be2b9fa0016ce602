"""A GenICam camera's feature tree through Aravis: find cameras, read features with their
limits, and set a feature only after checking the value against the camera's own limits.

Aravis writes whatever it is given (a Width of 99999 goes to the camera), so every value
the station config sets passes ``set_feature`` first, and a bad one is one sentence that
names the config key, the feature and the camera's limit::

    source.exposure_us: ExposureTimeAbs 5 is outside the camera's limits 10..10000000 us

Aravis comes from the distribution (gir1.2-aravis-0.8) through PyGObject; it is imported on
first use, so the station imports this module without it.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import ConfigError, SourceError

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "the genicam source needs Aravis and PyGObject: sudo apt-get install gir1.2-aravis-0.8 "
    "python3-gi libgirepository1.0-dev libcairo2-dev, then pip install "
    "'defect-inspector[genicam]' (README: Connecting a camera)"
)
_aravis = None


class CameraConfigError(SourceError, ConfigError):
    """The station config asks the camera for something it cannot do (exit 2 at start)."""


def aravis():
    """The Aravis module (``gi.repository.Aravis`` 0.8), imported once."""
    global _aravis
    if _aravis is None:
        try:
            import gi

            gi.require_version("Aravis", "0.8")
            from gi.repository import Aravis
        except (ImportError, ValueError):
            raise SourceError(INSTALL_HINT) from None
        _aravis = Aravis
    return _aravis


def gerror():
    from gi.repository import GLib

    return GLib.Error


@dataclass(frozen=True)
class DeviceInfo:
    id: str
    vendor: str
    model: str
    serial: str
    address: str
    interface: str  # GigEVision, USB3Vision, Fake

    def as_dict(self) -> dict[str, str]:
        return asdict(self)

    def label(self) -> str:
        return (
            f"{self.vendor} {self.model} serial {self.serial} at {self.address} ({self.interface})"
        )


def list_devices(fake: bool = False) -> list[DeviceInfo]:
    """Every GenICam camera Aravis finds now (GigE Vision broadcast discovery, USB3 Vision);
    ``fake`` adds Aravis' in-process test camera."""
    ar = aravis()
    if fake:
        ar.enable_interface("Fake")
    ar.update_device_list()
    return [
        DeviceInfo(
            id=ar.get_device_id(i) or "",
            vendor=ar.get_device_vendor(i) or "",
            model=ar.get_device_model(i) or "",
            serial=ar.get_device_serial_nbr(i) or "",
            address=ar.get_device_address(i) or "",
            interface=ar.get_device_protocol(i) or "",
        )
        for i in range(ar.get_n_devices())
    ]


def find_device(
    serial: str | None = None,
    model: str | None = None,
    address: str | None = None,
    device_id: str | None = None,
    fake: bool = False,
) -> DeviceInfo:
    """The one camera that matches every criterion given (none given: the only camera).
    SourceError that lists the cameras found when none or several match."""
    return choose_device(list_devices(fake), serial, model, address, device_id)


def choose_device(
    found: list[DeviceInfo],
    serial: str | None = None,
    model: str | None = None,
    address: str | None = None,
    device_id: str | None = None,
) -> DeviceInfo:
    """The one of ``found`` that matches every criterion given (see ``find_device``)."""
    wanted = {"serial": serial, "model": model, "address": address, "id": device_id}
    match = [d for d in found if all(v is None or getattr(d, k) == v for k, v in wanted.items())]
    said = ", ".join(f"{k} {v}" for k, v in wanted.items() if v is not None) or "any camera"
    seen = "; ".join(d.label() for d in found) or "no camera at all"
    if not match:
        raise SourceError(f"no GenICam camera with {said} (found: {seen})")
    if len(match) > 1:
        raise SourceError(f"{len(match)} cameras match {said}; name one by serial ({seen})")
    return match[0]


def kind(node) -> str:
    """The GenICam interface of a feature node: category, command, boolean, enumeration,
    integer, float, string, or other."""
    ar = aravis()
    for name, cls in (
        ("category", ar.GcCategory),
        ("command", ar.GcCommand),
        ("boolean", ar.GcBoolean),
        ("enumeration", ar.GcEnumeration),
        ("integer", ar.GcInteger),
        ("float", ar.GcFloat),
        ("string", ar.GcString),
    ):
        if isinstance(node, cls):
            return name
    return "other"


def describe(node) -> dict[str, Any]:
    """A feature's type, access, value and limits, as ``camera features`` prints them."""
    k = kind(node)
    out: dict[str, Any] = {"name": node.get_name(), "type": k}
    try:
        out["access"] = node.get_actual_access_mode().value_nick
        out["available"] = bool(node.is_available())
        if k == "enumeration":
            out["value"] = node.get_string_value()
            out["entries"] = list(node.dup_available_string_values() or [])
        elif k in ("integer", "float"):
            out["value"] = node.get_value()
            out["min"], out["max"] = node.get_min(), node.get_max()
            out["unit"] = node.get_unit() or ""
            if k == "integer":
                out["inc"] = node.get_inc()
        elif k in ("boolean", "string"):
            out["value"] = node.get_value()
    except gerror() as exc:  # a feature that is not readable now (locked, not implemented)
        out["error"] = exc.message
    description = node.get_description()
    if description:
        out["description"] = description.strip()
    return out


def feature_tree(device) -> list[dict[str, Any]]:
    """Every feature under Root, depth first, each with its category path."""
    genicam = device.get_genicam()
    out: list[dict[str, Any]] = []

    def walk(name: str, path: str, depth: int) -> None:
        node = genicam.get_node(name)
        if node is None or depth > 16:
            return
        if kind(node) == "category":
            for child in node.get_features() or []:
                walk(child, f"{path}/{child}" if path else child, depth + 1)
            return
        if node.is_implemented():
            out.append({"category": path.rsplit("/", 1)[0], **describe(node)})

    walk("Root", "", 0)
    return out


def first_feature(device, names: tuple[str, ...]) -> str | None:
    """The first of ``names`` (SFNC name, then the older vendor spelling) the camera has."""
    for name in names:
        node = device.get_feature(name)
        if node is not None and node.is_implemented():
            return name
    return None


def plain_number(value: float) -> str:
    """10000000.0 -> '10000000', 0.5 -> '0.5' (limits as a person would write them)."""
    return str(int(value)) if float(value).is_integer() else f"{value:.6g}"


def _limits(node, k: str) -> str:
    if k == "enumeration":
        return "one of " + ", ".join(node.dup_available_string_values() or [])
    unit = f" {node.get_unit()}" if node.get_unit() else ""
    text = f"{plain_number(node.get_min())}..{plain_number(node.get_max())}{unit}"
    if k == "integer" and node.get_inc() > 1:
        text += f" in steps of {node.get_inc()}"
    return text


def set_feature(device, name: str, value: Any, key: str) -> None:
    """Set feature ``name`` to ``value`` after checking it against the camera's feature tree.

    ``key`` is the config key path the value came from; every CameraConfigError starts
    with it. A command feature runs when ``value`` is true."""
    node = device.get_feature(name)
    if node is None or not node.is_implemented():
        raise CameraConfigError(
            f"{key}: the camera has no feature {name!r} (inspector camera features lists its own)"
        )
    if not node.is_available():
        raise CameraConfigError(
            f"{key}: {name} is not available now (another setting locks it, e.g. "
            "an auto mode or the trigger mode)"
        )
    k = kind(node)
    access = node.get_actual_access_mode().value_nick
    if k != "category" and access not in ("rw", "wo"):
        raise CameraConfigError(f"{key}: {name} is read-only on this camera")
    try:
        if k == "command":
            if value is not True:
                raise CameraConfigError(f"{key}: {name} is a command: give true to run it")
            node.execute()
        elif k == "boolean":
            if not isinstance(value, bool):
                raise CameraConfigError(f"{key}: {name} takes true or false, not {value!r}")
            node.set_value(value)
        elif k == "enumeration":
            entries = list(node.dup_available_string_values() or [])
            if str(value) not in entries:
                raise CameraConfigError(
                    f"{key}: {name} {value!r} is not offered by the camera ({_limits(node, k)})"
                )
            node.set_string_value(str(value))
        elif k in ("integer", "float"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise CameraConfigError(f"{key}: {name} takes a number, not {value!r}")
            if k == "integer" and value != int(value):
                raise CameraConfigError(f"{key}: {name} takes a whole number, not {value!r}")
            lo, hi = node.get_min(), node.get_max()
            if not lo <= value <= hi:
                raise CameraConfigError(
                    f"{key}: {name} {plain_number(value)} is outside the camera's limits {_limits(node, k)}"
                )
            if k == "integer":
                inc = max(1, node.get_inc())
                if (int(value) - lo) % inc:
                    raise CameraConfigError(
                        f"{key}: {name} {value} is not a step of the camera's ({_limits(node, k)})"
                    )
                node.set_value(int(value))
            else:
                node.set_value(float(value))
        elif k == "string":
            node.set_value(str(value))
        else:
            raise CameraConfigError(f"{key}: {name} is a {k} node, not a feature one can set")
    except gerror() as exc:
        raise CameraConfigError(
            f"{key}: the camera refused {name} = {value!r}: {exc.message}"
        ) from None
    log.debug("camera feature %s = %r", name, value)
