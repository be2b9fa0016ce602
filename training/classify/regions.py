"""Where the model looks against where reviewers drew the defect: the ``regions`` section of
``inspector evaluate``'s metrics.

The boxes drawn on the workbench's part page travel into the dataset beside each image (its
sidecar's ``review.regions``, in the recorded frame's pixels). The model's heat map (an
exported classifier's ``class_map``, or an anomaly model's map) covers the part of the frame
the model saw: the whole frame, or the station's ROI. Laid over that part and compared with
the boxes it gives:

- ``pixel_auroc``: every pixel of the images with boxes, inside a box counting as defect,
  scored by the map (upsampled bilinearly, as the overlay is drawn);
- ``max_in_box``: the share of those images whose map maximum (its top cell, at the map's
  own resolution) overlaps one of their boxes.

Images without boxes are left out. A geometry that remaps the frame (corners, a camera
calibration) is not mapped back: the section says so instead of comparing wrong pixels.

Example::

    section = region_metrics(maps, files, frame_setup)   # maps: (N, h, w), files: N paths
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..common.metrics import auroc


def boxes(image: Path) -> list[tuple[int, int, int, int]]:
    """The reviewers' boxes (x, y, w, h in frame pixels) in the image's sidecar; [] without."""
    try:
        meta = json.loads(Path(image).with_suffix(".json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    review = meta.get("review") if isinstance(meta, dict) else None
    regions = review.get("regions") if isinstance(review, dict) else None
    out = []
    for r in regions if isinstance(regions, list) else []:
        try:
            x, y, w, h = (int(round(float(r[k]))) for k in ("x", "y", "w", "h"))
        except (KeyError, TypeError, ValueError):
            continue
        if w > 0 and h > 0:
            out.append((x, y, w, h))
    return out


def region_metrics(maps: np.ndarray, files: list[str], setup) -> dict | None:
    """The section (see the module), or None when no image has boxes."""
    import cv2

    boxed = [(m, Path(f), b) for m, f in zip(maps, files, strict=True) if (b := boxes(Path(f)))]
    if not boxed:
        return None
    geometry = setup.geometry if setup is not None else None
    if geometry is not None and geometry.needs_remap:
        return {
            "images": len(boxed),
            "skipped": "the model sees a remapped frame (corners or a camera calibration); "
            "its map is not mapped back onto the frame's boxes",
        }
    scores, truth, hits = [], [], 0
    for amap, path, bxs in boxed:
        frame = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if frame is None:
            continue
        fh, fw = frame.shape[:2]
        x0, y0, w, h = geometry.roi if geometry is not None and geometry.roi else (0, 0, fw, fh)
        heat = cv2.resize(np.asarray(amap, np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
        inside = np.zeros((h, w), bool)
        for bx, by, bw, bh in bxs:  # frame pixels -> the model's part of the frame
            c0, r0 = max(bx - x0, 0), max(by - y0, 0)
            c1, r1 = min(bx - x0 + bw, w), min(by - y0 + bh, h)
            if c1 > c0 and r1 > r0:
                inside[r0:r1, c0:c1] = True
        if not inside.any():
            continue  # the boxes lie outside what the model saw
        grid = np.asarray(amap)  # its top cell, at the map's own resolution
        r, c = np.unravel_index(int(np.argmax(grid)), grid.shape)
        rows, cols = grid.shape
        cell = inside[r * h // rows : (r + 1) * h // rows, c * w // cols : (c + 1) * w // cols]
        hits += bool(cell.any())
        scores.append(heat.ravel())
        truth.append(inside.ravel())
    if not scores:
        return {"images": 0, "skipped": "no box lies inside the part of the frame the model saw"}
    t, s = np.concatenate(truth), np.concatenate(scores)
    return {
        "images": len(scores),
        "pixels": int(t.size),
        "pixels_in_boxes": int(t.sum()),
        "pixel_auroc": auroc(t, s),
        "max_in_box": hits / len(scores),
    }
