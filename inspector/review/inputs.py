"""What the model saw: a recorded part's model input, and where its heat map lies.

The recorder keeps the whole raw frame; its sidecar names the station's frame setup
(``preprocess``: geometry and bit depth) and the model (``model_id``). The model input is
that frame through the one preprocessing function (``contract.preprocess``) with the
sidecar's setup and the model's size, colour and interpolation, read from its manifest in
the models registry. It is made once per (image, sidecar, spec) into the cache folder as a
PNG, like thumbnails. A sidecar without a setup gets the whole frame resized as the model
does; a model not in the registry gets the station's region at its own size (no resize).
The page says which.

Heat maps are the recorder's ``STEM.heat.png`` beside the image: the map blended over the
whole frame, or the map alone over the model's input region when the station crops.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import cv2
import numpy as np

from ..contract.geometry import FrameSetup
from ..contract.manifest import file_digest
from ..contract.preprocess import (
    FrameError,
    PreprocessSpec,
    preprocess,
    setup_of_record,
    spec_from_record,
)
from .files import read_bytes, read_image, resolve
from .work import registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plan:
    """How a part's model input is made: ``spec`` (None: the image's own size decides, for
    a model not in the registry), the setup, and a line for the page."""

    setup: FrameSetup | None
    spec: PreprocessSpec | None
    note: str
    problem: str | None = None

    @property
    def whole_frame(self) -> bool:
        return self.setup is None or self.setup.geometry.empty


class ModelSpecs:
    """model_id -> the model's PreprocessSpec (size, colour, interpolation; no geometry),
    from the registry's manifests. The folders are looked at again after ``ttl`` seconds;
    each model file is hashed once (keyed by its path, size and modification time)."""

    def __init__(self, roots: list[Path], ttl: float = 60.0) -> None:
        self.roots = [Path(r) for r in roots]
        self.ttl = ttl
        self._lock = threading.Lock()
        self._at = -1e9
        self._by_id: dict[str, PreprocessSpec] = {}
        self._digests: dict[tuple[str, int, int], str] = {}

    def get(self, model_id: str) -> PreprocessSpec | None:
        with self._lock:
            if time.monotonic() - self._at > self.ttl:
                self._by_id = self._scan()
                self._at = time.monotonic()
            return self._by_id.get(model_id)

    def _scan(self) -> dict[str, PreprocessSpec]:
        out = {}
        for name, entry in registry.find(self.roots).items():
            onnx = entry["folder"] / "model.onnx"
            try:
                st = onnx.stat()
                key = (str(onnx), st.st_size, st.st_mtime_ns)
                if key not in self._digests:
                    self._digests[key] = file_digest(onnx)
                m = entry["manifest"]
                p = m["preprocess"]
                spec = PreprocessSpec(
                    size=(int(p["size"][0]), int(p["size"][1])),
                    color=p["color"],
                    interpolation=p.get("interpolation", "area"),
                )
            except (OSError, KeyError, TypeError, ValueError, IndexError) as exc:
                log.warning("models registry: %s skipped (%s)", name, exc)
                continue
            out[f"{m.get('name', 'model')}@{self._digests[key][:12]}"] = spec
        return out


def read_sidecar(roots: dict[str, Path], part: dict) -> tuple[dict | None, str | None]:
    """(the part's sidecar as a dict, or None with the reason); only inside its root."""
    path = resolve(roots, part["station"], part["sidecar"])
    if path is None:
        return None, "sidecar not found"
    try:
        data = json.loads(read_bytes(path, 4 << 20))
    except (OSError, ValueError, RecursionError) as exc:
        return None, f"sidecar unreadable: {exc}"
    if not isinstance(data, dict):
        return None, "sidecar is not a JSON object"
    return data, None


def plan(record: dict | None, models: ModelSpecs) -> Plan:
    """How this sidecar's part becomes its model input, and what the page says about it."""
    record = record or {}
    model_id = str(record.get("model_id") or "")
    try:
        setup = setup_of_record(record)
    except ValueError as exc:
        return Plan(None, None, "", f"the sidecar's preprocess block is malformed: {exc}")
    where = (
        "the sidecar names no geometry: the whole frame"
        if setup is None or setup.geometry.empty
        else f"the station's geometry ({setup.geometry.describe()})"
    )
    base = models.get(model_id) if model_id else None
    if base is None:
        note = (
            f"{where}; model {model_id or '(none)'} is not in the models registry, "
            "so at the region's own size (not resized)"
        )
        return Plan(setup, None, note)
    spec = spec_from_record(record, base)
    w, h = spec.size
    note = f"{where}, resized as the model does ({w}x{h}, {spec.color}, {spec.interpolation})"
    return Plan(setup, spec, note)


def spec_for(p: Plan, image: np.ndarray) -> PreprocessSpec:
    """The plan's spec; for a model not in the registry, the region at its own size."""
    if p.spec is not None:
        return p.spec
    setup = p.setup or FrameSetup()
    size = setup.geometry.output_size or (image.shape[1], image.shape[0])
    channels = 1 if image.ndim == 2 else image.shape[2]
    base = PreprocessSpec(size=size, color="gray" if channels == 1 else "bgr")
    return spec_from_record({"preprocess": setup.to_dict()}, base)


def encode(x: np.ndarray, color: str) -> bytes:
    """A model input as PNG, its pixels exactly the input's (RGB inputs stored as RGB)."""
    if color == "rgb":
        x = cv2.cvtColor(x, cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(".png", x)
    if not ok:
        raise FrameError("PNG encoding failed")
    return data.tobytes()


def model_input(image_path: Path, sidecar_key: str, p: Plan, cache: Path) -> Path:
    """The cached PNG of the part's model input, made once; FrameError when it can't be."""
    if p.problem:
        raise FrameError(p.problem)
    st = image_path.stat()
    spec_key = p.spec and (p.spec.size, p.spec.color, p.spec.interpolation)
    setup_key = p.setup.to_dict() if p.setup is not None else None
    key = hashlib.sha256(
        json.dumps(
            ["input", str(image_path), st.st_size, st.st_mtime_ns, sidecar_key]
            + [spec_key, setup_key],
            default=str,
        ).encode()
    ).hexdigest()
    out = Path(cache) / key[:2] / f"{key}.png"
    if out.is_file():
        return out
    image = read_image(image_path)
    if image is None:
        raise FrameError(f"cannot read {image_path.name}")
    spec = spec_for(p, image)
    data = encode(preprocess(image, spec), spec.color)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{threading.get_ident()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(out)
    return out


def heat_rel(image_rel: str) -> str:
    """The recorder's heat-map overlay beside an image: ``STEM.heat.png``."""
    p = PurePosixPath(image_rel)
    return str(p.with_name(p.stem + ".heat.png"))
