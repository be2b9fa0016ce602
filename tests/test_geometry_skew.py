"""Geometry travels with the data: what the station feeds its model is what training feeds it.

A station crops (ROI) or rectifies (corners, camera calibration) each frame before the
model sees it, while its recorder keeps the whole raw frame. The recorder's sidecar and
the model's manifest carry that frame setup; training and evaluation apply it through the
one preprocessing function; ``inspector check`` refuses a station whose setup differs from
its model's.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from inspector.cli import main
from inspector.contract.geometry import FrameSetup, Geometry
from inspector.contract.manifest import parse
from inspector.contract.preprocess import PreprocessSpec, preprocess
from inspector.lab.modelkit import build_contrast_model
from inspector.station.config import RecorderSection, load_config
from inspector.station.metrics import Metrics
from inspector.station.recorder import Recorder
from training import TrainingError
from training.data import datasets, frames

from . import boards
from .test_recorder import verdict  # one way to make a recorded verdict

CORNERS = [[150, 110], [470, 120], [460, 360], [160, 350]]


class Sink:
    """Stands in for the MQTT publisher: the station is built, never started."""

    def __getattr__(self, name):
        return lambda *a, **k: None


def camera_file(path: Path) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "camera_matrix": boards.K.tolist(),
                "dist_coeffs": boards.DIST.tolist(),
                "image_size": list(boards.SIZE),
            }
        )
    )
    return path


def frame(seed: int, shape=(480, 640, 3)) -> np.ndarray:
    """A camera frame with detail everywhere, so any shift of the region shows."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (shape[0] // 8, shape[1] // 8, *shape[2:]), dtype=np.uint8)
    return cv2.resize(small, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def station_config(tmp_path: Path, model: Path, preprocess_yaml: str, source_extra: str = ""):
    (tmp_path / "frames").mkdir(exist_ok=True)
    cv2.imwrite(str(tmp_path / "frames" / "0.png"), frame(0))
    p = tmp_path / "station.yaml"
    p.write_text(
        f"""\
station: {{id: skew}}
source: {{type: folder, path: frames, loop: false{source_extra}}}
model: {{path: "{model}", warmup_runs: 0}}
mqtt: {{host: 127.0.0.1, port: 1}}
metrics: {{enabled: false}}
recorder: {{path: rec}}
preprocess: {preprocess_yaml}
"""
    )
    return p


def test_a_recorded_frame_gives_the_station_and_training_the_same_model_input(tmp_path):
    """The station's model input for a frame, and the training loader's for the recording of
    that frame (image + sidecar), are the same bytes: camera undistortion and a
    perspective warp of the part's corners included."""
    from inspector.station.pipeline import Station
    from training.common.config import ModelConfig, TrainConfig
    from training.common.runs import setup_of, spec_of

    camera_file(tmp_path / "camera.yaml")
    model = build_contrast_model(tmp_path / "m.onnx", size=32, channels=3)
    cfg = load_config(
        station_config(
            tmp_path, model, f"{{camera: camera.yaml, corners: {CORNERS}, warp_size: [96, 72]}}"
        )
    )
    station = Station(cfg, publisher=Sink())
    recorder = Recorder(cfg.recorder, Metrics(), spec=station.spec)  # as the station keeps it
    frames_seen = {"good": frame(1), "defect": frame(2)}
    station_input = {}
    for i, (label, image) in enumerate(frames_seen.items()):
        station_input[label] = preprocess(image, station.spec)  # what the station's model gets
        kept = recorder.write(verdict(f"P-{i}", seq=i), image)
        (tmp_path / "data" / label).mkdir(parents=True)
        for f in (kept, kept.with_suffix(".json")):  # QA files the recording under its label
            (tmp_path / "data" / label / f.name).write_bytes(f.read_bytes())

    tcfg = TrainConfig(data=tmp_path / "data", model=ModelConfig(image_size=32, color="bgr"))
    spec = spec_of(tcfg, setup_of(tcfg))  # what `inspector train` does
    loaded, bad = datasets.load_split(datasets.scan(tcfg.data).samples, spec, ["defect", "good"])
    assert not bad
    for x, file in zip(loaded.x, loaded.files, strict=True):
        label = Path(file).parent.name
        assert x.tobytes() == station_input[label].tobytes(), file
    # and it is the rectified region, not the whole frame squeezed to 32x32
    whole = preprocess(frames_seen["good"], PreprocessSpec(size=(32, 32), color="bgr"))
    assert station_input["good"].tobytes() != whole.tobytes()


def test_16_bit_recordings_are_scaled_by_the_source_bit_depth_in_training(tmp_path):
    """A 12-bit sensor's frames, kept as 16-bit PNGs, reach training as the station saw them
    (not shifted by 8, nearly black)."""
    rng = np.random.default_rng(3)
    raw = rng.integers(1000, 4096, (60, 80), dtype=np.uint16)  # 12-bit data in 16 bits
    spec = PreprocessSpec(size=(16, 16), geometry=Geometry(roi=(8, 4, 48, 48)), bit_depth=12)
    station_input = preprocess(raw, spec)
    assert station_input.mean() > 100  # the >> 8 of old: 4..15
    rec = Recorder(RecorderSection(path=tmp_path / "rec"), Metrics(), spec=spec)
    kept = rec.write(verdict("p"), raw)
    sidecar = json.loads(kept.with_suffix(".json").read_text())
    assert sidecar["preprocess"] == {"geometry": {"roi": [8, 4, 48, 48]}, "bit_depth": 12}
    setup = frames.resolve([kept])
    loaded = preprocess(
        datasets.read_image(kept), frames.spec_with(PreprocessSpec((16, 16)), setup)
    )
    assert loaded.tobytes() == station_input.tobytes()


def _write(folder: Path, name: str, sidecar: dict | None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    cv2.imwrite(str(path), frame(hash(name) % 1000, (60, 80)))
    if sidecar is not None:
        path.with_suffix(".json").write_text(json.dumps(sidecar))
    return path


ROI_A = {"preprocess": {"geometry": {"roi": [0, 0, 40, 40]}, "bit_depth": None}}
ROI_B = {"preprocess": {"geometry": {"roi": [4, 4, 40, 40]}, "bit_depth": None}}


def test_training_takes_the_setup_from_sidecars_and_refuses_disagreement(tmp_path):
    a = [_write(tmp_path / "a", f"{i}", ROI_A) for i in range(3)]
    assert frames.resolve(a) == FrameSetup(Geometry(roi=(0, 0, 40, 40)))
    b = _write(tmp_path / "b", "x", ROI_B)
    with pytest.raises(
        TrainingError, match=r"disagree.*roi \[0, 0, 40, 40\].*roi \[4, 4, 40, 40\]"
    ):
        frames.resolve([*a, b])
    plain = _write(tmp_path / "c", "plain", None)
    with pytest.raises(TrainingError, match="no recorder sidecar"):
        frames.resolve([*a, plain])
    # --geometry applies one setup to all, and a recording that says otherwise is refused
    given = FrameSetup(Geometry(roi=(0, 0, 40, 40)))
    assert frames.resolve([*a, plain], given=given) == given
    with pytest.raises(TrainingError, match=r"x.png was recorded with roi \[4, 4, 40, 40\]"):
        frames.resolve([*a, b], given=given)
    assert frames.resolve([plain]).plain  # ordinary images: whole frames, as before


def test_geometry_option_reads_a_station_config(tmp_path):
    camera_file(tmp_path / "camera.yaml")
    (tmp_path / "station.yaml").write_text(
        "station: {id: s}\nsource: {type: device, bit_depth: 12}\nmodel: {path: m.onnx}\n"
        "mqtt: {password_file: /nowhere/secret}\n"  # lives on the line PC: not needed here
        f"preprocess: {{camera: camera.yaml, corners: {CORNERS}}}\n"
    )
    setup = frames.station_setup(tmp_path / "station.yaml")
    assert setup.bit_depth == 12 and setup.geometry.camera.image_size == boards.SIZE
    assert setup.geometry.to_dict()["camera"]["matrix"] == boards.K.tolist()  # contents, not path
    assert setup.geometry.warp_size == (310, 240)  # the corners' edge lengths, made explicit


def test_manifest_carries_the_setup_and_old_manifests_still_load(tmp_path):
    camera_file(tmp_path / "camera.yaml")
    cfg = load_config(
        station_config(
            tmp_path, tmp_path / "m.onnx", f"{{camera: camera.yaml, corners: {CORNERS}}}"
        )
    )
    setup = FrameSetup(cfg.preprocess.geometry(), 12)
    from inspector.lab.modelkit import demo_manifest

    data = json.loads(json.dumps(demo_manifest(32, "m", setup=setup.to_dict())))  # via JSON
    m = parse(json.dumps(data), "m.onnx", "0" * 64)
    assert m.frame_setup == setup
    spec = m.preprocess_spec()  # evaluate's spec: the model's own geometry, maps rebuilt
    station = PreprocessSpec((32, 32), geometry=cfg.preprocess.geometry(), bit_depth=12)
    for a, b in zip(spec.remap, station.remap, strict=True):
        assert np.array_equal(a, b)
    old = demo_manifest(32, "old")
    assert "geometry" not in old["preprocess"]
    m_old = parse(json.dumps(old), "old.onnx", "1" * 64)
    assert m_old.frame_setup is None and m_old.preprocess_spec().remap is None
    bad = json.loads(json.dumps(data))
    bad["preprocess"]["geometry"] = {"roi": "everything"}
    with pytest.raises(Exception, match="preprocess: geometry"):
        parse(json.dumps(bad), "bad.onnx", "2" * 64)


def test_check_refuses_a_station_whose_geometry_differs_from_its_model(tmp_path, capsys):
    setup = FrameSetup(Geometry(roi=(100, 80, 300, 300))).to_dict()
    model = build_contrast_model(tmp_path / "roi.onnx", size=32, channels=3, setup=setup)
    same = station_config(tmp_path, model, "{roi: [100, 80, 300, 300]}")
    assert main(["check", str(same)]) == 0, capsys.readouterr().err
    other = station_config(tmp_path, model, "{roi: [120, 80, 300, 300]}")
    assert main(["check", str(other)]) == 2
    err = capsys.readouterr().err
    assert "roi [120, 80, 300, 300]" in err and "roi [100, 80, 300, 300]" in err, err
    assert "Traceback" not in err
    whole = station_config(tmp_path, model, "{}")
    assert main(["check", str(whole)]) == 2
    assert "the whole frame" in capsys.readouterr().err
    depth = station_config(tmp_path, model, "{roi: [100, 80, 300, 300]}", ", bit_depth: 10")
    assert main(["check", str(depth)]) == 2
    assert "10-bit pixels" in capsys.readouterr().err


def test_check_notes_a_model_that_does_not_say(tmp_path, capsys):
    model = build_contrast_model(tmp_path / "old.onnx", size=32, channels=3)  # no setup recorded
    cfg = station_config(tmp_path, model, "{roi: [100, 80, 300, 300]}")
    assert main(["check", str(cfg)]) == 0
    assert "does not say which geometry it was trained with" in capsys.readouterr().out


def test_the_station_gives_its_spec_to_the_recorder_and_the_quality_watch(tmp_path):
    from inspector.station.pipeline import Station
    from inspector.station.quality import MEASURES

    model = build_contrast_model(tmp_path / "m.onnx", size=32, channels=3)
    stats = {k: {"p50": 1.0} for k in MEASURES}
    (tmp_path / "baseline.yaml").write_text(yaml.safe_dump({"stats": stats}))
    path = station_config(tmp_path, model, "{roi: [100, 80, 300, 300]}", ", bit_depth: 12")
    path.write_text(path.read_text() + f'quality: {{baseline: "{tmp_path / "baseline.yaml"}"}}\n')
    station = Station(load_config(path), publisher=Sink())
    assert station.spec.bit_depth == 12
    assert station.recorder.setup == station.spec.setup().to_dict()
    assert station.quality.spec is station.spec
