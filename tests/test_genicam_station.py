"""A station on a GigE Vision camera (Aravis' fake as its own process, real Mosquitto, real ONNX
Runtime): every frame a part, broken frames rejected with their reason, a killed camera found
again and parts inspected again."""

from __future__ import annotations

import time

import pytest

from inspector.station.config import load_config

from . import genicam_camera
from .waiting import wait


@pytest.fixture
def gv_camera():
    yield from genicam_camera.cameras()


def _station_config(tmp_path, model_path, broker, serial: str):
    path = tmp_path / "station.yaml"
    path.write_text(f"""\
station: {{id: test}}
source:
  type: genicam
  serial: {serial}
  region: [0, 0, 64, 64]
  trigger: {{mode: free-run, frame_rate: 20}}
  transport: {{packet_resend: false}}
  frame_timeout_s: 1.0
trigger: {{type: camera}}
part: {{deadline_ms: 2000}}
model: {{path: "{model_path}", warmup_runs: 1}}
mqtt: {{host: {broker.host}, port: {broker.port}, reconnect_max_s: 0.3}}
metrics: {{port: 0}}
recorder: {{path: "{tmp_path / "rec"}"}}
""")
    return load_config(path)


def test_packet_loss_rejects_broken_frames_with_a_reason_and_inspects_the_rest(
    gv_camera, tmp_path, model_path, broker, line, station_factory
):
    gv_camera("GVSTN", loss_per_thousand=20)
    station = station_factory(_station_config(tmp_path, model_path, broker, "GVSTN"))
    station.start()
    assert line.wait_status("online", 15), line.statuses
    assert wait(lambda: len(line.verdicts) >= 60, 20), len(line.verdicts)
    station.stop()
    time.sleep(0.3)
    source = station.source.source
    frames = station.metrics.value("inspector_frames_total")
    verdicts = line.wait_for(int(frames), timeout=5)
    assert len(verdicts) == frames  # every frame is a part, and every part has its verdict
    broken = [v for v in verdicts if v["reason"] == "unreadable_frame"]
    inspected = [v for v in verdicts if v["reason"] in ("ok", "defect")]
    counts = source.stats()
    assert len(broken) == counts.get("incomplete", 0) + counts.get("lost", 0) > 0
    assert len(inspected) == counts["frames"] > 0
    for v in broken:  # a broken frame is never given to the model
        assert v["result"] == "fail" and not v["scores"], v
        assert "packets were lost" in v["detail"] or "never arrived" in v["detail"], v
    assert len(broken) + len(inspected) == len(verdicts)


def test_a_killed_camera_shows_as_reconnecting_and_the_station_inspects_again(
    gv_camera, tmp_path, model_path, broker, line, station_factory
):
    cam = gv_camera("GVRST")
    station = station_factory(_station_config(tmp_path, model_path, broker, "GVRST"))
    station.start()
    assert line.wait_status("online", 15), line.statuses
    assert wait(lambda: len(line.verdicts) >= 10, 10)
    cam.kill()
    assert wait(lambda: station.source.state == "reconnecting", 8), station.source.detail
    assert "no frame" in station.source.detail or "camera" in station.source.detail
    assert wait(lambda: line.statuses and line.statuses[-1]["camera"] == "reconnecting", 5)
    before = len(line.verdicts)
    cam.start()
    assert wait(lambda: station.source.state == "ok", 20), station.source.detail
    assert wait(lambda: len(line.verdicts) >= before + 10, 10), len(line.verdicts)
    after = line.verdicts[before:]
    assert sum(v["reason"] in ("ok", "defect") for v in after) >= 8, after
    assert station.source.reopens >= 1


def test_mqtt_part_triggers_fire_a_software_triggered_camera_one_verdict_each(
    gv_camera, tmp_path, model_path, broker, line, station_factory
):
    """trigger.type mqtt + the camera's trigger mode software: each part trigger exposes one
    frame, and that frame is the part's (no free-running frames, no neighbour's frame)."""
    gv_camera("GVSW")
    cfg = _station_config(tmp_path, model_path, broker, "GVSW")
    text = cfg.config_path.read_text()
    text = text.replace("trigger: {mode: free-run, frame_rate: 20}", "trigger: {mode: software}")
    text = text.replace("trigger: {type: camera}", "trigger: {type: mqtt, max_frame_wait_ms: 400}")
    cfg.config_path.write_text(text)
    station = station_factory(load_config(cfg.config_path))
    station.start()
    assert line.wait_status("online", 15), line.statuses
    ids = [f"sw-{i}" for i in range(8)]
    for pid in ids:
        line.trigger(pid)
        time.sleep(0.25)  # the fake camera answers triggers on a 25 Hz grid
    verdicts = line.wait_for(len(ids), timeout=15)
    by_id = {v["part_id"]: v for v in verdicts}
    assert set(by_id) == set(ids)
    inspected = [v for v in verdicts if v["reason"] in ("ok", "defect")]
    assert len(inspected) >= len(ids) - 1, [v["reason"] for v in verdicts]
    frames = [v["frame"] for v in inspected]
    assert len(set(frames)) == len(frames)  # one frame per part
    # the status (republished every second) counts the triggers the camera took
    assert wait(
        lambda: line.statuses[-1].get("camera_stats", {}).get("triggers", 0) >= len(ids), 5
    ), line.statuses[-1].get("camera_stats")


def test_a_setting_the_camera_cannot_take_stops_run_at_start_naming_the_limit(
    gv_camera, tmp_path, model_path, broker
):
    import subprocess
    import sys

    gv_camera("GVBAD")
    cfg = _station_config(tmp_path, model_path, broker, "GVBAD")
    text = cfg.config_path.read_text().replace(
        "  frame_timeout_s: 1.0", "  frame_timeout_s: 1.0\n  features: {GainRaw: 500}"
    )
    cfg.config_path.write_text(text)
    out = subprocess.run(
        [sys.executable, "-m", "inspector.cli", "run", str(cfg.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2, out.stderr[-2000:]
    assert "GainRaw" in out.stderr and "limits" in out.stderr, out.stderr[-2000:]
