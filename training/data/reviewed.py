"""What the review workbench says of an image it labelled: the sidecar it writes beside the
image in the dataset folder (``<stem>.json``, the recorder's sidecar with a ``review`` block)
names the station and what the line said of the part, and the recorder's part of it the model
that was live then and when the part was triggered. ``datasets.scan`` keeps them as the
image's metadata (``station``, ``line_result``, ``line_model``, ``day``: the trigger's date in
this machine's local time), so figures split by them like a CSV manifest's columns. The
automatic split (``training.common.groups``) takes ``day`` while it has at most 12 values;
``inspector evaluate --by day`` asks for it beyond that."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

SIDECAR_MAX_BYTES = 1 << 20
REVIEW_COLUMNS = ("station", "line_result", "line_model", "day")
NOT_REVIEWED = "not reviewed"  # an image in a reviewed folder without a review of its own
UNKNOWN = "unknown"  # a reviewed image whose sidecar does not say (no trigger time, say)


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
    said = {**review, "line_model": record.get("model_id"), "day": _day(record.get("t_trigger"))}
    return tuple((k, said[k]) for k in REVIEW_COLUMNS if isinstance(said.get(k), str) and said[k])


def _day(t) -> str | None:
    """The local date of an epoch time in seconds (the recorder's ``t_trigger``)."""
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
        return None
    try:
        return time.strftime("%Y-%m-%d", time.localtime(t))
    except (OverflowError, OSError, ValueError):
        return None


def metadata(images: list[Path]) -> list[tuple[tuple[str, str], ...]]:
    """Each image's review columns. Where any of them was reviewed, the others get
    ``not reviewed`` in every column (images added to a reviewed folder by hand), and a
    reviewed image's sidecar that does not say one of them ``unknown``, so the columns are
    every image's; where none was, no image has any."""
    found = [reviewed(p) for p in images]
    if not any(found):
        return found
    return [
        tuple((k, dict(m).get(k, UNKNOWN if m else NOT_REVIEWED)) for k in REVIEW_COLUMNS)
        for m in found
    ]
