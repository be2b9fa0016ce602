"""Station calibration: camera, rectification, pixel size, quality watch, golden samples."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from inspector.cli import main
from inspector.contract.geometry import Geometry, build_maps, load_camera
from inspector.contract.preprocess import PreprocessSpec, preprocess
from inspector.errors import ConfigError
from inspector.station.config import PreprocessSection
from inspector.station.quality import MEASURES, QualitySection, QualityWatch, baseline

from . import boards


@pytest.fixture(scope="module")
def board_photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("boards")
    rng = np.random.default_rng(1)
    # the board lying flat on the conveyor, square to the camera, 500 mm away
    plane = (np.zeros(3), np.array([-80.0, -50.0, 500.0]))
    cv2.imwrite(str(folder / "00_plane.png"), boards.render(*plane, rng=rng))
    for i, view in enumerate(boards.views(16, seed=2)):
        cv2.imwrite(str(folder / f"view_{i:02d}.png"), boards.render(*view, rng=rng))
    cv2.imwrite(str(folder / "zz_no_board.png"), np.full((480, 640), 128, np.uint8))
    return folder


@pytest.fixture(scope="module")
def camera_yaml(board_photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("cal") / "camera.yaml"
    assert (
        main(
            [
                "calibrate",
                "camera",
                str(board_photos),
                "--board",
                "9x6",
                "--square-mm",
                "20",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    return out


def test_calibration_recovers_the_camera_within_one_percent(camera_yaml):
    data = yaml.safe_load(camera_yaml.read_text())
    k = np.array(data["camera_matrix"])
    truth = boards.K
    for i, j in [(0, 0), (1, 1), (0, 2), (1, 2)]:  # fx, fy, cx, cy
        assert abs(k[i, j] - truth[i, j]) / truth[i, j] < 0.01, (i, j, k[i, j], truth[i, j])
    assert data["rms_px"] < 0.3
    assert data["image_size"] == [640, 480]
    assert len(data["dist_coeffs"]) >= 4
    assert set(data["per_image_rms_px"]) >= {"00_plane.png", "view_00.png"}
    assert max(data["per_image_rms_px"].values()) < 0.5
    assert data["skipped"] == ["zz_no_board.png: board not found"]
    # fronto-parallel at 500 mm: 500 / fx mm per pixel
    expected = 500.0 / truth[0, 0]
    assert abs(data["mm_per_px"] - expected) / expected < 0.01, (data["mm_per_px"], expected)


def test_undistort_and_perspective_in_one_remap_rectify_a_part(camera_yaml):
    """A flat part seen at an angle through the distorting lens comes out square and sharp.

    Bound (with the camera model known): mean |error| < 2 grey levels, 95th percentile < 16
    (the remaining error is bilinear resampling at edges). With the model calibrated from
    the photos above the part lands within about a pixel (mean |error| < 8)."""
    from inspector.contract.geometry import CameraModel

    true_cam = CameraModel(boards.K, boards.DIST, boards.SIZE)
    calibrated = load_camera(camera_yaml)
    part = np.zeros((100, 200), np.uint8)  # 200 x 100 mm part, 1 mm per output pixel
    part[:] = 60
    cv2.rectangle(part, (20, 20), (180, 80), 200, -1)
    cv2.putText(part, "OK-7", (45, 68), cv2.FONT_HERSHEY_SIMPLEX, 1.3, 30, 3)
    # photograph it: part plane tilted, 450 mm away (render by inverse mapping, as the camera would)
    rvec, tvec = np.array([0.35, -0.25, 0.1]), np.array([-100.0, -50.0, 450.0])
    r, _ = cv2.Rodrigues(rvec)
    hom = np.column_stack([r[:, 0], r[:, 1], tvec])
    w, h = boards.SIZE
    uu, vv = np.meshgrid(np.arange(w, dtype=float), np.arange(h, dtype=float))
    norm = cv2.undistortPoints(
        np.stack([uu.ravel(), vv.ravel()], 1).reshape(-1, 1, 2),
        boards.K,
        boards.DIST,
        None,
        None,
        None,
        (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 40, 1e-9),
    ).reshape(-1, 2)
    p = np.linalg.inv(hom) @ np.vstack([norm.T, np.ones(len(norm))])
    mx, my = (
        (p[0] / p[2]).reshape(h, w).astype(np.float32),
        (p[1] / p[2]).reshape(h, w).astype(np.float32),
    )
    photo = cv2.remap(part, mx - 0.5, my - 0.5, cv2.INTER_LINEAR, borderValue=0)
    obj = np.array([[0, 0, 0], [200, 0, 0], [200, 100, 0], [0, 100, 0]], float)

    def rectified(cam):
        # the integrator clicks the part's corners in the undistorted view (here: computed)
        img, _ = cv2.projectPoints(obj, rvec, tvec, cam.matrix, np.zeros(5))
        maps = build_maps((200, 100), cam, corners=img.reshape(4, 2).tolist())
        out = preprocess(photo, PreprocessSpec(size=(200, 100), color="gray", remap=maps))
        return np.abs(out[..., 0].astype(int) - part.astype(int))[3:-3, 3:-3]

    exact = rectified(true_cam)
    assert exact.mean() < 2.0 and np.percentile(exact, 95) < 16, (
        exact.mean(),
        np.percentile(exact, 95),
    )
    assert rectified(calibrated).mean() < 8.0


def test_station_config_builds_the_remap(camera_yaml, tmp_path):
    pre = PreprocessSection(
        camera=camera_yaml,
        corners=[[100, 100], [300, 110], [290, 260], [110, 250]],
        warp_size=[64, 48],
    )
    maps = pre.geometry().maps()
    frame = boards.render(np.zeros(3), np.array([-80.0, -50.0, 500.0]))
    out = cv2.remap(frame, maps[0], maps[1], cv2.INTER_LINEAR)
    assert out.shape == (48, 64)
    assert PreprocessSection(roi=[0, 0, 10, 10]).geometry().maps() is None  # a plain crop
    assert PreprocessSection().remap() is None


def test_corners_outside_the_calibrated_frame_are_a_config_error(camera_yaml):
    outside = PreprocessSection(
        camera=camera_yaml, corners=[[10, 10], [700, 10], [600, 400], [10, 400]]
    )
    with pytest.raises(
        ConfigError, match=r"preprocess.corners: \[\[700.0, 10.0\]\] lie outside the 640x480"
    ):
        outside.remap()


def test_quality_watch_and_training_image_stats_measure_the_same_thing(tmp_path, parts_dir):
    """The station's quality watch measures the model input (after the ROI), as training's
    image_stats and a baseline made for the station do: equal figures for the same frame, and
    a lamp going dark outside the part's region is not drift."""
    from training.data.datasets import image_stats

    spec = PreprocessSpec(size=(32, 32), geometry=Geometry(roi=(16, 8, 48, 48)))
    rng = np.random.default_rng(4)
    frames = []
    for p in sorted((parts_dir / "good").glob("*.png")):
        f = rng.integers(240, 256, (64, 80), dtype=np.uint8)  # a bright conveyor around it
        f[8:56, 16:64] = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        frames.append(f)
    stats = image_stats(np.stack([preprocess(f, spec) for f in frames]))  # what the manifest holds
    watch = QualityWatch(QualitySection(every_n=1, window=1), stats, training=stats, spec=spec)
    for f in frames:
        watch.offer(f)
        one = image_stats(preprocess(f, spec)[None])
        assert watch.current == pytest.approx({k: one[k]["p50"] for k in MEASURES})
    assert watch.problems == []
    dark_outside = [f.copy() for f in frames]
    for f in dark_outside:
        f[:8], f[56:], f[:, :16], f[:, 64:] = 0, 0, 0, 0
    for f in dark_outside:
        watch.offer(f)
    assert watch.problems == []  # the part looks as it did: no drift
    darker = [(f // 3).astype(np.uint8) for f in frames]
    for f in darker:
        watch.offer(f)
    assert any("mean level" in p for p in watch.problems)


def test_baseline_for_a_station_measures_its_model_input(tmp_path, model_path, parts_dir):
    from calibration.baseline import make_baseline

    from .conftest import station_yaml

    class B:
        host, port = "127.0.0.1", 1883

    station = tmp_path / "station.yaml"
    station.write_text(
        station_yaml(model_path, parts_dir, B) + "preprocess: {roi: [8, 8, 32, 32]}\n"
    )
    stats = yaml.safe_load(make_baseline(parts_dir / "good", station=station))["stats"]
    assert stats["measured_on"] == "model input (after preprocessing)"
    from training.data.datasets import image_stats

    spec = PreprocessSpec(size=(32, 32), roi=(8, 8, 32, 32))
    images = [
        cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in sorted((parts_dir / "good").glob("*.png"))
    ]
    expected = image_stats(np.stack([preprocess(im, spec) for im in images]))
    assert stats["focus"] == pytest.approx(expected["focus"])


def stream(images):
    return [im for im in images]


def test_quality_watch_flags_blur_and_darkness_but_not_a_good_stream():
    rng = np.random.default_rng(0)
    ref = [boards.render(*v, rng=rng) for v in boards.views(6, seed=5)]
    stats = baseline(ref)
    cfg = QualitySection(every_n=2, window=3)

    def watch(frames):
        w = QualityWatch(cfg, stats)
        for f in frames:
            w.offer(f)
        return w.problems

    good = [boards.render(*v, rng=rng) for v in boards.views(6, seed=9)]
    assert watch(good) == []
    blurred = [cv2.GaussianBlur(f, (0, 0), 3) for f in good]
    assert any("focus" in p for p in watch(blurred))
    dark = [(f * 0.35).astype(np.uint8) for f in good]
    assert any("mean level" in p for p in watch(dark))


def test_station_goes_degraded_when_the_image_drifts(
    tmp_path, model_path, parts_dir, make_config, station_factory, line
):
    ref = [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in sorted(parts_dir.rglob("*.png"))]
    (tmp_path / "baseline.yaml").write_text(yaml.safe_dump({"stats": baseline(ref)}))
    dark = tmp_path / "dark"
    for p in parts_dir.rglob("*.png"):
        (dark / p.parent.name).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(
            str(dark / p.parent.name / p.name), cv2.imread(str(p), cv2.IMREAD_UNCHANGED) // 3
        )
    cfg = make_config(
        trigger="free-run",
        parts=dark,
        rate=60,
        extra=f'quality: {{baseline: "{tmp_path / "baseline.yaml"}", every_n: 2, window: 3}}\n',
    )
    station = station_factory(cfg)
    station.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(
        st["state"] == "degraded" and "mean level" in st["detail"] for st in line.statuses
    ):
        time.sleep(0.05)
    status = next(st for st in reversed(line.statuses) if st["state"] == "degraded")
    assert "mean level" in status["detail"] and status["quality"]["problems"]
    assert status["camera"] == "ok"  # the camera is fine: the image is not
    assert station.metrics.value("inspector_quality_degraded") == 1


@pytest.fixture
def golden(tmp_path, parts_dir):
    g = tmp_path / "golden"
    for expected, label in (("pass", "good"), ("fail", "defect")):
        (g / expected).mkdir(parents=True)
        for p in sorted((parts_dir / label).glob("*.png"))[:3]:
            shutil.copy(p, g / expected / p.name)
    return g


def station_file(tmp_path, model: Path, broker) -> Path:
    from .conftest import station_yaml

    p = tmp_path / "station.yaml"
    p.write_text(station_yaml(model, tmp_path, broker) + f'recorder: {{path: "{tmp_path}/rec"}}\n')
    return p


def test_golden_verification_passes_with_the_right_model_and_fails_with_a_wrong_one(
    tmp_path, golden, model_path, broker, capsys
):
    import json
    import time

    import paho.mqtt.client as mqtt

    cfg = station_file(tmp_path, model_path, broker)
    assert main(["verify", str(cfg), str(golden)]) == 0
    assert "6 of 6 golden parts agree" in capsys.readouterr().out
    got = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    sub.on_message = lambda c, u, m: got.append(json.loads(m.payload))
    sub.connect(broker.host, broker.port)
    sub.subscribe("inspector/test/status/verify")
    sub.loop_start()
    time.sleep(0.5)
    sub.loop_stop()
    assert got and got[-1]["passed"] is True and got[-1]["checked"] == 6  # retained outcome

    from inspector.lab.modelkit import build_contrast_model

    wrong = build_contrast_model(
        tmp_path / "wrong.onnx", size=32, contrast_at_half=400.0
    )  # blind to defects
    cfg = station_file(tmp_path, wrong, broker)
    assert main(["verify", str(cfg), str(golden)]) == 1
    out = capsys.readouterr().out
    assert out.count("DISAGREE") == 3 and "3 of 6 golden parts agree" in out


@pytest.mark.parametrize(
    "setup, args, message",
    [
        (
            "blank",
            ["calibrate", "camera", "{d}", "--board", "9x6", "--square-mm", "20"],
            "no 9x6 board found",
        ),
        (
            "empty",
            ["calibrate", "camera", "{d}", "--board", "9x6", "--square-mm", "20"],
            "no images",
        ),
        (
            "blank",
            ["calibrate", "camera", "{d}", "--board", "nine", "--square-mm", "20"],
            "COLSxROWS",
        ),
        ("corrupt", ["check", "{d}/station.yaml"], "not valid YAML"),
        ("empty", ["calibrate", "baseline", "{d}"], "no images"),
    ],
)
def test_bad_calibration_inputs_give_one_clear_line(tmp_path, capsys, setup, args, message):
    d = tmp_path / "in"
    d.mkdir()
    if setup == "blank":
        for i in range(3):
            cv2.imwrite(str(d / f"{i}.png"), np.full((120, 160), 128, np.uint8))
    if setup == "corrupt":
        (d / "station.yaml").write_text("model: [unclosed\n  path: x")
    code = main([a.replace("{d}", str(d)) for a in args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert "Traceback" not in "".join(err)


def test_corrupt_camera_yaml_is_a_clear_config_error(tmp_path, model_path, parts_dir, capsys):
    from .conftest import station_yaml

    (tmp_path / "camera.yaml").write_text("camera_matrix: [[1, 2], oops")

    class B:
        host, port = "127.0.0.1", 1883

    p = tmp_path / "station.yaml"
    p.write_text(
        station_yaml(model_path, parts_dir, B)
        + f'recorder: {{path: "{tmp_path}/rec"}}\n'
        + "preprocess: {camera: camera.yaml}\n"
    )
    assert main(["check", str(p)]) == 2
    err = capsys.readouterr().err
    assert "camera.yaml: not a readable camera calibration" in err and "Traceback" not in err
