"""training/ end to end on tiny generated images: train -> export -> evaluate -> the line.

One small CNN (32 px, a few epochs, seconds of training) is trained through the command
line once per module and shared by the tests. Its data are recordings as a station with
``preprocess.roi`` keeps them: whole frames (the part and the conveyor around it) with a
sidecar that names the ROI, which training, export, evaluation and the line all apply.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

from inspector.cli import main
from inspector.contract.manifest import METADATA_KEY
from inspector.contract.preprocess import preprocess
from inspector.lab.modelkit import write_parts
from inspector.station.classifier import Classifier
from inspector.station.config import ModelSection
from inspector.station.decision import Decider
from training import TrainingError

from .training_helpers import small_cnn_argv

pytest.importorskip("tensorflow", reason="make test installs the train extra")


ROI = [10, 4, 48, 48]  # where the station finds the part in its 64x56 frames
SIDECAR = {"preprocess": {"geometry": {"roi": ROI}, "bit_depth": None}}


def as_recordings(data) -> None:
    """Put each 48x48 part into a 64x56 frame (a bright, busy conveyor around it) and give it
    the sidecar the station's recorder writes."""
    rng = np.random.default_rng(5)
    for p in sorted(data.rglob("*.png")):
        frame = rng.integers(200, 256, (56, 64), dtype=np.uint8)
        frame[4:52, 10:58] = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        cv2.imwrite(str(p), frame)
        p.with_suffix(".json").write_text(json.dumps(SIDECAR))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("training")
    data = root / "data"
    write_parts(data, 240, defect_rate=0.4, seed=21, size=48)
    as_recordings(data)
    run = root / "run"
    assert main(small_cnn_argv(data, run, 15, "augment.rot90=true")) == 0
    model = root / "model.onnx"
    assert main(["export", str(run), "--out", str(model), "--fp16", "--int8"]) == 0
    return {"root": root, "data": data, "run": run, "model": model}


def test_run_folder_holds_what_a_qa_engineer_needs(trained):
    run = trained["run"]
    for name in ("config.yaml", "split.json", "data_report.json", "history.csv"):
        assert (run / name).is_file(), name
    assert (run / "best.keras").is_file() and (run / "last.keras").is_file()
    assert any((run / "tensorboard").rglob("events.out.tfevents*"))
    info = json.loads((run / "run.json").read_text())
    with open(run / "history.csv") as f:
        epochs = list(csv.DictReader(f))
    assert len(epochs) == info["training"]["epochs_run"] >= 1
    assert {"loss", "val_loss", "accuracy"} <= set(epochs[0])
    split = json.loads((run / "split.json").read_text())
    assert sum(split["counts"]["test"].values()) == len(split["files"]["test"]) > 0
    assert not (run / "backup").exists()  # removed once the run finished


