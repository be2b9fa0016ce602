"""Test-time flips in the exported graph (``inspector export --tta``): a part judged the same
whichever way it lies, its heat map turning with it, the threshold chosen again on validation,
and a run that never saw flips refused."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="make test installs the train extra")

from inspector.cli import main  # noqa: E402
from inspector.station.classifier import Classifier  # noqa: E402
from inspector.station.config import ModelSection  # noqa: E402
from training import TrainingError  # noqa: E402
from training.classify.tta import transforms_of  # noqa: E402

SIZE = 48


def _write(folder: Path, n: int, seed: int) -> None:
    """Grey parts with uneven light; a defect is a bright bar off the centre (so a flip or a
    turn moves it)."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        ramp = np.linspace(-1, 1, SIZE)[None, :] * rng.uniform(-15, 15)
        img = np.clip(rng.uniform(70, 140) + ramp + rng.normal(0, 6, (SIZE, SIZE)), 0, 255)
        img = img.astype(np.uint8)
        defect = i % 2 == 0
        if defect:
            y, x = rng.integers(3, SIZE // 2 - 12, 2)
            img[y : y + 12, x : x + 5] = 235
        label = "defect" if defect else "good"
        (folder / label).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / label / f"{i:04d}.png"), img)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("tta")
    _write(root / "data", 160, seed=5)
    run = root / "run"
    argv = ["train", "--data", str(root / "data"), "--out", str(run), "--epochs", "10"]
    argv += ["--model", "cnn", "--image-size", str(SIZE)]
    for s in ("model.width=0.5", "model.pooling=avg", "augment.rot90=true", "train.patience=20"):
        argv += ["--set", s]
    assert main(argv) == 0
    plain, tta = root / "plain.onnx", root / "tta.onnx"
    assert main(["export", str(run), "--out", str(plain), "--force"]) == 0
    assert main(["export", str(run), "--out", str(tta), "--tta", "--force"]) == 0
    return run, plain, tta, root / "data"


def _images(data: Path) -> np.ndarray:
    files = sorted(data.glob("*/*.png"))[::8]
    return np.stack([cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in files])


def _symmetries(img: np.ndarray) -> list[np.ndarray]:
    return [np.rot90(f, k) for f in (img, img[:, ::-1]) for k in range(4)]


def test_a_part_is_judged_the_same_whichever_way_it_lies(exported):
    _, plain, tta, data = exported
    m = json.loads(tta.with_suffix(".json").read_text())
    assert m["tta"]["transforms"] == 8  # trained with flips and quarter turns: all 8
    with_tta = Classifier(ModelSection(path=tta, warmup_runs=0))
    without = Classifier(ModelSection(path=plain, warmup_runs=0))
    spread_tta, spread_plain = [], []
    for img in _images(data):
        views = np.stack([np.ascontiguousarray(v)[..., None] for v in _symmetries(img)])
        spread_tta.append(float(np.ptp(with_tta.run(views)[:, 0])))
        spread_plain.append(float(np.ptp(without.run(views)[:, 0])))
    assert max(spread_tta) < 1e-4  # the verdict cannot depend on how the part lies
    assert max(spread_plain) > 10 * max(spread_tta)  # it does without the flips


def test_the_heat_map_turns_with_the_part(exported):
    _, _, tta, data = exported
    m = json.loads(tta.with_suffix(".json").read_text())
    assert "class_map" in m["outputs"] and m["parity"]["map_max_rel_diff"] < 1e-4
    clf = Classifier(ModelSection(path=tta, warmup_runs=0))
    for img in _images(data)[:4]:
        views = [img, np.rot90(img, 1), img[:, ::-1], np.rot90(img[::-1], 1)]
        _, maps = clf.run_with_maps(np.stack([np.ascontiguousarray(v)[..., None] for v in views]))
        tol = 1e-4 * float(np.abs(maps).max())
        np.testing.assert_allclose(np.rot90(maps[0], 1), maps[1], atol=tol)
        np.testing.assert_allclose(maps[0][:, ::-1], maps[2], atol=tol)
        np.testing.assert_allclose(np.rot90(maps[0][::-1], 1), maps[3], atol=tol)


