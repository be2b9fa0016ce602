"""One model unit, one acceptance rule: ``run``, ``check``, ``verify`` and a swap agree on
whether a unit may decide parts, and the whole unit (classifier and anomaly model) is
swapped, shadowed and rolled back as one thing. Real broker, real ONNX files."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from calibration.golden import run_verify
from inspector.contract.geometry import FrameSetup, Geometry
from inspector.contract.manifest import embed
from inspector.lab.modelkit import build_contrast_model, synthetic_part
from inspector.station.classifier import Classifier
from inspector.station.config import ModelSection

from .test_dual_model import build_anomaly_model
from .test_lifecycle import Admin, decided, wait

ROOT = Path(__file__).resolve().parents[1]


def roi_model(path: Path, roi=(4, 4, 40, 40), name="roi-model") -> Path:
    setup = FrameSetup(Geometry(roi=roi)).to_dict()
    return build_contrast_model(path, size=32, name=name, setup=setup)


def with_manifest(path: Path, out: Path, **changes) -> Path:
    """A copy of the model at ``path`` with manifest fields changed."""
    out.write_bytes(path.read_bytes())
    manifest = Classifier(ModelSection(path=path)).manifest.data
    manifest = json.loads(json.dumps(manifest))
    manifest.update(changes)
    embed(out, manifest)
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("unit")
    return {
        "plain": build_contrast_model(d / "plain.onnx", size=32, name="plain"),
        "plain-b": build_contrast_model(
            d / "plain-b.onnx", size=32, name="plain-b", threshold=0.45
        ),
        "roi": roi_model(d / "roi.onnx"),
        "pass-all": build_contrast_model(
            d / "pass-all.onnx", size=32, name="pass-all", contrast_at_half=1000.0
        ),
        "pass-all-1": build_contrast_model(
            d / "pass-all-1.onnx",
            size=32,
            name="pass-all-1",
            contrast_at_half=1000.0,
            fixed_batch=1,
        ),
        "anomaly": build_anomaly_model(d / "anomaly.onnx"),
        "dir": d,
    }


def run_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "inspector.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


# -- geometry: run refuses what check refuses, and a swap with the same words ---------------------
def test_run_refuses_a_model_trained_on_other_geometry_within_10_s_naming_both(files, make_config):
    cfg = make_config(model=files["roi"], extra="preprocess: {roi: [6, 4, 40, 40]}\n")
    t0 = time.monotonic()
    out = run_cli("run", str(cfg.config_path))
    took = time.monotonic() - t0
    assert out.returncode == 2, out.stderr
    assert took < 10, took
    lines = [line for line in out.stderr.splitlines() if line.startswith("inspector run:")]
    assert len(lines) == 1, out.stderr  # one line naming the mismatch (beside the log)
    assert "roi [6, 4, 40, 40]" in lines[0] and "roi [4, 4, 40, 40]" in lines[0], lines
    assert "Traceback" not in out.stderr
    # check says the same sentence
    chk = run_cli("check", str(cfg.config_path))
    assert chk.returncode == 2 and lines[0].split(": ", 1)[-1] in chk.stderr, chk.stderr
    # a station with no ROI does not borrow the model's: refused as well, not run skewed
    whole = make_config(model=files["roi"])
    out = run_cli("run", str(whole.config_path))
    assert out.returncode == 2 and "the whole frame" in out.stderr, out.stderr


def test_a_swap_to_a_model_of_other_geometry_is_refused_at_acceptance_with_the_same_words(
    files, make_config, station_factory, line, broker
):
    refused_at_start = run_cli("run", str(make_config(model=files["roi"]).config_path))
    cfg = make_config(model=files["plain"], trigger="free-run", rate=30.0)
    station = station_factory(cfg)
    station.start()
    admin = Admin(broker)
    try:
        assert wait(lambda: len(line.verdicts) >= 3)
        reply = admin.ask({"action": "swap", "path": str(files["roi"])})
        assert reply and reply["outcome"] == "refused" and reply["stage"] == "acceptance", reply
        assert refused_at_start.returncode == 2
        sentence = refused_at_start.stderr.strip()
        sentence = sentence[sentence.index("preprocess: this station") :]
        assert sentence in reply["reason"], (sentence, reply["reason"])
        assert reply["model_id"].startswith("plain@")
    finally:
        admin.close()


# -- the golden check under the line's own decision rule ------------------------------------------
def golden_folder(root: Path) -> Path:
    """A defect the classifier ('pass-all') passes and the anomaly model fails, under fail/;
    a good part under pass/."""
    rng = np.random.default_rng(5)
    for expected, defect in (("pass", False), ("fail", True)):
        (root / expected).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / expected / f"{expected}.png"), synthetic_part(rng, defect, 48))
    return root


def test_golden_parts_are_judged_by_both_models_as_on_the_line(
    files, make_config, station_factory, line, tmp_path, broker
):
    golden = golden_folder(tmp_path / "golden")
    cfg = make_config(
        model=files["pass-all"],
        trigger="mqtt",
        extra=f'anomaly_model: {{path: "{files["anomaly"]}"}}\n',
    )
    # inspector verify: the defect is failed by the anomaly model, so the station agrees
    printed: list[str] = []
    assert run_verify(cfg.config_path, golden, publish=False, out=printed.append) == 0, printed
    assert printed[-1].startswith("2 of 2 golden parts agree")
    # a swap on a station with model.golden: the candidate unit passes the same check
    text = cfg.config_path.read_text().replace(
        "\nmodel: {path:", f'\nmodel: {{golden: "{golden}", path:'
    )
    cfg.config_path.write_text(text)
    from inspector.station.config import load_config

    station = station_factory(load_config(cfg.config_path))  # run's acceptance: golden too
    station.start()
    admin = Admin(broker)
    try:
        assert line.wait_status("online")
        reply = admin.ask({"action": "swap", "path": str(files["pass-all-1"])}, timeout=30)
        # pass-all-1 has a fixed batch of 1: the anomaly model (any batch) still fits it
        assert reply and reply["outcome"] == "swapped", reply
    finally:
        admin.close()


def test_a_swap_rechecks_the_anomaly_model_against_the_new_classifier(
    files, make_config, station_factory, line, broker
):
    d = files["dir"]
    fixed = build_anomaly_model_fixed(d / "anomaly-1.onnx")
    cfg = make_config(
        model=files["pass-all-1"],
        trigger="mqtt",
        extra=f'anomaly_model: {{path: "{fixed}"}}\n',
    )
    station = station_factory(cfg)  # both take batches of exactly one: accepted
    station.start()
    admin = Admin(broker)
    try:
        assert line.wait_status("online")
        # a classifier of any batch size with that anomaly model would turn batches into errors
        reply = admin.ask({"action": "swap", "path": str(files["pass-all"])})
        assert reply and reply["outcome"] == "refused" and reply["stage"] == "acceptance", reply
        assert "fixed batch size 1" in reply["reason"], reply
        for i in range(5):
            line.trigger(f"p{i}")
        verdicts = line.wait_for(5)
        assert all(v["reason"] != "error" for v in verdicts), verdicts
    finally:
        admin.close()


def build_anomaly_model_fixed(path: Path) -> Path:
    """The contrast anomaly model with a fixed batch of 1."""
    import onnx

    build_anomaly_model(path)
    model = onnx.load(str(path))
    for value in [*model.graph.input, *model.graph.output]:
        value.type.tensor_type.shape.dim[0].dim_value = 1
    onnx.save(model, str(path))
    manifest = Classifier(ModelSection(path=path)).manifest.data
    embed(path, json.loads(json.dumps(manifest)))
    return path


# -- the anomaly model swaps, shadows and rolls back with the unit --------------------------------
def test_a_two_model_station_swaps_shadows_and_rolls_back_its_anomaly_model(
    files, make_config, station_factory, line, broker
):
    d = files["dir"]
    other = with_manifest(files["anomaly"], d / "anomaly-b.onnx", name="anomaly-b")
    cfg = make_config(
        model=files["pass-all"],
        trigger="free-run",
        rate=40.0,
        extra=f'anomaly_model: {{path: "{files["anomaly"]}"}}\n',
    )
    station = station_factory(cfg)
    first_anomaly = station.unit.anomaly_model_id
    station.start()
    admin = Admin(broker)
    try:
        assert wait(lambda: len(line.verdicts) >= 5)
        reply = admin.ask({"action": "swap", "anomaly_path": str(other)})
        assert reply and reply["outcome"] == "swapped", reply
        assert reply["anomaly_model_id"].startswith("anomaly-b@"), reply
        assert wait(lambda: decided(line.verdicts)[-1]["anomaly_model_id"].startswith("anomaly-b"))
        history = station.models.status()["history"]
        assert history[-1]["anomaly_to"].startswith("anomaly-b"), history
        # the shadow is a whole unit too: the first anomaly model beside the live one
        reply = admin.ask({"action": "shadow", "anomaly_path": str(files["anomaly"])})
        assert reply and reply["outcome"] == "shadowing", reply
        assert wait(lambda: len(admin.shadow) >= 3)
        s = admin.shadow[-1]
        assert set(s["live"]["scores"]) == {"good", "defect", "anomaly"}, s
        assert admin.ask({"action": "shadow-stop"})["outcome"] == "ok"
        # rollback: the unit before, anomaly model included
        reply = admin.ask({"action": "rollback"})
        assert reply and reply["outcome"] == "rolled_back", reply
        assert station.unit.anomaly_model_id == first_anomaly
        n = len(line.verdicts)
        assert wait(lambda: len(line.verdicts) >= n + 5)
        assert decided(line.verdicts)[-1]["anomaly_model_id"] == first_anomaly
        status = line.statuses[-1]
        assert wait(lambda: line.statuses[-1].get("anomaly_model_id") == first_anomaly), status
    finally:
        admin.close()


# -- the quality watch and the swap event follow the live unit ------------------------------------
def test_after_a_swap_the_quality_watch_compares_with_the_new_models_training_data(
    files, make_config, station_factory, line, tmp_path
):
    from inspector.station.quality import baseline

    d = files["dir"]
    bright = with_manifest(
        files["plain-b"], d / "bright.onnx", image_stats={"mean": 200.0, "std": 10.0}
    )
    base = tmp_path / "baseline.json"
    rng = np.random.default_rng(1)
    stats = baseline([synthetic_part(rng, False, 48) for _ in range(8)])
    base.write_text(json.dumps({"stats": stats}))
    cfg = make_config(
        model=files["plain"],
        trigger="free-run",
        rate=40.0,
        extra=f'quality: {{baseline: "{base}", every_n: 1, window: 4}}\n',
    )
    station = station_factory(cfg)
    station.start()
    assert wait(lambda: len(line.verdicts) >= 3)
    assert station.models.handle("swap", str(bright))["outcome"] == "swapped"
    assert station.quality.training == {"mean": 200.0, "std": 10.0}
    assert station.models.handle("rollback")["outcome"] == "rolled_back"
    assert station.quality.training == station.unit.training_stats


def test_with_two_workers_the_swap_event_names_the_first_part_the_new_unit_decided(
    files, make_config, station_factory, line
):
    cfg = make_config(model=files["plain"], trigger="free-run", rate=400.0)
    text = cfg.config_path.read_text().replace("warmup_runs: 1", "warmup_runs: 1, workers: 2")
    cfg.config_path.write_text(text)
    from inspector.station.config import load_config

    station = station_factory(load_config(cfg.config_path))
    assert station.unit.workers == 2
    station.start()
    assert wait(lambda: len(line.verdicts) >= 20)
    assert station.models.handle("swap", str(files["plain-b"]))["outcome"] == "swapped"
    assert wait(lambda: sum(v["model_id"].startswith("plain-b") for v in line.verdicts) >= 40)
    event = station.models.status()["history"][-1]
    assert wait(lambda: "first_part" in station.models.status()["history"][-1]), event
    first = station.models.status()["history"][-1]["first_part"]
    new = [v for v in line.verdicts if v["model_id"].startswith("plain-b")]
    assert first["seq"] == min(v["seq"] for v in new), (first, sorted(v["seq"] for v in new)[:5])


def test_the_swap_event_names_the_first_part_even_when_the_line_decides_before_it_is_recorded(
    files, make_config, station_factory, line, monkeypatch
):
    """A slow link write (a network share) lets the pipeline run the new unit before the
    change's event is written: the event still names the part it started at."""
    cfg = make_config(model=files["plain"], trigger="free-run", rate=400.0)
    station = station_factory(cfg)
    slow_relink = station.models._relink
    monkeypatch.setattr(
        station.models, "_relink", lambda unit: (time.sleep(0.5), slow_relink(unit))
    )
    station.start()
    assert wait(lambda: len(line.verdicts) >= 10)
    assert station.models.handle("swap", str(files["plain-b"]))["outcome"] == "swapped"
    assert wait(lambda: sum(v["model_id"].startswith("plain-b") for v in line.verdicts) >= 10)
    event = station.models.status()["history"][-1]
    new = [v for v in line.verdicts if v["model_id"].startswith("plain-b")]
    assert event.get("first_part", {}).get("seq") == min(v["seq"] for v in new), event


def test_a_manifest_of_an_unknown_kind_is_refused_with_the_kinds_the_station_runs(
    files, make_config
):
    odd = with_manifest(files["plain"], files["dir"] / "odd.onnx", kind="segment")
    out = run_cli("check", str(make_config(model=odd).config_path))
    assert out.returncode == 2 and "kind 'segment'" in out.stderr, out.stderr
    assert "classify, anomaly" in out.stderr
