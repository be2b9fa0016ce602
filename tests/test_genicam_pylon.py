"""The pylon source (Basler's pypylon, the optional ``basler`` extra) on an emulated camera
replaying a folder of part images, one per software trigger: the station's verdicts equal
those of the same images read from files. Skipped where pypylon is not installed."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from inspector.lab.modelkit import write_parts
from inspector.station.config import load_config

pytest.importorskip("pypylon", reason="the basler extra (pypylon) is not installed")

N_PARTS = 10


def _station(tmp_path: Path, name: str, source: str, trigger: str, model_path, broker):
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"""\
station: {{id: test}}
source: {source}
trigger: {{type: {trigger}}}
part: {{deadline_ms: 3000}}
model: {{path: "{model_path}", warmup_runs: 1}}
mqtt: {{host: {broker.host}, port: {broker.port}, reconnect_max_s: 0.3}}
metrics: {{port: 0}}
recorder: {{enabled: false}}
""")
    return load_config(path)


def _decisions(verdicts: list[dict]) -> list[tuple]:
    return [(v["result"], v["reason"], v.get("class"), v["scores"]) for v in verdicts]


def test_an_emulated_basler_camera_replaying_parts_decides_them_as_the_files_do(
    tmp_path, model_path, broker, line, station_factory, monkeypatch
):
    monkeypatch.setenv("PYLON_CAMEMU", "1")
    parts = tmp_path / "parts"
    parts.mkdir()
    write_parts(parts, N_PARTS, defect_rate=0.4, seed=5, size=48, labelled=False)

    files = station_factory(
        _station(
            tmp_path,
            "files",
            f'{{type: folder, path: "{parts}", rate_fps: 20, loop: false}}',
            "free-run",
            model_path,
            broker,
        )
    )
    files.start()
    by_file = line.wait_for(N_PARTS, timeout=20)
    files.stop()
    assert len(by_file) == N_PARTS
    expected = _decisions(sorted(by_file, key=lambda v: v["frame"]))
    assert {d[0] for d in expected} == {"pass", "fail"}  # both kinds of part are in the replay
    line.verdicts.clear()

    camera = station_factory(
        _station(
            tmp_path,
            "pylon",
            f'{{type: pylon, emulate_folder: "{parts}", pixel_format: Mono8, '
            f"region: [0, 0, 48, 48], trigger: {{mode: software}}}}",
            "camera",
            model_path,
            broker,
        )
    )
    camera.start()
    source = camera.source.source
    deadline = time.monotonic() + 20
    while camera.source.state != "ok" and time.monotonic() < deadline:
        time.sleep(0.05)
    for _ in range(N_PARTS):  # the part sensor: one software trigger per part
        assert source.fire() is not None
        time.sleep(0.1)
    got = line.wait_for(N_PARTS, timeout=20)
    camera.stop()
    assert len(got) == N_PARTS
    in_order = sorted(got, key=lambda v: int(v["part_id"].rsplit("-", 1)[1]))
    assert _decisions(in_order) == expected
    assert source.stats()["triggers"] == N_PARTS and source.stats()["frames"] == N_PARTS
