"""training/datasets.py and thresholds.py: splits, bad files, duplicates, threshold policies.

No TensorFlow here: these run on a QA workstation before any training.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from inspector.contract.preprocess import PreprocessSpec
from inspector.lab.modelkit import write_parts
from training import TrainingError
from training.common import bounds, thresholds
from training.common.metrics import auroc, binary_at
from training.data import datasets, runsplit

SPEC = PreprocessSpec(size=(32, 32), color="gray")


def texture(seed: int, size: int = 64) -> np.ndarray:
    """A distinct random texture: no two seeds look alike."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (8, 8)).astype(np.uint8)
    return cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)


@pytest.fixture
def parts(tmp_path):
    write_parts(tmp_path / "data", 100, defect_rate=0.3, seed=5, size=48)
    return tmp_path / "data"


def test_split_is_stratified_seeded_and_saved(parts, tmp_path):
    data = datasets.prepare(parts, SPEC, [], val=0.2, test=0.2, seed=3)
    counts = data.counts()
    totals = {c: sum(counts[s][c] for s in counts) for c in ("good", "defect")}
    for split, frac in (("val", 0.2), ("test", 0.2)):
        for c, n in totals.items():
            assert abs(counts[split][c] - n * frac) <= 1, (split, c, counts)
    saved = runsplit.split_file(data, parts)
    files = [f["path"] for s in saved["files"].values() for f in s]
    assert len(files) == len(set(files)) == 100  # every image in exactly one split
    assert saved["counts"] == counts
    again = datasets.prepare(parts, SPEC, [], val=0.2, test=0.2, seed=3)
    assert again.splits["test"].files == data.splits["test"].files
    other = datasets.prepare(parts, SPEC, [], val=0.2, test=0.2, seed=4)
    assert other.splits["test"].files != data.splits["test"].files
    json.dumps(saved)  # the split file is plain JSON


def test_given_split_is_kept_and_val_carved_from_train(tmp_path):
    for split, n in (("train", 20), ("test", 6)):
        for label in ("good", "defect"):
            folder = tmp_path / split / label
            folder.mkdir(parents=True)
            for i in range(n):
                cv2.imwrite(str(folder / f"{i}.png"), texture(hash((split, label, i)) % 10_000))
    data = datasets.prepare(tmp_path, SPEC, [], val=0.25, test=0.5, seed=1)
    counts = data.counts()
    assert counts["test"] == {"defect": 6, "good": 6}
    assert counts["val"] == {"defect": 5, "good": 5}
    assert counts["train"] == {"defect": 15, "good": 15}
    assert all("/test/" in f for f in data.splits["test"].files)


def test_unreadable_files_are_listed_and_skipped(parts):
    (parts / "good" / "empty.png").write_bytes(b"")
    (parts / "good" / "garbage.png").write_bytes(b"this is not an image")
    good = next((parts / "good").glob("0*.png"))
    (parts / "defect" / "truncated.png").write_bytes(good.read_bytes()[:40])
    data = datasets.prepare(parts, SPEC, [], val=0.2, test=0.2, seed=1)
    bad = {u["file"].rsplit("/", 1)[1] for u in data.report["unreadable"]}
    assert bad == {"empty.png", "garbage.png", "truncated.png"}
    assert sum(sum(c.values()) for c in data.counts().values()) == 100


def test_duplicates_across_splits_are_reported(tmp_path):
    for split, label, seeds in (
        ("train", "good", range(0, 12)),
        ("train", "defect", range(100, 112)),
        ("val", "good", range(200, 206)),
        ("val", "defect", range(300, 306)),
        ("test", "good", range(400, 406)),
        ("test", "defect", range(500, 506)),
    ):
        folder = tmp_path / split / label
        folder.mkdir(parents=True)
        for s in seeds:
            cv2.imwrite(str(folder / f"{s}.png"), texture(s))
    data = datasets.prepare(tmp_path, SPEC, [], val=0.2, test=0.2, seed=1)
    assert data.report["duplicates"] == []  # distinct textures are not flagged
    # an exact copy in test, and a re-encoded, brighter copy in val (a near duplicate)
    original = tmp_path / "train" / "good" / "3.png"
    (tmp_path / "test" / "good" / "copy.png").write_bytes(original.read_bytes())
    brighter = np.clip(texture(3).astype(int) + 8, 0, 255).astype(np.uint8)
    cv2.imwrite(
        str(tmp_path / "val" / "defect" / "again.jpg"), brighter, [cv2.IMWRITE_JPEG_QUALITY, 85]
    )
    data = datasets.prepare(tmp_path, SPEC, [], val=0.2, test=0.2, seed=1)
    dups = data.report["duplicates"]
    kinds = sorted((d["kind"], tuple(sorted(k for k in d if k in datasets.SPLITS))) for d in dups)
    assert ("exact", ("test", "train")) in kinds
    assert ("near", ("train", "val")) in kinds
    assert len(dups) == 3  # the two copies also pair with each other (val <-> test)
    assert any(d["labels_differ"] for d in dups)  # the relabelled copy is worth a look
    assert any("look the same" in w for w in data.report["warnings"])


