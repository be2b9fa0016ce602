"""``inspector camera list|features|grab`` against Aravis' fake cameras, as an engineer
commissioning a line PC runs them."""

from __future__ import annotations

import json

import cv2
import pytest

from inspector.cli import main

from . import genicam_camera


@pytest.fixture
def gv_camera():
    yield from genicam_camera.cameras()


def test_list_shows_every_camera_with_serial_address_and_interface(gv_camera, capsys):
    gv_camera("GVLIST")
    assert main(["camera", "list", "--fake"]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines()]
    assert rows[0] == ["VENDOR", "MODEL", "SERIAL", "ADDRESS", "INTERFACE", "ID"]
    assert ["Aravis", "Fake", "GVLIST", "127.0.0.1", "GigEVision", "Aravis-Fake-GVLIST"] in rows
    assert ["Aravis", "Fake", "1", "0.0.0.0", "Fake", "Fake_1"] in rows
    assert main(["camera", "list", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert {"serial": "GVLIST", "address": "127.0.0.1", "interface": "GigEVision"} in [
        {k: d[k] for k in ("serial", "address", "interface")} for d in found
    ]


def test_features_lists_values_and_the_limits_a_config_must_keep_to(capsys):
    genicam_camera.need_aravis()
    assert main(["camera", "features", "1", "--fake"]) == 0
    out = capsys.readouterr().out
    assert "Width = 512  [1..2048]  integer, rw" in out
    assert "ExposureTimeAbs = 10000.0  [10..10000000]  float, rw" in out
    assert "TriggerSource = Line0  (Line0, Software)  enumeration, rw" in out
    assert "[ImageFormatControl]" in out


def test_grab_with_software_triggers_writes_frames_and_a_summary(gv_camera, tmp_path, capsys):
    gv_camera("GVGRAB")
    out = tmp_path / "grab"
    code = main(["camera", "grab", "GVGRAB", "--frames", "5", "--trigger", "software",
                 "--out", str(out)])  # fmt: skip
    assert code == 0, capsys.readouterr()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == summary["complete"] == 5
    assert summary["incomplete"] == summary["lost"] == summary["unanswered"] == 0
    assert summary["latency_ms"]["p50"] > 0  # measured; the fake's 25 Hz grid sets its value
    assert summary["stream"]["n_completed_buffers"] == 5
    pngs = sorted(out.glob("frame-*.png"))
    assert len(pngs) == 5 and cv2.imread(str(pngs[0]), cv2.IMREAD_UNCHANGED).shape == (512, 512)
    assert "5/5 frames (5 complete" in capsys.readouterr().out


def test_a_camera_that_is_not_there_is_one_sentence_listing_what_is(capsys):
    genicam_camera.need_aravis()
    assert main(["camera", "features", "NOPE", "--fake"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("inspector camera: no camera with serial, address, id or model 'NOPE'")
    assert "Aravis Fake serial 1" in err and "\n" not in err
