"""Which frame setup (geometry, bit depth) a dataset's images get before the model's resize.

The station feeds its model a region of the frame (``preprocess.roi`` or ``corners``,
through the camera calibration) while its recorder keeps the whole raw frame, with the
station's ``FrameSetup`` in the JSON sidecar beside it. Training and evaluation apply that
setup through the one preprocessing function, so a recorded frame becomes exactly the
input the station gave the model. The setup comes from:

- the recordings' sidecars: every image that has one must say the same;
- ``--geometry STATION.yaml`` (``geometry:`` in the training config): that station's
  ``preprocess`` and ``source.bit_depth``; sidecars that say otherwise are an error;
- the model (``evaluate``): what it was trained with; the images must agree with it.

Plain images (no sidecars, no ``--geometry``) are used whole, as before.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from inspector.contract.geometry import FrameSetup
from inspector.contract.preprocess import setup_of_record
from inspector.contract.preprocess import spec_with as spec_with  # moved to the contract
from inspector.contract.schema import load_yaml, setting
from inspector.errors import InspectorError

from .. import TrainingError


def station_setup(path: Path) -> FrameSetup:
    """The frame setup of a station config: its ``preprocess`` geometry (with the camera
    file it names) and ``source.bit_depth``. Other sections are not checked, so a config
    copied from the line PC (its password file elsewhere) serves."""
    from inspector.station.config import PreprocessSection, StationConfig

    fields = [
        (f.name, Any, setting(None, ""))
        for f in dataclasses.fields(StationConfig)
        if f.name != "preprocess"
    ]
    fields.append(("preprocess", PreprocessSection, setting(factory=PreprocessSection)))
    loose = dataclasses.make_dataclass("StationGeometry", fields, frozen=True, kw_only=True)
    try:
        cfg = load_yaml(loose, Path(path))
        geometry = cfg.preprocess.geometry()
    except InspectorError as exc:
        raise TrainingError(*(f"--geometry: {p}" for p in exc.problems)) from None
    depth = (cfg.source or {}).get("bit_depth") if isinstance(cfg.source, dict) else None
    try:
        return FrameSetup(geometry, depth)
    except ValueError as exc:
        raise TrainingError(f"--geometry {path}: source.{exc}") from None


def recorded(paths: list[Path]) -> tuple[dict[FrameSetup, Path], list[Path]]:
    """The setups the images' sidecars name (each with its first image), and the images
    without one (no sidecar, or a sidecar from before setups were recorded)."""
    seen: dict[FrameSetup, Path] = {}
    unknown: list[Path] = []
    for path in paths:
        side = Path(path).with_suffix(".json")
        try:
            data = json.loads(side.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            unknown.append(path)
            continue
        try:
            setup = setup_of_record(data)
        except ValueError as exc:
            raise TrainingError(f"{side}: preprocess: {exc}") from None
        if setup is None:
            unknown.append(path)
            continue
        seen.setdefault(setup, path)
    return seen, unknown


def resolve(
    paths: list[Path],
    given: FrameSetup | None = None,
    model: FrameSetup | None = None,
    model_name: str = "the model",
) -> FrameSetup:
    """The one setup for these images; TrainingError when they, ``--geometry`` and the
    model do not agree."""
    if given is not None and model is not None and given != model:
        raise TrainingError(
            f"--geometry says {given.describe()}, but {model_name} was trained with "
            f"{model.describe()}"
        )
    want = model or given
    seen, unknown = recorded(paths)
    if want is not None:
        for setup, path in seen.items():
            if setup != want:
                whose = model_name + " was trained with" if model else "--geometry says"
                raise TrainingError(
                    f"{path} was recorded with {setup.describe()}, but {whose} "
                    f"{want.describe()}; keep each station setup in a dataset of its own"
                )
        return want
    if len(seen) > 1:
        (a, pa), (b, pb) = list(seen.items())[:2]
        raise TrainingError(
            f"the recordings disagree on the station's frame setup: {pa} was recorded with "
            f"{a.describe()}, {pb} with {b.describe()}; keep each station setup in a "
            "dataset of its own"
        )
    if seen:
        setup, path = next(iter(seen.items()))
        if unknown and not setup.plain:
            raise TrainingError(
                f"{len(unknown)} image(s) (e.g. {unknown[0]}) have no recorder sidecar saying "
                f"how they were taken, while {path} was recorded with {setup.describe()}; "
                "give --geometry STATION.yaml to apply one setup to all, or remove them"
            )
        return setup
    return FrameSetup()


def of_run(info: dict) -> FrameSetup | None:
    """The setup a run folder was trained with (None: a run from before it was recorded)."""
    p = info.get("preprocess") or {}
    return FrameSetup.from_dict(p) if "geometry" in p else None
