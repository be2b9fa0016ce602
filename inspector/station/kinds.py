"""Model kinds, registered in one place: what a manifest's ``kind`` means to the station.

A manifest without ``kind`` is a ``classify`` model. A new kind is one entry here (and its
training room in ``training/``); the station reads everything else from the entry.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..contract.manifest import Manifest
from ..contract.records import Reason
from ..errors import ModelError


@dataclass(frozen=True)
class Kind:
    """A model kind: ``fail_reason`` what a part it fails names; ``map_kind`` its heat map
    ('anomaly': the normalised patch scores; 'cam': a class-activation map, present when
    exported with one); ``beside`` whether it may run as a unit's second model
    (``anomaly_model``) beside the classifier. Any kind may be a unit's ``model``."""

    name: str
    fail_reason: Reason
    map_kind: str
    beside: bool


KINDS: dict[str, Kind] = {
    "classify": Kind("classify", Reason.DEFECT, "cam", beside=False),
    "anomaly": Kind("anomaly", Reason.ANOMALY, "anomaly", beside=True),
}


def kind_of(manifest: Manifest) -> Kind:
    """The registered kind of a model (ModelError for one this runtime does not know)."""
    name = manifest.data.get("kind") or "classify"
    kind = KINDS.get(name)
    if kind is None:
        raise ModelError(
            f"model {manifest.model_id}: kind {name!r} is not one this station runs "
            f"(known: {', '.join(KINDS)})"
        )
    return kind