def test_the_threshold_is_chosen_again_on_the_averaged_validation_scores(exported):
    run, plain, tta, _ = exported
    mp = json.loads(plain.with_suffix(".json").read_text())
    mt = json.loads(tta.with_suffix(".json").read_text())
    t_plain = mp["thresholds"]["defect"]
    t_tta = mt["thresholds"]["defect"]
    assert mt["tta"]["threshold_without_tta"] == t_plain["value"]
    assert t_tta["policy"] == t_plain["policy"]
    # its validation figures are those of the flipped-and-averaged scores, with their counts
    assert t_tta["metrics"] != t_plain["metrics"] or t_tta["value"] != t_plain["value"]
    assert mt["parity"]["flips"] == 0


def test_a_run_trained_without_flips_is_refused_with_the_reason():
    with pytest.raises(TrainingError, match="without flips or quarter turns"):
        transforms_of(SimpleNamespace(flip=False, rot90=False))
    assert len(transforms_of(SimpleNamespace(flip=True, rot90=False))) == 4
    assert len(transforms_of(SimpleNamespace(flip=False, rot90=True))) == 8


def test_the_workbench_exports_a_finished_run_again_with_test_time_flips(exported, tmp_path):
    """The train page's Export button: a finished run exported with the flips into a new model
    folder the models page lists; 'even if it learned too little' is the admin's alone."""
    import re
    import shutil
    import time

    from .review_helpers import follow, workbench
    from .test_review import client_as

    run = exported[0]
    _cfg, app = workbench(tmp_path, parts=6)
    copy = tmp_path / "registry" / "bars"  # a run kept in a registry folder
    shutil.copytree(run, copy)
    store = app.state.bench.store
    rid = store.add_run("bars", str(copy), "reviewer", 10)
    store.set_run(rid, status="done", ended=time.time())

    reviewer, rtoken = client_as(app, "reviewer")
    page = reviewer.get("/train").text
    assert f'action="/train/{rid}/export"' in page and 'name="tta"' in page
    assert 'name="force"' not in page, "the force option is the admin's"
    r = reviewer.post(f"/train/{rid}/export", data={"csrf": rtoken, "tta": "on", "force": "on"})
    assert r.status_code == 403 and not list(copy.glob("export-*"))

    admin, atoken = client_as(app, "admin")
    assert 'name="force"' in admin.get("/train").text
    r = admin.post(f"/train/{rid}/export", data={"csrf": atoken, "tta": "on", "force": "on"})
    assert r.status_code == 200 and r.url.path.startswith("/train/export/"), r.text[-1500:]
    r = follow(admin, r)
    assert 'data-status="done"' in r.text and 'id="exported"' in r.text, r.text[-3000:]
    (folder,) = copy.glob("export-*-tta")
    manifest = json.loads((folder / "model.json").read_text())
    assert manifest["tta"]["transforms"] == 8
    name = re.search(r'id="to-models">([^<]+)<', r.text).group(1)
    assert name == f"registry/bars/{folder.name}"
    assert f'data-model="{name}"' in admin.get("/models").text, "the models page lists it"

    # a run that has not finished training has nothing to export: said, nothing started
    rid2 = store.add_run("fresh", str(tmp_path / "runs" / "fresh"), "admin", 3)
    r = admin.post(f"/train/{rid2}/export", data={"csrf": atoken})
    assert r.status_code == 400 and "has not finished training" in r.text
    assert admin.post("/train/999999/export", data={"csrf": atoken}).status_code == 404
    gone = admin.get("/train/export/999999")
    assert gone.status_code == 404 and "No such export" in gone.text
