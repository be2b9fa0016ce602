"""``train.soup: greedy``: the run's best epochs averaged into the model it keeps.

What the QA engineer gets is one ``best.keras`` whose validation loss is the soup's (never
above the best single epoch's), the single best epoch beside it, the per-epoch weights cleaned
away, and an export that carries the soup to the line. An epoch that would make the average
worse stays out.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from inspector.cli import main
from inspector.lab.modelkit import write_parts

from .training_helpers import small_cnn_argv

pytest.importorskip("tensorflow", reason="make test installs the train extra")


def test_two_epochs_that_err_on_opposite_sides_are_averaged_and_a_bad_one_stays_out(tmp_path):
    from training.classify.soup import cross_entropy, greedy
    from training.common.tf import keras

    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(2, activation="softmax")])
    x = np.repeat(np.array([[-1.0], [1.0]], np.float32), 50, axis=0)
    y = np.repeat(np.array([0, 1]), 50)
    kernel = np.array([[-3.0, 3.0]], np.float32)
    epochs = {  # 1 leans to class 0, 2 to class 1, 3 has the classes the wrong way round
        1: [kernel, np.array([1.5, -1.5], np.float32)],
        2: [kernel, np.array([-1.5, 1.5], np.float32)],
        3: [-kernel, np.zeros(2, np.float32)],
    }
    (tmp_path / "epochs").mkdir()
    for e, w in epochs.items():
        model.set_weights(w)
        model.save_weights(str(tmp_path / "epochs" / f"{e:03d}.weights.h5"))
    model.set_weights(epochs[1])
    model.save(str(tmp_path / "best.keras"))  # what the run's checkpoint holds: epoch 1
    alone = cross_entropy(model.predict(x, verbose=0), y)

    made = greedy(model, tmp_path, x, y, losses=[alone, alone + 0.01, 2.0])

    assert made["epochs"] == [1, 2]
    assert [t["joined"] for t in made["tried"]] == [True, True, False]
    assert made["val_loss"] < made["best_epoch_val_loss"] == pytest.approx(alone, abs=1e-5)
    kept = keras.models.load_model(str(tmp_path / "best.keras"))
    np.testing.assert_allclose(kept.get_weights()[1], [0.0, 0.0], atol=1e-6)  # the average
    assert cross_entropy(kept.predict(x, verbose=0), y) == pytest.approx(made["val_loss"], abs=1e-5)
    single = keras.models.load_model(str(tmp_path / "best-epoch.keras"))
    np.testing.assert_allclose(single.get_weights()[1], epochs[1][1])
    assert not (tmp_path / "epochs").exists()


def test_a_run_with_the_soup_on_keeps_it_as_its_model_and_exports_it(tmp_path):
    from training.classify.models import load_best
    from training.classify.soup import cross_entropy
    from training.common.config import load_train_config
    from training.common.runs import setup_of, spec_of
    from training.data import datasets

    data = tmp_path / "data"
    write_parts(data, 200, defect_rate=0.4, seed=8, size=48)
    run = tmp_path / "run"
    assert main(small_cnn_argv(data, run, 12, "train.soup=greedy", "train.patience=20")) == 0
    info = json.loads((run / "run.json").read_text())
    made = info["training"]["soup"]
    assert made["method"] == "greedy" and made["epochs"][0] == info["training"]["best_epoch"]
    assert made["val_loss"] <= made["best_epoch_val_loss"]
    assert sorted(t["epoch"] for t in made["tried"]) == list(range(1, 13))
    assert (run / "best-epoch.keras").is_file() == (len(made["epochs"]) > 1)
    assert not (run / "epochs").exists()  # the per-epoch weights are not left behind

    # best.keras is the model run.json describes: its validation loss is the soup's
    cfg = load_train_config(run / "config.yaml")
    prepared = datasets.prepare(
        cfg.data,
        spec_of(cfg, setup_of(cfg)),
        cfg.defect_classes,
        cfg.split.val,
        cfg.split.test,
        cfg.split.seed,
        cfg.near_duplicate_bits,
    )
    va = prepared.splits["val"]
    probs = load_best(run, cfg.model, len(info["classes"])).predict(va.x, verbose=0)
    assert cross_entropy(probs, va.y) == pytest.approx(made["val_loss"], abs=1e-4)
    # export checks its graph against best.keras image by image: the soup reaches the line
    assert main(["export", str(run), "--out", str(tmp_path / "model.onnx")]) == 0
