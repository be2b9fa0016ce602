"""Loading models: manifest, providers, shapes; and the pass/fail decision."""

from __future__ import annotations

import json
import logging

import numpy as np
import onnx
import pytest

from inspector.contract.manifest import METADATA_KEY, sidecar_path
from inspector.contract.records import Reason
from inspector.errors import ConfigError, ModelError
from inspector.lab.modelkit import build_contrast_model
from inspector.station.classifier import Classifier
from inspector.station.config import ModelSection, ProviderSection
from inspector.station.decision import Decider


def test_loads_manifest_and_reports_active_providers(model_path, caplog):
    caplog.set_level(logging.INFO)
    clf = Classifier(ModelSection(path=model_path))
    assert clf.classes == ["good", "defect"] and clf.spec.shape == (32, 32, 1)
    assert clf.providers == ["CPUExecutionProvider"]
    assert "runs on CPUExecutionProvider" in caplog.text
    assert json.loads(sidecar_path(model_path).read_text())["name"] == "contrast-demo"
    probs = clf.run(clf.buffer(3))
    assert probs.shape == (3, 2) and np.allclose(probs.sum(axis=1), 1)


def test_gpu_providers_fall_back_to_cpu_but_require_gpu_refuses(model_path, caplog):
    providers = [ProviderSection(type="cuda"), ProviderSection(type="cpu")]
    clf = Classifier(ModelSection(path=model_path, providers=providers))
    assert "CPUExecutionProvider" in clf.providers  # this machine has no GPU
    if set(clf.providers) & {"CUDAExecutionProvider", "TensorrtExecutionProvider"}:
        pytest.skip("a GPU is present")
    with pytest.raises(ModelError, match="require_gpu: no GPU provider is active"):
        Classifier(ModelSection(path=model_path, providers=providers, require_gpu=True))


def test_model_without_manifest_is_refused(tmp_path, model_path):
    m = onnx.load(str(model_path))
    del m.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(m, str(bare))
    with pytest.raises(ModelError, match="no 'inspector.manifest' metadata"):
        Classifier(ModelSection(path=bare))


def test_manifest_that_disagrees_with_the_graph_is_refused(tmp_path, model_path):
    m = onnx.load(str(model_path))
    data = json.loads(next(p.value for p in m.metadata_props if p.key == METADATA_KEY))
    data["preprocess"]["size"] = [64, 64]
    for p in m.metadata_props:
        if p.key == METADATA_KEY:
            p.value = json.dumps(data)
    bad = tmp_path / "bad.onnx"
    onnx.save(m, str(bad))
    with pytest.raises(ModelError, match=r"input shape .* does not match"):
        Classifier(ModelSection(path=bad))


def test_sigmoid_model_and_fixed_batch(tmp_path):
    path = build_contrast_model(tmp_path / "sig.onnx", size=16, kind="sigmoid", fixed_batch=1)
    clf = Classifier(ModelSection(path=path, max_batch=8))
    assert clf.max_batch == 1
    p = clf.run(clf.buffer(1))
    assert p.shape == (1, 2) and abs(p.sum() - 1) < 1e-6


def test_decision_thresholds_overrides_and_uncertainty(model_path):
    manifest = Classifier(ModelSection(path=model_path)).manifest
    d = Decider(manifest)
    assert d.decide(np.array([0.3, 0.7])).reason == Reason.DEFECT
    assert d.decide(np.array([0.6, 0.4])).result == "pass"
    d = Decider(manifest, overrides={"defect": 0.8}, uncertainty_margin=0.2)
    assert d.thresholds == {"defect": 0.8}
    assert d.decide(np.array([0.3, 0.7])).reason == Reason.UNCERTAIN
    assert d.decide(np.array([0.15, 0.85])).reason == Reason.DEFECT
    ok = d.decide(np.array([0.45, 0.55]))
    assert (ok.result, ok.label) == ("pass", "good")
    with pytest.raises(ConfigError, match="not a defect class"):
        Decider(manifest, overrides={"good": 0.5})


