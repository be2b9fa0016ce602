"""A classifier and an anomaly model on the same frame (``model`` + ``anomaly_model``): the
part fails when either fails it, and the verdict names which. Tiny hand-built models (no
training): a classifier that passes everything and a local-contrast anomaly model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from inspector.contract.manifest import embed
from inspector.contract.records import Reason
from inspector.errors import ConfigError
from inspector.lab.modelkit import build_contrast_model, demo_manifest
from inspector.station.check import check_station
from inspector.station.decision import Decision, combine

from .contract import validate


def build_anomaly_model(path: Path, size: int = 32) -> Path:
    """The contrast detector as an anomaly model (manifest ``kind: anomaly``, classes good and
    anomaly) with its map: the per-pixel score, (N, size - 4, size - 4)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    build_contrast_model(path, size=size, name="contrast-anomaly")
    model = onnx.load(str(path))
    g = model.graph
    g.initializer.append(numpy_helper.from_array(np.array([1], np.int64), "map_axes"))
    g.node.extend(
        [
            helper.make_node("Mul", ["adev", "slope"], ["m0"]),
            helper.make_node("Sub", ["m0", "offset"], ["m1"]),
            helper.make_node("Sigmoid", ["m1"], ["m2"]),
            helper.make_node("Squeeze", ["m2", "map_axes"], ["anomaly_map"]),
        ]
    )
    n = size - 4
    g.output.append(
        helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, ["batch", n, n])
    )
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    manifest = demo_manifest(size, "contrast-anomaly")
    manifest.update(
        kind="anomaly",
        classes=["good", "anomaly"],
        defect_classes=["anomaly"],
        anomaly={"map_output": "anomaly_map"},
    )
    manifest["thresholds"] = {"anomaly": manifest["thresholds"]["defect"]}
    embed(path, manifest)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("dual")
    # a classifier that never fails a part: a contrast of 1000 grey levels is its midpoint
    passing = build_contrast_model(root / "pass-all.onnx", size=32, contrast_at_half=1000.0)
    return passing, build_anomaly_model(root / "anomaly.onnx"), root


def dual_config(make_config, models, anomaly=None, **kwargs):
    passing, fitting, _ = models
    extra = kwargs.pop("extra", "")
    extra += f'\nanomaly_model: {{path: "{anomaly or fitting}"}}\n'
    return make_config(model=kwargs.pop("model", passing), extra=extra, **kwargs)


def test_good_parts_pass_and_drawn_defects_fail_with_reason_anomaly(
    models, make_config, station_factory, line, parts_dir, tmp_path
):
    station = station_factory(
        dual_config(make_config, models, trigger="free-run", loop=False, rate=100)
    )
    anomaly_id = station.unit.anomaly_model_id
    station.start()
    files = sorted(p.name for p in parts_dir.rglob("*.png"))
    verdicts = line.wait_for(len(files), timeout=20)
    assert sorted(v["frame"] for v in verdicts) == files
    defects = 0
    for v in verdicts:
        validate("verdict", {k: x for k, x in v.items() if not k.startswith("_")})
        assert v["anomaly_model_id"] == anomaly_id and v["model_id"] != anomaly_id
        assert set(v["scores"]) == {"good", "defect", "anomaly"}
        assert v["threshold"] == {"defect": 0.5, "anomaly": 0.5}
        if "defect" in v["frame"]:
            defects += 1
            assert (v["result"], v["reason"], v["class"]) == ("fail", "anomaly", "anomaly"), v
            assert v["decided_by"] == ["anomaly"] and v["scores"]["anomaly"] >= 0.5
        else:
            assert (v["result"], v["reason"]) == ("pass", "ok"), v
            assert v["decided_by"] == ["classifier", "anomaly"]
    assert defects >= 2
    station.stop()  # the recorder finishes its queue
    # the anomaly model failed those parts: their recordings keep its map
    kept = [
        json.loads(p.read_text())
        for p in (tmp_path / "rec").rglob("*.json")
        if "/fail/" in p.as_posix()
    ]
    assert len(kept) == defects
    for sidecar in kept:
        assert "heatmap" in sidecar and sidecar["reason"] == "anomaly"