def test_manifest_carries_everything_the_line_needs(trained):
    model = onnx.load(str(trained["model"]))
    embedded = json.loads({p.key: p.value for p in model.metadata_props}[METADATA_KEY])
    sidecar = json.loads(trained["model"].with_suffix(".json").read_text())
    assert embedded == sidecar
    m = embedded
    assert m["classes"] == ["defect", "good"] and m["defect_classes"] == ["defect"]
    assert m["input"]["dtype"] == "uint8" and m["input"]["shape"] == [None, 32, 32, 1]
    assert m["input"]["color"] == "gray" and m["input"]["name"]
    # the recordings' geometry travelled: run.json -> manifest
    assert m["preprocess"]["geometry"] == {"roi": ROI} and m["preprocess"]["bit_depth"] is None
    run = json.loads((trained["run"] / "run.json").read_text())
    assert run["preprocess"]["geometry"] == {"roi": ROI}
    t = m["thresholds"]["defect"]
    assert t["policy"] == "max_escape_rate" and t["target"] == 0.02 and 0 <= t["value"] <= 1
    assert t["metrics"]["on"] == "validation" and t["metrics"]["accuracy"] is not None
    # the threshold carries its confidence: counts and exact bounds, the curve and the band
    e = t["confidence"]["escape_rate"]
    assert (e["k"], e["n"]) == (t["metrics"]["fn"], t["metrics"]["fn"] + t["metrics"]["tp"])
    assert e["upper"] >= e["rate"] and t["curve"]["points"] and "margin" in t["uncertain_band"]
    # a few dozen validation images cannot promise 2 %: the manifest says so
    assert not t["promise"]["held"] and "more" in t["warning"]
    assert m["parity"]["flips"] == 0 and m["parity"]["max_abs_diff"] <= 1e-4
    assert m["parity"]["images"] == sum(m["dataset"]["counts"]["val"].values())
    assert m["dataset"]["fingerprint"] and m["dataset"]["counts"]["train"]["defect"] > 0
    assert m["training"]["model"] == "cnn" and m["training"]["epochs_run"] >= 1
    assert m["versions"]["tensorflow"] and m["onnx"]["opset"] == 17
    assert m["image_stats"]["mean"]["p5"] <= m["image_stats"]["mean"]["p95"]
    # quantised variants: written beside it, each with its change on validation
    for tag in ("fp16", "int8"):
        v = m["variants"][tag]
        assert (trained["model"].parent / v["file"]).is_file()
        assert "accuracy_change" in v and v["flips"] >= 0


