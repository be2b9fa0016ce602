"""``python -m training.bench.fusion``: the fusion is fitted on validation only and scored on
test; the line's either-fails rule is counted as the station decides."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from training.bench.fusion import main


def _write(folder: Path, names, labels, scores, column, threshold):
    folder.mkdir(parents=True)
    with (folder / "predictions.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "label", column, "result"])
        for n, lab, s in zip(names, labels, scores, strict=True):
            w.writerow([f"/data/{lab}/{n}", lab, f"{s:.6f}", "fail" if s >= threshold else "pass"])


def _split(root: Path, name: str, rng, n: int = 400):
    y = rng.random(n) < 0.3
    # two views of a defect: each model sees half of the evidence
    a, b = rng.normal(0, 1, n) + 1.5 * y, rng.normal(0, 1, n) + 1.5 * y
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    names = [f"{i:04d}.png" for i in range(n)]
    labels = ["defect" if d else "good" for d in y]
    _write(root / f"c-{name}", names, labels, sig(a - 1), "defect_score", 0.5)
    _write(root / f"a-{name}", names, labels, sig(b - 1), "anomaly_score", 0.5)
    return y, sig(a - 1) >= 0.5, sig(b - 1) >= 0.5


def test_the_fused_score_beats_either_model_and_either_fails_is_counted(tmp_path, capsys):
    rng = np.random.default_rng(3)
    _split(tmp_path, "val", rng)
    y, c_fail, a_fail = _split(tmp_path, "test", rng)
    out = tmp_path / "fusion.json"
    argv = ["--classifier", str(tmp_path / "c-val"), str(tmp_path / "c-test")]
    assert (
        main(
            [
                *argv,
                "--anomaly",
                str(tmp_path / "a-val"),
                str(tmp_path / "a-test"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    r = json.loads(out.read_text())
    t = r["test"]["auroc"]
    assert t["fused"] > max(t["classifier"], t["anomaly"]) + 0.03
    assert r["weights"]["classifier"] == pytest.approx(r["weights"]["anomaly"], rel=0.5)
    e = r["test"]["either_fails"]
    assert e["escape_rate"]["k"] == int(np.sum(y & ~(c_fail | a_fail)))
    assert e["false_reject_rate"]["k"] == int(np.sum(~y & (c_fail | a_fail)))
    assert e["escape_rate"]["n"] == int(y.sum()) and "upper" in e["escape_rate"]
    assert "fused" in capsys.readouterr().out


def test_predictions_of_different_images_are_refused(tmp_path):
    rng = np.random.default_rng(4)
    _split(tmp_path, "val", rng)
    _split(tmp_path, "test", rng, n=300)
    argv = ["--classifier", str(tmp_path / "c-val"), str(tmp_path / "c-test")]
    with pytest.raises(SystemExit, match="hold different images"):
        main([*argv, "--anomaly", str(tmp_path / "a-test"), str(tmp_path / "a-val")])
