"""Kept images: failures, uncertain parts and a sample of passes; never outside the folder."""

from __future__ import annotations

import json
import time

import cv2
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inspector.contract.records import Reason, Verdict
from inspector.station.config import RecorderSection
from inspector.station.metrics import Metrics
from inspector.station.recorder import Recorder


def verdict(part_id: str, result="fail", reason=Reason.DEFECT, seq=1) -> Verdict:
    now = time.time()
    return Verdict(
        part_id=part_id,
        seq=seq,
        result=result,
        reason=reason,
        label="defect",
        scores={"good": 0.1, "defect": 0.9},
        thresholds={"defect": 0.5},
        model_id="m@1",
        t_trigger=now,
        t_capture=now,
        t_verdict=now,
        deadline=now + 1,
        deadline_mono=0.0,
    )


IMAGE = np.full((8, 8), 128, np.uint8)
HOSTILE = [
    "../../etc/passwd",
    "/abs/path",
    "a/b\\c",
    "nul\x00byte",
    "x" * 10_000,
    "..",
    ".",
    "~root",
    "C:\\Windows\\system32",
    "\u202eevil.png",
    "con",
    "",
    "a" * 255 + "/../..",
]


def files_outside(root, scope):
    """Every file under ``scope`` (a folder well above ``root``) that lies outside ``root``."""
    return [
        p
        for p in scope.rglob("*")
        if p.is_file() and not p.resolve().is_relative_to(root.resolve())
    ]


def test_files_outside_sees_a_file_written_two_levels_up(tmp_path):
    root = tmp_path / "box" / "rec"
    root.mkdir(parents=True)
    (root / "kept.png").write_bytes(b"x")
    assert files_outside(root, tmp_path) == []
    (tmp_path / "escaped.png").write_bytes(b"x")  # what "../../x" would do
    assert files_outside(root, tmp_path) == [tmp_path / "escaped.png"]


def test_hostile_part_ids_stay_inside_the_folder(tmp_path):
    root = tmp_path / "box" / "rec"
    rec = Recorder(RecorderSection(path=root), Metrics())
    for i, pid in enumerate(HOSTILE):
        path = rec.write(verdict(pid, seq=i), IMAGE)
        assert path.resolve().is_relative_to(root.resolve())
        sidecar = json.loads(path.with_suffix(".json").read_text())
        assert sidecar["part_id"] == pid  # the id is kept verbatim where it's safe: in JSON
        assert len(path.name) < 120
    assert files_outside(root, tmp_path) == []  # nothing written anywhere else in tmp_path
    assert len(list(root.rglob("*.png"))) == len(HOSTILE)  # distinct ids never overwrite each other


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(min_size=1, max_size=300))
def test_any_part_id_stays_inside(tmp_path, pid):
    root = tmp_path / "any" / "rec"
    rec = Recorder(RecorderSection(path=root), Metrics())
    assert rec.write(verdict(pid), IMAGE).resolve().is_relative_to(root.resolve())
    assert files_outside(root, tmp_path / "any") == []


def test_sidecar_carries_the_station_frame_setup(tmp_path):
    """Training needs to know what the station did to the kept raw frame before the model."""
    from inspector.contract.geometry import Geometry
    from inspector.contract.preprocess import PreprocessSpec

    spec = PreprocessSpec(size=(4, 4), geometry=Geometry(roi=(1, 2, 5, 5)), bit_depth=10)
    rec = Recorder(RecorderSection(path=tmp_path / "r"), Metrics(), spec=spec)
    path = rec.write(verdict("p"), IMAGE)
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["preprocess"] == {"geometry": {"roi": [1, 2, 5, 5]}, "bit_depth": 10}
    assert np.array_equal(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), IMAGE)  # the whole frame


def test_policy_keeps_failures_uncertain_and_a_sample_of_passes(tmp_path):
    rec = Recorder(RecorderSection(path=tmp_path / "r", pass_sample_rate=0.1), Metrics(), seed=1)
    rec.start()
    for i in range(300):
        rec.offer(verdict(f"p{i}", "pass", Reason.OK, seq=i), IMAGE)
    rec.offer(verdict("bad", seq=1000), IMAGE)
    rec.offer(verdict("unsure", reason=Reason.UNCERTAIN, seq=1001), IMAGE)
    rec.stop()
    day = next((tmp_path / "r").iterdir())
    assert len(list((day / "fail").glob("*.png"))) == 1
    assert len(list((day / "uncertain").glob("*.png"))) == 1
    passes = len(list((day / "pass").glob("*.png")))
    assert 10 <= passes <= 60  # ~30 expected


def test_quota_deletes_oldest_first(tmp_path):
    metrics = Metrics()
    rec = Recorder(RecorderSection(path=tmp_path / "r", quota_mb=0.05), metrics)
    noise = np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)  # ~4 kB as PNG
    paths = [rec.write(verdict(f"p{i}", seq=i), noise) for i in range(30)]
    used = sum(p.stat().st_size for p in (tmp_path / "r").rglob("*") if p.is_file())
    assert used <= 0.05 * 1024 * 1024
    assert not paths[0].exists() and paths[-1].exists()
    assert metrics.value("inspector_drops_total", what="recording_deleted_for_quota") > 0
