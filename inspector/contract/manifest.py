"""The model manifest: everything the line needs to run a model, carried inside model.onnx.

The manifest is a JSON object stored in the ONNX metadata under ``inspector.manifest``
(and beside the model as ``model.json`` for people). Schema version 1 fields:

- ``schema_version`` (1), ``name``, ``created``
- ``classes``: class names in output order; ``defect_classes``: which of them are defects
- ``input``: ``name``, ``shape`` ([null, H, W, C]), ``dtype`` ("uint8"), ``layout`` ("NHWC")
- ``preprocess``: ``size`` ([W, H]), ``color`` (gray|rgb|bgr), ``interpolation``, and
  the station's frame setup the model was trained with: ``geometry`` (``roi``, or
  ``corners`` + ``warp_size``, and ``camera``: ``matrix``, ``dist``, ``image_size``; ``{}``
  for whole frames) and ``bit_depth`` (null: from the data). Manifests written before
  geometry travelled have neither key; they load, and their geometry is unknown.
- ``output``: ``name``, ``kind`` ("softmax": one probability per class, or "sigmoid": one
  column, the probability that the part is defective), ``meaning`` (free text)
- ``thresholds``: per defect class ``{"value": t, "policy": ..., "metrics": {...}}``;
  a part fails when a defect score is >= its threshold. Optional (DESIGN 14; older
  manifests lack them): ``confidence`` (``escape_rate``, ``false_reject_rate``: ``k``,
  ``n``, ``rate``, ``upper``, ``interval``: exact binomial bounds on validation),
  ``promise``, ``warning``, ``curve`` (the trade-off, ``points``) and
  ``uncertain_band`` (``margin``: the width below the threshold whose scores fail as
  ``uncertain`` when the station says ``decision.uncertainty_margin: auto``)
- optional: ``dataset``, ``training``, ``parity``, ``image_stats``, ``versions``;
  ``outputs.class_map`` (``name``, ``kind`` "cam", ``shape`` [null, h, w]): a second output
  with the class-activation map of the defect score (``inspector export --heatmap``)

Writing needs the ``onnx`` package (``pip install defect-inspector[onnx]``); reading
uses only ONNX Runtime.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelError
from .geometry import FrameSetup, Geometry
from .preprocess import CHANNELS, INTERPOLATIONS, PreprocessSpec

METADATA_KEY = "inspector.manifest"
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Manifest:
    data: dict[str, Any]
    model_id: str

    @property
    def classes(self) -> list[str]:
        return list(self.data["classes"])

    @property
    def defect_classes(self) -> list[str]:
        return list(self.data["defect_classes"])

    @property
    def input_name(self) -> str:
        return self.data["input"]["name"]

    @property
    def output_kind(self) -> str:
        return self.data["output"]["kind"]

    @property
    def thresholds(self) -> dict[str, float]:
        return {k: float(v["value"]) for k, v in self.data["thresholds"].items()}

    @property
    def frame_setup(self) -> FrameSetup | None:
        """The geometry and bit depth the model was trained with (None: an older manifest
        that does not say)."""
        p = self.data["preprocess"]
        return FrameSetup.from_dict(p) if "geometry" in p else None

    def preprocess_spec(self, roi=None, remap=None, own_geometry: bool = True) -> PreprocessSpec:
        """The spec for this model. The station's geometry (``remap``: a ``Geometry``, or
        bare remap tables; ``roi``) wins; without one, the model's own geometry applies
        (offline tools), unless ``own_geometry`` is false (a station: its own or none)."""
        p = self.data["preprocess"]
        setup = self.frame_setup
        geometry = None
        if isinstance(remap, Geometry):
            geometry, remap = remap, None
        elif remap is None and roi:
            geometry = Geometry(roi=tuple(roi))
        elif remap is None and setup is not None and own_geometry:
            geometry = setup.geometry
        return PreprocessSpec(
            size=(int(p["size"][0]), int(p["size"][1])),
            color=p["color"],
            interpolation=p.get("interpolation", "area"),
            remap=remap,
            geometry=geometry,
            bit_depth=setup.bit_depth if setup is not None else None,
        )


def validate(data: Any, where: str = "manifest") -> list[str]:
    """Problems with a manifest dict, one line each (empty when valid)."""
    if not isinstance(data, dict):
        return [f"{where}: expected a JSON object"]
    problems = []

    def need(key, kind):
        if not isinstance(data.get(key), kind):
            problems.append(f"{where}: '{key}' missing or not a {kind.__name__}")
            return False
        return True

    if data.get("schema_version") != SCHEMA_VERSION:
        problems.append(
            f"{where}: schema_version {data.get('schema_version')!r} is not "
            f"{SCHEMA_VERSION} (re-export the model with this version)"
        )
    if need("classes", list) and need("defect_classes", list):
        classes = data["classes"]
        if len(classes) < 2 or len(set(classes)) != len(classes):
            problems.append(f"{where}: 'classes' needs at least two distinct names")
        missing = [c for c in data["defect_classes"] if c not in classes]
        if missing or not data["defect_classes"]:
            problems.append(f"{where}: 'defect_classes' must name at least one of {classes}")
    if need("input", dict):
        if not isinstance(data["input"].get("name"), str):
            problems.append(f"{where}: input.name missing")
        if data["input"].get("dtype", "uint8") != "uint8":
            problems.append(
                f"{where}: input.dtype must be uint8 (normalisation belongs in the graph)"
            )
    if need("preprocess", dict):
        p = data["preprocess"]
        size = p.get("size")
        if not (
            isinstance(size, list)
            and len(size) == 2
            and all(isinstance(s, int) and s > 0 for s in size)
        ):
            problems.append(f"{where}: preprocess.size must be [width, height]")
        if p.get("color") not in CHANNELS:
            problems.append(f"{where}: preprocess.color must be one of {list(CHANNELS)}")
        if p.get("interpolation", "area") not in INTERPOLATIONS:
            problems.append(
                f"{where}: preprocess.interpolation must be one of {list(INTERPOLATIONS)}"
            )
        if "geometry" in p:
            try:
                FrameSetup.from_dict(p)
            except ValueError as exc:
                problems.append(f"{where}: preprocess: {exc}")
    if need("output", dict) and data["output"].get("kind") not in ("softmax", "sigmoid"):
        problems.append(f"{where}: output.kind must be 'softmax' or 'sigmoid'")
    if need("thresholds", dict):
        for name in data.get("defect_classes") or []:
            t = data["thresholds"].get(name)
            value = t.get("value") if isinstance(t, dict) else None
            if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                problems.append(f"{where}: thresholds.{name}.value must be a number in [0, 1]")
            if isinstance(t, dict):
                problems += _threshold_confidence(t, f"{where}: thresholds.{name}")
    if "outputs" in data:
        outs = data["outputs"] if isinstance(data["outputs"], dict) else {"class_map": 0}
        cmap = outs.get("class_map", {"name": ""})
        if not (isinstance(cmap, dict) and isinstance(cmap.get("name"), str)):
            problems.append(f"{where}: outputs.class_map.name must name the map output")
    if (
        isinstance(data.get("output"), dict)
        and data["output"].get("kind") == "sigmoid"
        and isinstance(data.get("classes"), list)
        and len(data["classes"]) != 2
    ):
        problems.append(f"{where}: a sigmoid output needs exactly two classes (good, defect)")
    return problems


def _rate_ok(block: Any) -> bool:
    """A rate with its counts and bounds: ``{"k", "n", "rate", "upper", "interval"}``."""
    if not isinstance(block, dict):
        return False
    k, n = block.get("k"), block.get("n")
    if not (isinstance(k, int) and isinstance(n, int) and 0 <= k <= n):
        return False
    for key in ("rate", "upper"):
        v = block.get(key)
        if v is not None and not (isinstance(v, (int, float)) and 0.0 <= v <= 1.0):
            return False
    iv = block.get("interval")
    return iv is None or (
        isinstance(iv, list)
        and len(iv) == 2
        and all(isinstance(v, (int, float)) for v in iv)
        and 0.0 <= iv[0] <= iv[1] <= 1.0
    )


def _threshold_confidence(t: dict, where: str) -> list[str]:
    """The optional fields a threshold carries about its confidence (DESIGN 14): each, when
    present, must be what the station and the workbench read. Older manifests lack them."""
    problems = []
    conf = t.get("confidence")
    rates = ("escape_rate", "false_reject_rate")
    if conf is not None and not (
        isinstance(conf, dict) and all(_rate_ok(conf.get(k)) for k in rates)
    ):
        problems.append(
            f"{where}.confidence: escape_rate and false_reject_rate need k <= n and "
            "rates and bounds in [0, 1]"
        )
    band = t.get("uncertain_band")
    if band is not None:
        margin = band.get("margin") if isinstance(band, dict) else None
        if (
            not isinstance(margin, (int, float))
            or isinstance(margin, bool)
            or not (0.0 <= margin < 1.0)
        ):
            problems.append(f"{where}.uncertain_band.margin must be a number in [0, 1)")
    curve = t.get("curve")
    if curve is not None and not (
        isinstance(curve, dict)
        and isinstance(curve.get("points"), list)
        and all(
            isinstance(p, dict) and isinstance(p.get("threshold"), (int, float))
            for p in curve["points"]
        )
    ):
        problems.append(f"{where}.curve.points must be a list of points with a threshold")
    if t.get("warning") is not None and not isinstance(t["warning"], str):
        problems.append(f"{where}.warning must be text")
    return problems


def parse(text: str, model_path: Path | str, file_digest: str) -> Manifest:
    """Parse and validate the JSON text of a manifest; raise ModelError when it's unusable."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelError(f"{model_path}: manifest is not valid JSON ({exc})") from None
    problems = validate(data, f"{model_path}: manifest")
    if problems:
        raise ModelError(*problems)
    model_id = f"{data.get('name', Path(model_path).stem)}@{file_digest[:12]}"
    return Manifest(data=data, model_id=model_id)


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sidecar_path(model_path: Path) -> Path:
    return Path(model_path).with_suffix(".json")


def embed(model_path: Path, manifest: dict[str, Any], write_sidecar: bool = True) -> None:
    """Store ``manifest`` in the ONNX file's metadata (and beside it as JSON)."""
    problems = validate(manifest)
    if problems:
        raise ModelError(*problems)
    try:
        import onnx
    except ImportError:
        raise ModelError(
            "writing a manifest needs the onnx package: pip install 'defect-inspector[onnx]'"
        ) from None
    model = onnx.load(str(model_path))
    text = json.dumps(manifest, sort_keys=True)
    for prop in list(model.metadata_props):
        if prop.key == METADATA_KEY:
            model.metadata_props.remove(prop)
    model.metadata_props.add(key=METADATA_KEY, value=text)
    onnx.save(model, str(model_path))
    if write_sidecar:
        sidecar_path(model_path).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