def test_cpu_work_is_split_among_workers_and_each_has_its_own_buffers(model_path, monkeypatch):
    import os
    import threading

    import inspector.station.classifier as classifier

    cores = len(os.sched_getaffinity(0))
    clf = Classifier(ModelSection(path=model_path))
    if cores >= 2:  # a fast model: two runs side by side, the cores shared between them
        assert clf.workers == 2
        assert clf.session.get_session_options().intra_op_num_threads == cores // 2
        # a slow one (here: any model, with the bar at 0 ms) keeps every core for each image
        monkeypatch.setattr(classifier, "SPLIT_BELOW_MS", 0.0)
        slow = Classifier(ModelSection(path=model_path))
        assert slow.workers == 1 and slow.session.get_session_options().intra_op_num_threads == 0
    one = Classifier(ModelSection(path=model_path, workers=1))
    assert one.workers == 1
    assert one.session.get_session_options().intra_op_num_threads == 0  # ORT's default
    told = Classifier(ModelSection(path=model_path, workers=3, intra_op_threads=1))
    assert told.workers == 3 and told.session.get_session_options().intra_op_num_threads == 1
    # a GPU provider gets one worker unless told otherwise
    gpu = [ProviderSection(type="cuda"), ProviderSection(type="cpu")]
    assert Classifier(ModelSection(path=model_path, providers=gpu)).workers in (1, 2)
    from inspector.station.classifier import _parallelism

    assert _parallelism(ModelSection(path=model_path), gpu=True)[1:] == (1, 0)
    # buffers are reused within a thread and never shared between threads
    mine = clf.buffer(4)
    assert clf.buffer(4) is mine
    theirs = []
    t = threading.Thread(target=lambda: theirs.append(clf.buffer(4)))
    t.start()
    t.join()
    assert theirs[0] is not mine and theirs[0].shape == mine.shape


def test_tensorrt_keeps_its_engines_between_starts_unless_told_not_to(tmp_path, monkeypatch):
    from inspector.station.classifier import provider_options

    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    opts = provider_options(ProviderSection(type="tensorrt", options={"trt_fp16_enable": True}))
    cache = tmp_path / "state" / "trt-cache"
    assert opts["trt_engine_cache_enable"] == "True" and opts["trt_fp16_enable"] == "True"
    assert opts["trt_engine_cache_path"] == opts["trt_timing_cache_path"] == str(cache)
    assert cache.is_dir()
    mine = provider_options(
        ProviderSection(
            type="tensorrt",
            options={"trt_engine_cache_enable": False, "trt_engine_cache_path": "/x/none"},
        )
    )
    assert mine["trt_engine_cache_enable"] == "False" and mine["trt_engine_cache_path"] == "/x/none"
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    with pytest.raises(ModelError, match="TensorRT engine cache"):
        provider_options(
            ProviderSection(type="tensorrt", options={"trt_engine_cache_path": str(blocked / "x")})
        )
    assert provider_options(ProviderSection(type="cuda", options={"device_id": 0})) == {
        "device_id": "0"
    }


def test_io_binding_gives_the_same_scores_from_every_worker(model_path):
    import threading

    plain = Classifier(ModelSection(path=model_path, io_binding="off"))
    bound = Classifier(ModelSection(path=model_path, io_binding="on"))
    assert not plain.io_binding and bound.io_binding
    assert not Classifier(ModelSection(path=model_path)).io_binding  # auto: CPU runs plain
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (5, *plain.spec.shape), dtype=np.uint8)
    want = plain.run(x)
    got: dict[int, np.ndarray] = {}

    def worker(i):
        for _ in range(20):
            got[i] = bound.run(x[i : i + 1]) if i < 4 else bound.run(x)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(4):
        assert np.allclose(got[i], want[i : i + 1], atol=1e-6)
    assert np.allclose(got[4], want, atol=1e-6)
    bound.warmup(2)
    assert bound.io_binding  # it works here, so warm-up kept it
