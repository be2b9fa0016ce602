"""A run that learned nothing does not reach a line: train warns, export refuses (exit 2)
unless --force, and a forced export says so in the manifest."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="make test installs the train extra")

from inspector.cli import main  # noqa: E402
from training.common.guard import check  # noqa: E402


def test_the_limits_on_hand_made_scores():
    truth = np.array([0, 0, 0, 0, 1, 1, 1, 1], bool)
    good = check(truth, np.array([0.1, 0.2, 0.1, 0.3, 0.8, 0.9, 0.7, 0.6]), 0.5)
    assert good["passed"] and good["auroc"] == 1.0 and good["false_reject_rate"] == 0.0
    flat = check(truth, np.full(8, 0.4), 0.4)  # constant scores: no ranking, all rejected
    assert not flat["passed"] and len(flat["problems"]) == 2
    assert "AUROC 0.500" in flat["problems"][0] and "100%" in flat["problems"][1]
    strict = check(truth, np.array([0.1, 0.2, 0.6, 0.7, 0.8, 0.9, 0.7, 0.6]), 0.15)
    assert not strict["passed"] and "75%" in strict["problems"][0]


def test_export_refuses_a_run_that_learned_nothing(tmp_path, capsys):
    data = tmp_path / "data"
    rng = np.random.default_rng(5)
    for cls in ("good", "defect"):  # noise from one source under both labels: nothing to learn
        (data / cls).mkdir(parents=True)
        for i in range(30):
            img = rng.integers(0, 256, (32, 32), dtype=np.uint8)
            cv2.imwrite(str(data / cls / f"{cls}{i:02d}.png"), img)
    run, model = tmp_path / "run", tmp_path / "model.onnx"
    argv = ["train", "--data", str(data), "--out", str(run), "--model", "cnn", "--epochs", "1"]
    argv += ["--image-size", "32", "--set", "model.width=0.25", "--set", "train.learning_rate=1e-9"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "learned too little to reach a line" in err
    info = json.loads((run / "run.json").read_text())
    assert info["quality_gate"]["passed"] is False

    assert main(["export", str(run), "--out", str(model)]) == 2
    assert "learned too little" in capsys.readouterr().err
    assert not model.exists() and not model.with_suffix(".json").exists()

    assert main(["export", str(run), "--out", str(model), "--force"]) == 0
    assert "exported with --force" in capsys.readouterr().err
    manifest = json.loads(model.with_suffix(".json").read_text())
    assert manifest["quality_gate"]["forced"] is True
    assert manifest["quality_gate"]["problems"]


def test_parity_counts_a_part_at_the_threshold_as_a_tie_not_a_flip():
    """Keras and ONNX Runtime differ by ~1e-7; a score that close to the threshold may land on
    either side in any runtime. A difference beyond the tolerance is still a flip."""
    from training.classify.parity import compare as _compare

    info = {"classes": ["defect", "good"], "defect_classes": ["defect"]}
    y = np.array([0, 1, 1])
    ref = np.array([[0.5000001, 0.4999999], [0.2, 0.8], [0.1, 0.9]])
    near = np.array([[0.4999999, 0.5000001], [0.2, 0.8], [0.1, 0.9]])
    p = _compare(ref, near, y, info, threshold=0.5, tie=1e-4)
    assert p["flips"] == 0 and p["ties_at_threshold"] == 1
    far = np.array([[0.5000001, 0.4999999], [0.6, 0.4], [0.1, 0.9]])  # part 2 crosses for real
    p = _compare(ref, far, y, info, threshold=0.5, tie=1e-4)
    assert p["flips"] == 1 and p["ties_at_threshold"] == 0
    assert _compare(ref, near, y, info, threshold=0.5)["flips"] == 1  # no tie band: strict
