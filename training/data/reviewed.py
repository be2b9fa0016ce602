"""What the review workbench says of an image it labelled: the sidecar it writes beside the
image in the dataset folder (``<stem>.json``, the recorder's sidecar with a ``review`` block)
names the station and what the line said of the part, and the recorder's part of it the model
that was live then. ``datasets.scan`` keeps them as the image's metadata (``station``,
``line_result``, ``line_model``), so figures split by them like a CSV manifest's columns."""

from __future__ import annotations

import json
from pathlib import Path

SIDECAR_MAX_BYTES = 1 << 20
REVIEW_COLUMNS = ("station", "line_result", "line_model")
NOT_REVIEWED = "not reviewed"  # an image in a reviewed folder without a review of its own


def reviewed(image: Path) -> tuple[tuple[str, str], ...]:
    """The metadata of an image the review workbench labelled: from the sidecar beside it
    (``<stem>.json``), its ``review`` block's station and the line's verdict on the part.
    Nothing for an image without one, or with a sidecar that is not such a record."""
    sidecar = image.with_suffix(".json")
    try:
        if not sidecar.is_file() or sidecar.stat().st_size > SIDECAR_MAX_BYTES:
            return ()
        record = json.loads(sidecar.read_text(encoding="utf-8"))
        review = record.get("review")
    except (OSError, ValueError, AttributeError):
        return ()
    if not isinstance(review, dict):
        return ()
    said = {**review, "line_model": record.get("model_id")}
    return tuple((k, said[k]) for k in REVIEW_COLUMNS if isinstance(said.get(k), str) and said[k])


def metadata(images: list[Path]) -> list[tuple[tuple[str, str], ...]]:
    """Each image's review columns. Where any of them was reviewed, the others get
    ``not reviewed`` in every column (images added to a reviewed folder by hand), so the
    columns are every image's; where none was, no image has any."""
    found = [reviewed(p) for p in images]
    if not any(found):
        return found
    return [tuple((k, dict(m).get(k, NOT_REVIEWED)) for k in REVIEW_COLUMNS) for m in found]