def write_manifest(folder, n: int, header: str, columns) -> None:
    """``n`` textures ``0.png``... and ``data.csv``: path, label (odd ones defective), then
    ``columns(i)``'s cells under ``header``'s."""
    rows = [f"path,label,{header}"]
    for i in range(n):
        cv2.imwrite(str(folder / f"{i}.png"), texture(i))
        rows.append(f"{i}.png,{'defect' if i % 2 else 'good'},{columns(i)}")
    (folder / "data.csv").write_text("\n".join(rows) + "\n")


def test_csv_manifest_with_split_and_metadata(tmp_path):
    write_manifest(
        tmp_path, 8, "split,probability", lambda i: f"{'test' if i < 2 else 'train'},0.{i}"
    )
    ds = datasets.scan(tmp_path / "data.csv")
    assert ds.classes == ["defect", "good"]
    assert dict(ds.samples[3].meta) == {"probability": "0.3"}
    assert [s.split for s in ds.samples[:3]] == ["test", "test", "train"]
    (tmp_path / "bad.csv").write_text("path,label,split\n0.png,good,holdout\n")
    with pytest.raises(TrainingError, match=r"bad.csv:2: split 'holdout'"):
        datasets.scan(tmp_path / "bad.csv")


def test_a_runs_split_keeps_the_manifests_columns_for_evaluate(tmp_path):
    write_manifest(tmp_path, 20, "probability", lambda i: i % 3)
    data = datasets.prepare(tmp_path / "data.csv", SPEC, [], val=0.2, test=0.2, seed=1)
    run = tmp_path / "run"
    run.mkdir()
    (run / "split.json").write_text(json.dumps(runsplit.split_file(data, tmp_path / "data.csv")))
    test = runsplit.samples_of_run(run, "test")
    assert [s.path for s in test] == [Path(f) for f in data.splits["test"].files]
    assert [dict(s.meta) for s in test] == data.splits["test"].meta
    assert all(dict(s.meta)["probability"] == str(int(s.path.stem) % 3) for s in test)
    (tmp_path / "data.csv").unlink()  # the manifest gone: the files still, without columns
    assert [s.meta for s in runsplit.samples_of_run(run, "test")] == [()] * len(test)


def test_a_run_trained_on_the_folder_takes_the_columns_of_a_manifest_it_is_given(tmp_path):
    write_manifest(tmp_path, 20, "probability", lambda i: i % 3)
    folder = tmp_path / "layout"
    for i in range(20):  # the same images as a folder layout, as import-elpv writes both
        label = "defect" if i % 2 else "good"
        (folder / label).mkdir(parents=True, exist_ok=True)
        (folder / label / f"{i}.png").write_bytes((tmp_path / f"{i}.png").read_bytes())
    rows = [f"layout/{label}/{i}.png,{label},{i % 3}" for i, label in
            ((i, "defect" if i % 2 else "good") for i in range(20))]  # fmt: skip
    (tmp_path / "layout.csv").write_text("path,label,probability\n" + "\n".join(rows) + "\n")
    data = datasets.prepare(folder, SPEC, [], val=0.2, test=0.2, seed=1)
    run = tmp_path / "run"
    run.mkdir()
    (run / "split.json").write_text(json.dumps(runsplit.split_file(data, folder)))
    assert all(s.meta == () for s in runsplit.samples_of_run(run, "test"))
    test = runsplit.samples_of_run(run, "test", tmp_path / "layout.csv")
    assert [s.path for s in test] == [Path(f) for f in data.splits["test"].files]
    assert all(dict(s.meta) == {"probability": str(int(s.path.stem) % 3)} for s in test)


def test_defect_classes_need_a_good_class(tmp_path):
    assert datasets.defect_classes(["crack", "good", "spot"], []) == ["crack", "spot"]
    with pytest.raises(TrainingError, match="name the good class"):
        datasets.defect_classes(["a", "b"], [])
    with pytest.raises(TrainingError, match="not in the dataset"):
        datasets.defect_classes(["good", "crack"], ["scratch"])


def _scores(seed=0, n_good=300, n_def=100):
    rng = np.random.default_rng(seed)
    truth = np.r_[np.zeros(n_good, bool), np.ones(n_def, bool)]
    score = np.r_[rng.beta(2, 6, n_good), rng.beta(6, 2, n_def)]
    return truth, score


