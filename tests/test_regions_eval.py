"""``inspector evaluate`` compares an exported model's heat maps with the boxes reviewers drew
(the dataset sidecars' ``review.regions``): pixel AUROC and whether the map's maximum lies
in a box. Boxes around the drawn defects score high; the same boxes moved away score low."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from inspector.lab.modelkit import synthetic_part

DEMO = Path(__file__).resolve().parents[1] / "inspector" / "models" / "demo.onnx"


def dataset(root: Path, moved: bool = False, n: int = 12) -> Path:
    """Good and defective synthetic parts; each defect's sidecar carries a box around the
    drawn mark (``moved``: the box mirrored to the other side of the part)."""
    rng = np.random.default_rng(3)
    for label in ("good", "defect"):
        (root / label).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        cv2.imwrite(str(root / "good" / f"g{i}.png"), synthetic_part(rng, False))
        img = synthetic_part(rng, True)
        cv2.imwrite(str(root / "defect" / f"d{i}.png"), img)
        mark = (cv2.medianBlur(img, 21).astype(np.int16) - img) > 30
        ys, xs = np.nonzero(mark)
        x, y = int(xs.min()), int(ys.min())
        w, h = int(xs.max()) - x + 1, int(ys.max()) - y + 1
        if moved:
            x, y = img.shape[1] - x - w, img.shape[0] - y - h
        box = {"x": x, "y": y, "w": w, "h": h, "label": "defect"}
        meta = {"review": {"label": "defect", "regions": [box]}}
        (root / "defect" / f"d{i}.json").write_text(json.dumps(meta))
    return root


@pytest.mark.parametrize("moved", [False, True], ids=["on-the-defect", "moved-away"])
def test_evaluate_scores_the_heat_maps_against_the_drawn_boxes(tmp_path, moved):
    from training.classify.evaluate import evaluate

    data = dataset(tmp_path / "data", moved)
    m = evaluate(DEMO, data, tmp_path / "report")
    r = m["regions"]
    assert r["images"] == 12 and 0 < r["pixels_in_boxes"] < r["pixels"]
    if moved:
        assert r["pixel_auroc"] < 0.6 and r["max_in_box"] < 0.3, r
    else:
        assert r["pixel_auroc"] > 0.8 and r["max_in_box"] >= 0.75, r
    assert json.loads((tmp_path / "report" / "metrics.json").read_text())["regions"] == r


def test_without_boxes_there_is_no_regions_section(tmp_path):
    from training.classify.evaluate import evaluate

    data = dataset(tmp_path / "data")
    for sidecar in data.rglob("*.json"):
        sidecar.unlink()
    assert "regions" not in evaluate(DEMO, data, tmp_path / "report")