def test_the_classifier_swaps_while_the_anomaly_model_stays_and_its_defect_wins_the_reason(
    models, make_config, station_factory, line, model_path
):
    station = station_factory(dual_config(make_config, models, trigger="mqtt"))
    station.start()
    assert line.wait_status("online")
    out = station.models.handle("swap", str(model_path))  # the real contrast classifier
    assert out["outcome"] == "swapped", out
    new_id = station.models.live.model_id
    for i in range(10):
        line.trigger(f"p{i}")
    verdicts = line.wait_for(10)
    assert len(verdicts) == 10
    for v in verdicts:
        validate("verdict", {k: x for k, x in v.items() if not k.startswith("_")})
        assert v["model_id"] == new_id and v["anomaly_model_id"] == station.unit.anomaly_model_id
        if "defect" in v["frame"]:  # both models fail it: the classifier's defect names it
            assert (v["reason"], v["decided_by"]) == ("defect", ["classifier", "anomaly"]), v
        else:
            assert v["reason"] == "ok", v


def test_combine_fails_a_part_when_either_model_fails_it():
    def d(result, reason, label, p):
        return Decision(result, reason, label, {"good": 1 - p, label: p}, label)

    ok, okay = d("pass", Reason.OK, "defect", 0.1), d("pass", Reason.OK, "anomaly", 0.2)
    defect = d("fail", Reason.DEFECT, "defect", 0.9)
    unsure = d("fail", Reason.UNCERTAIN, "defect", 0.45)
    odd = d("fail", Reason.ANOMALY, "anomaly", 0.7)
    f, by = combine(ok, okay)
    assert (f.result, f.reason, by, f.scores["anomaly"]) == (
        "pass",
        Reason.OK,
        ("classifier", "anomaly"),
        0.2,
    )
    assert combine(defect, odd)[0].reason == Reason.DEFECT
    assert combine(defect, odd)[1] == ("classifier", "anomaly")
    assert combine(unsure, odd)[0].reason == Reason.ANOMALY  # a definite fail names it
    assert combine(unsure, okay)[0].reason == Reason.UNCERTAIN
    assert combine(ok, odd)[1] == ("anomaly",)


def test_an_anomaly_model_of_another_input_size_is_refused_at_start(
    models, make_config, station_factory, tmp_path
):
    _, fitting, root = models
    other = build_anomaly_model(root / "anomaly-24.onnx", size=24)
    cfg = dual_config(make_config, models, anomaly=other)
    with pytest.raises(ConfigError, match=r"anomaly_model\.path: anomaly-24\.onnx: input"):
        station_factory(cfg)
    problems, _ = check_station(cfg.config_path)  # inspector check says the same
    assert any("anomaly_model.path" in p and "same preprocessed input" in p for p in problems)
    # a classifier is no anomaly model; a missing file is named as the anomaly model's
    with pytest.raises(ConfigError, match="is not an anomaly model"):
        station_factory(dual_config(make_config, models, anomaly=models[0]))
    problems, _ = check_station(
        dual_config(make_config, models, anomaly=tmp_path / "none.onnx").config_path
    )
    assert any(p.startswith("anomaly_model.path: model file not found") for p in problems)
    problems, notes = check_station(dual_config(make_config, models).config_path)
    assert not problems and any(n.startswith("anomaly model contrast-anomaly@") for n in notes)


def test_an_anomaly_model_error_fails_its_batch_with_error_and_the_station_goes_on(
    models, make_config, station_factory, line
):
    station = station_factory(dual_config(make_config, models, trigger="mqtt"))
    session = station.unit.anomaly.session
    real_run, broken = session.run, {"on": False}

    def flaky_run(*args, **kwargs):
        if broken["on"]:
            raise RuntimeError("injected fault in the anomaly model")
        return real_run(*args, **kwargs)

    session.run = flaky_run
    station.start()  # warm-up used the real path
    assert line.wait_status("online")
    broken["on"] = True
    line.trigger("p1")
    assert line.wait_for(1)
    v = line.by_id()["p1"]
    validate("verdict", {k: x for k, x in v.items() if not k.startswith("_")})
    assert (v["result"], v["reason"], v["decided_by"]) == ("fail", "error", []), v
    assert v["detail"].startswith("anomaly model error: injected fault")
    broken["on"] = False
    for i in range(2, 6):
        line.trigger(f"p{i}")
    verdicts = line.wait_for(5)
    assert len(verdicts) == 5
    for v in verdicts[1:]:
        expected = ("fail", "anomaly") if "defect" in v["frame"] else ("pass", "ok")
        assert (v["result"], v["reason"]) == expected, v