def test_policy_max_escape_rate_holds_the_upper_bound_and_no_more_rejects():
    truth, score = _scores()
    t = thresholds.choose(truth, score, "max_escape_rate", 0.05)
    at = binary_at(truth, score, t["value"])
    # the promise is on the escape rate's 95 % upper bound, not on the point estimate
    assert bounds.upper(at["fn"], at["fn"] + at["tp"]) <= 0.05 and t["promise"]["held"]
    assert t["metrics"]["escape_rate"] == at["escape_rate"]
    # any higher threshold that changes a decision lets the bound pass the rate
    higher = np.sort(score[score >= t["value"]])[1]
    h = binary_at(truth, score, higher)
    assert bounds.upper(h["fn"], h["fn"] + h["tp"]) > 0.05


def test_policy_max_false_reject_rate_keeps_good_parts_and_catches_most():
    truth, score = _scores(1)
    t = thresholds.choose(truth, score, "max_false_reject_rate", 0.02)
    at = binary_at(truth, score, t["value"])
    good = int((~truth).sum())
    assert bounds.upper(at["fp"], good) <= 0.02  # the bound holds the rate, not just the point
    lower = np.max(score[score < t["value"]])
    assert bounds.upper(binary_at(truth, score, lower)["fp"], good) > 0.02


def test_policy_max_f1_is_the_best_f1():
    truth, score = _scores(2)
    t = thresholds.choose(truth, score, "max_f1")
    best = max(binary_at(truth, score, s)["f1"] for s in np.unique(score))
    assert binary_at(truth, score, t["value"])["f1"] == pytest.approx(best)
    assert t["policy"] == "max_f1" and t["metrics"]["on"] == "validation"


def test_validation_without_defects_is_a_clear_error():
    with pytest.raises(TrainingError, match="validation set has no defective images"):
        thresholds.choose(np.zeros(10, bool), np.linspace(0, 1, 10), "max_f1")
    with pytest.raises(TrainingError, match="no good images"):
        thresholds.choose(np.ones(10, bool), np.linspace(0, 1, 10), "max_escape_rate", 0.1)


def test_auroc_matches_pairwise_definition():
    truth, score = _scores(3, 40, 30)
    score = np.round(score, 1)  # ties count half
    pos, neg = score[truth], score[~truth]
    pairs = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    assert auroc(truth, score) == pytest.approx(pairs)


def test_image_stats_match_the_runtime_quality_measures(parts):
    data = datasets.prepare(parts, SPEC, [], val=0.2, test=0.2, seed=1)
    stats = datasets.image_stats(data.splits["train"].x)
    means = [float(x.mean()) for x in data.splits["train"].x]
    assert stats["mean"]["p50"] == pytest.approx(np.median(means))
    assert stats["mean"]["p5"] <= stats["mean"]["p50"] <= stats["mean"]["p95"]
    assert set(stats) >= {"focus", "clipped_dark", "clipped_bright", "uniformity"}


def test_a_run_on_a_reviewed_folder_reads_the_review_of_its_split_only(tmp_path):
    folder = tmp_path / "reviewed"
    write_manifest(tmp_path, 20, "probability", lambda i: 0)
    for i in range(20):
        label = "defect" if i % 2 else "good"
        (folder / label).mkdir(parents=True, exist_ok=True)
        (folder / label / f"{i}.png").write_bytes((tmp_path / f"{i}.png").read_bytes())
        if i % 4:  # every fourth image added by hand: no review of its own
            said = {"station": "st1", "line_result": "pass" if i % 3 else "fail"}
            t = 1796000000 if i % 3 else None  # a sidecar without a trigger time: unknown
            record = {"model_id": "m@1", "t_trigger": t, "review": said}
            (folder / label / f"{i}.json").write_text(json.dumps(record))
    data = datasets.prepare(folder, SPEC, [], val=0.2, test=0.2, seed=1)
    run = tmp_path / "run"
    run.mkdir()
    (run / "split.json").write_text(json.dumps(runsplit.split_file(data, folder)))
    test = runsplit.samples_of_run(run, "test")
    assert [dict(s.meta) for s in test] == data.splits["test"].meta
    by_stem = {int(s.path.stem): dict(s.meta) for s in test}
    for i, m in by_stem.items():
        if i % 4:
            said = "pass" if i % 3 else "fail"
            day = time.strftime("%Y-%m-%d", time.localtime(1796000000)) if i % 3 else "unknown"
            assert m == {"station": "st1", "line_result": said, "line_model": "m@1", "day": day}
        else:
            assert set(m.values()) == {"not reviewed"} and len(m) == 4