def test_the_line_gives_the_same_decision_as_evaluate(trained, tmp_path):
    report = tmp_path / "report"
    argv = ["evaluate", str(trained["model"]), "--data", str(trained["data"]), "--out", str(report)]
    assert main(argv + ["--split", "test", "--run", str(trained["run"])]) == 0
    metrics = json.loads((report / "metrics.json").read_text())
    for key in ("accuracy", "balanced_accuracy", "f1", "auroc", "confusion_matrix"):
        assert metrics[key] is not None, key
    e = metrics["confidence"]["escape_rate"]
    assert e["k"] == metrics["counts"]["fn"] and e["interval"][0] <= e["rate"] <= e["upper"]
    assert metrics["accuracy"] > 0.8  # the scratches and spots are easy to see
    html = (report / "report.html").read_text()
    assert "plots/roc.png" in html and (report / "plots" / "roc.png").stat().st_size > 1000
    with open(report / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == metrics["images"] > 0
    # the runtime's own path: decode, the one preprocessing function, classifier, decider
    clf = Classifier(ModelSection(path=trained["model"], warmup_runs=0))
    decider = Decider(clf.manifest)
    for row in rows:
        x = preprocess(cv2.imread(row["file"], cv2.IMREAD_UNCHANGED), clf.spec)
        probs = clf.run(x[None])[0]
        assert decider.decide(probs).result == row["result"], row["file"]
        assert probs[0] == pytest.approx(float(row["p_defect"]), abs=1e-6)


def test_keras_checkpoint_and_onnx_report_the_same(trained, tmp_path):
    from training.classify.evaluate import evaluate

    a = evaluate(trained["model"], trained["data"], tmp_path / "a", split="val", run=trained["run"])
    b = evaluate(trained["run"], trained["data"], tmp_path / "b", split="val")
    assert b["model_kind"] == "keras" and a["model_kind"] == "onnx"
    assert a["frame_setup"] == b["frame_setup"] == SIDECAR["preprocess"]

    def scores(report):
        with open(report / "predictions.csv") as f:
            return {r["file"]: r for r in csv.DictReader(f)}

    sa, sb = scores(tmp_path / "a"), scores(tmp_path / "b")
    assert sa.keys() == sb.keys() and len(sa) == a["images"] > 0
    for file, row in sa.items():
        for col in ("defect_score", "p_defect", "p_good"):
            assert float(row[col]) == pytest.approx(float(sb[file][col]), abs=1e-4), (file, col)
        assert row["result"] == sb[file]["result"], file
    about = {"model", "model_kind", "data", "split", "unreadable"}
    assert a.keys() == b.keys()
    for key in a.keys() - about:
        want = pytest.approx(b[key], abs=1e-4) if isinstance(b[key], float) else b[key]
        assert a[key] == want, key


def test_evaluate_shows_the_figures_per_value_of_a_manifest_column(trained, tmp_path):
    from training.classify.evaluate import evaluate

    files = sorted(trained["data"].rglob("*.png"))[::3]
    rows = ["path,label,shift"]
    rows += [f"{f},{f.parent.name},{'night' if i % 3 == 0 else 'day'}" for i, f in enumerate(files)]
    (tmp_path / "parts.csv").write_text("\n".join(rows) + "\n")
    m = evaluate(trained["model"], tmp_path / "parts.csv", tmp_path / "report")
    shifts = m["by_column"]["shift"]
    assert sum(g["images"] for g in shifts.values()) == m["images"] == len(files)
    with open(tmp_path / "report" / "predictions.csv") as f:
        passed = {r["file"] for r in csv.DictReader(f) if r["result"] == "pass"}
    night = {str(f) for i, f in enumerate(files) if i % 3 == 0 and f.parent.name != "good"}
    assert shifts["night"]["escape_rate"]["k"] == len(night & passed)
    assert shifts["night"]["escape_rate"]["n"] == len(night)
    page = (tmp_path / "report" / "report.html").read_text()
    assert "By shift" in page and "escapes (bound)" in page


def test_a_reviewed_folder_splits_the_figures_by_what_the_line_said(trained, tmp_path):
    """The workbench's dataset is a folder whose sidecars carry the review: a defect the line
    passed is one of its escapes, so a candidate's figures on those parts say how many of
    the line's escapes it would still let through."""
    from training.classify.evaluate import evaluate

    data = tmp_path / "reviewed"
    files = sorted(trained["data"].rglob("*.png"))[::2]
    line = {}
    for i, f in enumerate(files):
        (data / f.parent.name).mkdir(parents=True, exist_ok=True)
        target = data / f.parent.name / f.name
        shutil.copy(f, target)
        line[str(target)] = "pass" if i % 3 else "fail"
        review = {"label": f.parent.name, "station": "st1", "line_result": line[str(target)]}
        live = "demo@1" if i < len(files) // 2 else "demo@2"  # a model swap half-way
        day = 1796000000 + 86400 * (i % 2)  # the parts of two days
        record = {**SIDECAR, "model_id": live, "t_trigger": day, "review": review}
        target.with_suffix(".json").write_text(json.dumps(record))
    odd = sorted(data.rglob("*.png"))[:2]  # a sidecar without a review block, one not a dict
    odd[0].with_suffix(".json").write_text(json.dumps(SIDECAR))
    odd[1].with_suffix(".json").write_text(json.dumps({**SIDECAR, "review": ["pass"]}))
    for f in odd:
        line[str(f)] = "not reviewed"
    m = evaluate(trained["model"], data, tmp_path / "report")
    assert list(m["by_column"]) == ["station", "line_result", "line_model", "day"]
    days = [time.strftime("%Y-%m-%d", time.localtime(1796000000 + 86400 * k)) for k in (0, 1)]
    by_day = {v: g["images"] for v, g in m["by_column"]["day"].items()}
    assert set(by_day) == {*days, "not reviewed"} and by_day["not reviewed"] == 2
    assert abs(by_day[days[0]] - by_day[days[1]]) <= 2 and sum(by_day.values()) == m["images"]
    models = {v: g["images"] for v, g in m["by_column"]["line_model"].items()}
    assert (
        set(models) == {"demo@1", "demo@2", "not reviewed"} and sum(models.values()) == m["images"]
    )
    assert {v: g["images"] for v, g in m["by_column"]["station"].items()} == {
        "st1": m["images"] - 2,
        "not reviewed": 2,
    }
    by_line = m["by_column"]["line_result"]
    assert {v: g["images"] for v, g in by_line.items()} == dict(Counter(line.values()))
    with open(tmp_path / "report" / "predictions.csv") as f:
        passed = {r["file"] for r in csv.DictReader(f) if r["result"] == "pass"}
    escaped = {f for f, said in line.items() if said == "pass" and Path(f).parent.name != "good"}
    assert by_line["pass"]["escape_rate"]["n"] == len(escaped) > 0
    assert by_line["pass"]["escape_rate"]["k"] == len(escaped & passed)


def test_training_refuses_recordings_from_two_station_setups(tmp_path):
    from training.classify.train import train
    from training.common.config import ModelConfig, TrainConfig

    data = tmp_path / "data"
    write_parts(data, 12, defect_rate=0.5, seed=3, size=48)
    as_recordings(data)
    moved = next(data.rglob("*.json"))
    moved.write_text(json.dumps({"preprocess": {"geometry": {"roi": [0, 0, 48, 48]}}}))
    cfg = TrainConfig(data=data, model=ModelConfig(image_size=32))
    with pytest.raises(TrainingError, match="disagree on the station's frame setup"):
        train(cfg, tmp_path / "run")


def test_parity_is_enforced(trained, tmp_path, monkeypatch):
    from training.classify import export as export_mod

    real = export_mod._onnx_scores
    monkeypatch.setattr(export_mod, "_onnx_scores", lambda p, x: real(p, x) + 1e-3)
    out = tmp_path / "drifted.onnx"
    with pytest.raises(TrainingError, match=r"parity check failed: max \|Keras - ONNX Runtime\|"):
        export_mod.export(trained["run"], out)
    assert not out.exists()  # a model that disagrees with its training is never written


def test_validation_without_defects_stops_training_clearly(tmp_path):
    write_parts(tmp_path / "p", 40, defect_rate=0.4, seed=2, size=48)
    for label in ("good", "defect"):
        (tmp_path / "d" / "train" / label).mkdir(parents=True)
        for f in (tmp_path / "p" / label).glob("*.png"):
            f.rename(tmp_path / "d" / "train" / label / f.name)
    (tmp_path / "d" / "val" / "good").mkdir(parents=True)
    for f in list((tmp_path / "d" / "train" / "good").glob("*.png"))[:5]:
        f.rename(tmp_path / "d" / "val" / "good" / f.name)
    from training.classify.train import train
    from training.common.config import TrainConfig

    with pytest.raises(TrainingError, match="validation split has no defective images"):
        train(TrainConfig(data=tmp_path / "d"), tmp_path / "run")
    assert not (tmp_path / "run" / "best.keras").exists()


def test_bad_training_config_says_where(tmp_path, capsys):
    cfg = tmp_path / "train.yaml"
    cfg.write_text("model:\n  type: cnn\n  image_sise: 64\ntrain:\n  epochs: many\n")
    assert main(["train", str(cfg), "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "train.yaml:3: model.image_sise: unknown key" in err
    assert "train.yaml:5: train.epochs: expected" in err
    assert main(["train", "--data", str(tmp_path), "--set", "train.epochs=0"]) == 2
    assert "train.epochs: must be at least 1" in capsys.readouterr().err
    # a choice given on the command line is checked before training, as the file's are
    out = tmp_path / "run"
    argv = ["train", "--data", str(tmp_path), "--out", str(out), "--set", "train.freeze_bn=maybe"]
    assert main(argv) == 2
    assert "train.freeze_bn: expected one of auto, yes, no, got 'maybe'" in capsys.readouterr().err
    assert not out.exists()
    # and a word YAML 1.1 reads as a boolean stays the word the setting expects
    from training.common.config import TrainConfig, typed

    assert typed(TrainConfig(), "train.freeze_bn", "no") == "no"


def test_runtime_never_imports_tensorflow():
    code = (
        "import sys, inspector.station.pipeline, inspector.cli, inspector.lab.bench\n"
        "inspector.cli.build_parser()\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("kind", ["cnn", "mobilenetv3", "efficientnetv2b0", "vit"])
def test_every_architecture_takes_raw_pixels_and_exports(kind, tmp_path):
    """Each --model builds on uint8 input, gives probabilities and converts to ONNX."""
    from training.classify.models import build
    from training.common.config import ModelConfig
    from training.common.tf import tf

    model = build(ModelConfig(type=kind, image_size=64, color="gray"), n_classes=3)
    x = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 1), dtype=np.uint8)
    p = np.asarray(model(x, training=False))
    assert p.shape == (2, 3) and np.allclose(p.sum(axis=1), 1, atol=1e-5)
    out = tmp_path / f"{kind}.onnx"
    spec = [tf.TensorSpec((None, 64, 64, 1), tf.uint8, name="image")]
    model.export(str(out), format="onnx", input_signature=spec, opset_version=17, verbose=False)
    import onnxruntime as ort

    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    q = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    assert np.max(np.abs(q - p)) < 1e-4


def test_imagenet_weights_are_never_downloaded(tmp_path, monkeypatch):
    from training.classify.models import build
    from training.common.config import ModelConfig

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(TrainingError, match="not in Keras' cache"):
        build(ModelConfig(type="mobilenetv3", image_size=64, weights="imagenet"), 2)
    with pytest.raises(TrainingError, match="is not a file"):
        build(ModelConfig(type="efficientnetv2b0", image_size=64, weights=str(tmp_path / "x")), 2)


def test_a_killed_run_resumes_where_it_stopped(tmp_path, capsys):
    import os
    import signal
    import time

    write_parts(tmp_path / "data", 80, defect_rate=0.4, seed=4, size=48)
    run = tmp_path / "run"
    argv = ["train", "--data", str(tmp_path / "data"), "--out", str(run), "--epochs", "8"]
    argv += ["--model", "cnn", "--image-size", "32", "--set", "model.width=0.25"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "inspector.cli", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    history = run / "history.csv"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if history.exists() and len(history.read_text().splitlines()) >= 3:  # 2 epochs
            break
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)  # a power cut, not a polite stop
    proc.wait()
    done = len(history.read_text().splitlines()) - 1
    assert 2 <= done < 8 and (run / "backup").exists() and not (run / "run.json").exists()
    assert main(argv) == 2  # without --resume the interrupted run is not overwritten
    assert "holds an interrupted run; add --resume" in capsys.readouterr().err
    assert len(history.read_text().splitlines()) - 1 == done
    assert main([*argv, "--resume"]) == 0
    epochs = [int(line.split(",")[0]) for line in history.read_text().splitlines()[1:]]
    # continued, not restarted (an epoch cut short by the kill may appear twice)
    assert set(epochs) == set(range(8)) and len(epochs) <= 9 and epochs == sorted(epochs)
    info = json.loads((run / "run.json").read_text())
    assert info["training"]["epochs_run"] == 8


def test_the_shipped_elpv_config_is_valid():
    from pathlib import Path

    from training.common.config import load_train_config, validate

    cfg = load_train_config(Path(__file__).parents[1] / "training/configs/elpv.yaml")
    validate(cfg)
    assert cfg.model.type == "efficientnet-lite0" and cfg.split.seed == 2019
    assert cfg.train.head_epochs >= 1 and cfg.train.fine_tune == "all"


def test_an_epoch_repeated_after_a_kill_counts_once(tmp_path):
    """history.csv holds a cut-short epoch twice after a resume; the run counts it once and
    its best epoch is found on the repeated (complete) one."""
    from training.classify.train import _val_losses

    (tmp_path / "history.csv").write_text(
        "epoch,loss,val_loss\n0,1.0,0.9\n1,0.8,0.7\n2,0.7,0.1\n2,0.6,0.5\n3,0.5,0.6\n"
    )
    assert _val_losses(tmp_path) == [0.9, 0.7, 0.5, 0.6]


def test_the_pairwise_auc_term_charges_what_is_ranked_the_wrong_way_round():
    from training.classify.losses import loss_for
    from training.common.tf import keras

    classes, defects = ["crack", "good"], ["crack"]
    assert loss_for(0.0, classes, defects) == "categorical_crossentropy"
    loss = loss_for(0.5, classes, defects)
    truth = np.array([[1, 0], [0, 1], [0, 1]], np.float32)  # one cracked part, two good
    wrong = np.array([[0.3, 0.7], [0.6, 0.4], [0.1, 0.9]], np.float32)  # the crack below one
    ce = np.asarray(keras.losses.categorical_crossentropy(truth, wrong))
    # pairs (crack, good): 1 - (0.3 - 0.6) = 1.3 and 1 - (0.3 - 0.1) = 0.8, squared, averaged
    want = ce + 0.5 * (1.3**2 + 0.8**2) / 2
    np.testing.assert_allclose(np.asarray(loss(truth, wrong)), want, rtol=1e-5)
    # no defective part in the batch: no pair, cross-entropy alone
    np.testing.assert_allclose(
        np.asarray(loss(truth[1:], wrong[1:])),
        np.asarray(keras.losses.categorical_crossentropy(truth[1:], wrong[1:])),
        rtol=1e-6,
    )


def test_training_with_the_auc_term_learns_and_records_it(tmp_path, capsys):
    data = tmp_path / "data"
    write_parts(data, 240, defect_rate=0.4, seed=21, size=48)  # the module's parts, unframed
    run = tmp_path / "run"
    argv = small_cnn_argv(data, run, 15, "augment.rot90=true", "train.auc_weight=1")
    assert main(argv) == 0
    r = json.loads((run / "run.json").read_text())
    assert r["training"]["config"]["train"]["auc_weight"] == 1.0
    assert r["quality_gate"]["passed"] and r["quality_gate"]["auroc"] >= 0.9
    assert main([*argv, "--set", "train.auc_weight=-1"]) == 2
    assert "train.auc_weight: must be between 0 and 100" in capsys.readouterr().err


def test_mixup_blends_each_image_and_its_target_by_the_same_weight(capsys):
    """``augment.mixup``: a training image becomes a blend of two, and its target says how
    much of each; validation and test never see it (it is in the training pipeline only)."""
    from training.classify.inputs import train_dataset
    from training.common.config import TrainConfig, override, validate
    from training.common.tf import keras, tf

    n = 64
    x = np.zeros((n, 8, 8, 1), np.uint8)
    x[n // 2 :] = 200  # good parts black, defective ones at 200
    y = np.repeat([0, 1], n // 2)
    onehot = np.eye(2, dtype=np.float32)[y]
    cfg = TrainConfig(data=Path("unused"))
    for key, value in {
        "augment.flip": False,
        "augment.rotation_deg": 0.0,
        "augment.shift": 0.0,
        "augment.brightness": 0.0,
        "augment.contrast": 0.0,
        "augment.noise": 0.0,
        "augment.mixup": 0.4,
        "train.batch_size": n,
        "train.balance": "none",
    }.items():
        cfg = override(cfg, key, value)
    xb, yb = next(iter(train_dataset(x, y, onehot, cfg, 2, tf, keras)))
    xb, yb = np.asarray(xb), np.asarray(yb)
    assert xb.dtype == np.uint8
    share = xb[:, 0, 0, 0] / 200.0  # how much of a defective image each blend holds
    np.testing.assert_allclose(yb[:, 1], share, atol=0.5 / 200 + 1e-6)
    np.testing.assert_allclose(yb.sum(axis=1), 1.0, atol=1e-6)
    assert np.all(xb == xb[:, :1, :1])  # each image blended whole, not in patches
    blended = (share > 0.05) & (share < 0.95)
    assert 0.2 < blended.mean() < 0.95  # Beta(0.4, 0.4): many near the ends, many between

    plain = override(cfg, "augment.mixup", 0.0)
    xb, yb = next(iter(train_dataset(x, y, onehot, plain, 2, tf, keras)))
    assert set(np.unique(np.asarray(xb))) <= {0, 200} and set(np.unique(yb)) <= {0.0, 1.0}
    with pytest.raises(TrainingError, match="augment.mixup: 0 .off. or the Beta"):
        validate(override(cfg, "augment.mixup", -1.0))
