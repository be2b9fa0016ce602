"""``inspector bench accuracy --members N``: the ELPV recipe trained N times from seeds 1..N and
judged as one model, on a small stratified subset of the real ELPV cells (the benchmark's own
split, model and figures; a tiny network so the check takes about half a minute)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inspector.cli import main

pytest.importorskip("tensorflow", reason="make test installs the train extra")
pytest.importorskip("elpv_dataset", reason="make test installs the train extra")

# the from-scratch recipe at 32 px, two epochs: what is checked is how the members are
# trained, kept and judged, not how good they are
SMALL = ("model.width=0.25", "train.batch_size=16")


def _bench(work: Path, out: Path, *extra: str) -> int:
    argv = ["bench", "accuracy", "--work", str(work), "--out", str(out)]
    argv += ["--model-type", "cnn", "--image-size", "32", "--epochs", "2"]
    for s in SMALL:
        argv += ["--set", s]
    return main([*argv, *extra])


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    from training.data.elpv import import_elpv

    work = tmp_path_factory.mktemp("members")
    import_elpv(work / "elpv", limit=160)  # the benchmark imports it only when missing
    out = work / "pair.json"
    # two epochs at 32 px learn too little for export's gate (tests/test_guard.py holds it):
    # opened here, so that the members are trained, exported and judged as the benchmark does
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("training.common.guard.MIN_AUROC", 0.0)
        mp.setattr("training.common.guard.MAX_FALSE_REJECT_RATE", 1.0)
        assert _bench(work, out, "--members", "2") == 0
        # and once more with --reuse, which must judge the same two without training them
        stamps = [(work / d / "run.json").stat().st_mtime_ns for d in ("run", "run-2")]
        again = work / "again.json"
        assert _bench(work, again, "--members", "2", "--reuse") == 0
    return work, json.loads(out.read_text()), json.loads(again.read_text()), stamps


def test_two_members_are_trained_from_their_own_seeds_and_judged_as_one_model(pair):
    from training.common.runs import load_run

    work, r, _, _ = pair
    members = r["members"]
    assert [m["seed"] for m in members] == [1, 2]
    assert [Path(m["run"]).name for m in members] == ["run", "run-2"]
    for m in members:  # each one really trained, from its seed, in its own folder
        cfg, _ = load_run(Path(m["run"]))
        assert cfg.train.seed == m["seed"]
        assert m["epochs_run"] >= 1 and m["train_seconds"] > 0
    # the training time is the sum of the members', each of them with half the budget
    assert r["train_seconds"] == pytest.approx(sum(m["train_seconds"] for m in members), abs=0.2)
    assert r["time_spent"]["max_minutes"] == pytest.approx(55.0 / 2)
    # the model that was tested and timed is the one file holding both members
    manifest = json.loads((work / "elpv.json").read_text())
    assert [m["seed"] for m in manifest["ensemble"]["members"]] == [1, 2]
    assert r["threshold"] == manifest["thresholds"]["defect"]["value"]
    assert sum(r["split_counts"]["test"].values()) == 40  # the benchmark's 75/25 split
    assert {"fp16", "int8"} <= set(r["variants"])
    assert set(r["at_default_policy"]) == {"fp32"}


def test_reuse_judges_the_members_already_trained_without_training_again(pair):
    work, first, again, stamps = pair
    assert [(Path(m["run"]) / "run.json").stat().st_mtime_ns for m in again["members"]] == stamps
    assert [m["seed"] for m in again["members"]] == [1, 2]
    # the same two networks, so the same figures
    assert again["auroc"] == pytest.approx(first["auroc"], abs=1e-6)
    assert again["threshold"] == pytest.approx(first["threshold"], abs=1e-6)


def test_no_members_is_refused_before_anything_runs(tmp_path, capsys):
    out = tmp_path / "none.json"
    assert _bench(tmp_path / "work", out, "--members", "0") == 2
    err = capsys.readouterr().err
    assert "--members: at least 1 training, got 0" in err
    assert not out.exists() and not (tmp_path / "work" / "elpv").exists()
