"""Several runs exported as one model (``inspector export RUN --with RUN2``): the station gets
one ONNX file whose scores are the mean of the members', with the threshold chosen again on
validation; runs that would leak validation images into the ensemble are refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="make test installs the train extra")

from inspector.cli import main  # noqa: E402
from inspector.station.classifier import Classifier  # noqa: E402
from inspector.station.config import ModelSection  # noqa: E402

from .test_tta import SIZE, _images, _write  # noqa: E402


def _train(data: Path, run: Path, *sets: str) -> Path:
    argv = ["train", "--data", str(data), "--out", str(run), "--epochs", "6"]
    argv += ["--model", "cnn", "--image-size", str(SIZE)]
    for s in ("model.width=0.5", "model.pooling=avg", "train.patience=20", *sets):
        argv += ["--set", s]
    assert main(argv) == 0
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ensemble")
    _write(root / "data", 120, seed=11)
    a = _train(root / "data", root / "a", "train.seed=1")
    b = _train(root / "data", root / "b", "train.seed=2")
    return root, a, b


def _export(run: Path, out: Path, *extra: str) -> dict:
    assert main(["export", str(run), "--out", str(out), "--force", *extra]) == 0
    return json.loads(out.with_suffix(".json").read_text())


def test_the_ensemble_scores_a_part_as_the_mean_of_its_members(runs, capsys):
    root, a, b = runs
    ma = _export(a, root / "a.onnx")
    _export(b, root / "b.onnx")
    capsys.readouterr()
    me = _export(a, root / "ab.onnx", "--with", str(b))
    assert "ensemble of 2 runs" in capsys.readouterr().out
    x = _images(root / "data")[..., None]
    one = {
        n: Classifier(ModelSection(path=root / f"{n}.onnx", warmup_runs=0))
        for n in ["a", "b", "ab"]
    }
    mean = (one["a"].run(x) + one["b"].run(x)) / 2
    np.testing.assert_allclose(one["ab"].run(x), mean, atol=1e-5)
    # so do the heat maps, and the one file keeps the station's contract
    (_, map_a), (_, map_b) = one["a"].run_with_maps(x[:4]), one["b"].run_with_maps(x[:4])
    _, map_ab = one["ab"].run_with_maps(x[:4])
    np.testing.assert_allclose(map_ab, (map_a + map_b) / 2, atol=1e-4 * np.abs(map_ab).max())
    e = me["ensemble"]
    assert [m["seed"] for m in e["members"]] == [1, 2]
    assert [Path(m["run"]).name for m in e["members"]] == ["a", "b"]
    # the threshold: the first run's policy, chosen again on the mean's validation scores
    assert e["threshold_of_first_run"] == ma["thresholds"]["defect"]["value"]
    assert me["thresholds"]["defect"]["policy"] == ma["thresholds"]["defect"]["policy"]
    assert me["parity"]["flips"] == 0 and me["parity"]["max_abs_diff"] <= 1e-4
    assert "mean over the 2 members" in me["outputs"]["class_map"]["meaning"]


def test_the_ensemble_takes_test_time_flips_too(runs):
    root, a, b = runs
    m = _export(a, root / "ab-tta.onnx", "--with", str(b), "--tta")
    assert m["tta"]["transforms"] == 4 and len(m["ensemble"]["members"]) == 2
    assert m["parity"]["flips"] == 0


@pytest.mark.parametrize(
    "other, words",
    [
        ("split", "it was split differently from"),
        ("same", "the same run twice"),
        ("none", "not a finished run folder"),
    ],
)
def test_runs_that_cannot_be_averaged_are_refused_by_name(runs, tmp_path, capsys, other, words):
    root, a, _ = runs
    if other == "split":  # another split: a's validation images are among its training images
        member = _train(root / "data", tmp_path / "c", "split.seed=9")
    elif other == "same":
        member = a
    else:
        member = tmp_path / "empty"
        member.mkdir()
    out = tmp_path / "x.onnx"
    assert main(["export", str(a), "--out", str(out), "--force", "--with", str(member)]) != 0
    err = capsys.readouterr().err
    assert words in err and not out.exists()
    if other == "split":
        assert "validation and test images are among its training images" in err


def test_the_workbench_exports_two_finished_runs_as_one_model(runs, tmp_path):
    """The train page's Export button with 'averaged with': a finished run and another one
    become one model folder the models page lists; a run cannot be averaged with itself or
    with one that has not finished, and says so."""
    import shutil
    import time

    from .review_helpers import follow, workbench
    from .test_review import client_as

    _root, a, b = runs
    _cfg, app = workbench(tmp_path, parts=6)
    store = app.state.bench.store
    rids = {}
    for name, run in (("bars-a", a), ("bars-b", b)):
        copy = tmp_path / "registry" / name
        shutil.copytree(run, copy, ignore=shutil.ignore_patterns("export-*", "*.onnx"))
        rids[name] = store.add_run(name, str(copy), "reviewer", 6)
        store.set_run(rids[name], status="done", ended=time.time())
    fresh = store.add_run("fresh", str(tmp_path / "runs" / "fresh"), "reviewer", 3)
    reviewer, token = client_as(app, "reviewer")
    page = reviewer.get("/train").text
    assert f'<option value="{rids["bars-b"]}">bars-b</option>' in page
    assert f'<option value="{fresh}">' not in page, "only finished runs are offered"

    url = f"/train/{rids['bars-a']}/export"
    for other, words in ((rids["bars-a"], "not averaged with itself"), (fresh, "not a finished run"),
                         ("x1", "not a finished run")):  # fmt: skip
        r = reviewer.post(url, data={"csrf": token, "with": str(other)})
        assert r.status_code == 400 and words in r.text, r.text[-800:]
    assert not list((tmp_path / "registry" / "bars-a").glob("export-*")), "nothing started"

    # these small runs learned too little for a line: the admin exports them anyway
    admin, atoken = client_as(app, "admin")
    r = admin.post(url, data={"csrf": atoken, "with": str(rids["bars-b"]), "force": "on"})
    assert r.status_code == 200 and r.url.path.startswith("/train/export/"), r.text[-1500:]
    assert "averaged with run bars-b" in r.text
    r = follow(admin, r)
    assert 'data-status="done"' in r.text and 'id="exported"' in r.text, r.text[-3000:]
    (folder,) = (tmp_path / "registry" / "bars-a").glob("export-*-ensemble")
    manifest = json.loads((folder / "model.json").read_text())
    assert [Path(m["run"]).name for m in manifest["ensemble"]["members"]] == ["bars-a", "bars-b"]
    assert f'data-model="registry/bars-a/{folder.name}"' in reviewer.get("/models").text
