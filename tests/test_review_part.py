"""The review workbench's part page and the images it shows: the recorded frame, the model
input and the heat map, none of them served from outside the configured roots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .review_helpers import client_as, ids

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:starlette.*")


def test_part_page_shows_the_image_and_the_verdict(bench):
    tmp, cfg, app = bench
    c, _ = client_as(app, "viewer")
    r = c.get("/part/2?station=line1&sort=time")
    assert r.status_code == 200
    assert "model_id&#34;: &#34;demo" in r.text and "/media/rec/line1/" in r.text
    img = r.text.split('id="full"')[0].rsplit('src="', 1)[1].split('"')[0]
    got = c.get(img)
    assert got.status_code == 200 and got.headers["content-type"] == "image/png"
    assert "max-age" in got.headers["cache-control"]
    assert c.get(img, headers={"if-none-match": got.headers["etag"]}).status_code == 304
    assert 'data-key="ArrowRight"' in r.text and 'data-key="ArrowLeft"' in r.text
    assert "<kbd>g</kbd> good" not in r.text, "a viewer gets no label buttons"
    assert c.get("/part/9999").status_code == 404


def test_hostile_part_ids_and_paths_never_leave_the_roots(bench):
    tmp, cfg, app = bench
    c, _ = client_as(app, "viewer")
    inbox = c.get("/?station=line1&sort=time_asc&page=1").text
    assert "../../etc/passwd" in inbox  # part 7 has a hostile id, shown as text
    for path in (
        "/media/rec/line1/../../etc/passwd",
        "/media/rec/line1/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/media/rec/line1/..%2f..%2f..%2f..%2fetc%2fpasswd",
        "/media/rec/line1//etc/passwd",
        "/media/rec/nostation/x.png",
        "/media/dataset/../review.yaml",
        "/media/dataset/..%2freview.yaml",
        "/media/rec/line1/%00.png",
    ):
        assert c.get(path).status_code == 404, path
    (tmp / "rec1" / "link.png").symlink_to("/etc/passwd")
    assert c.get("/media/rec/line1/link.png").status_code == 404
    sidecar = next((tmp / "rec1").rglob("*.json"))
    assert c.get(f"/media/rec/line1/{sidecar.relative_to(tmp / 'rec1')}").status_code == 404


def _registered_model(tmp: Path, size=(24, 20), color="gray") -> str:
    """A model in the review's registry (a manifest beside a stand-in model file); its id."""
    import hashlib

    folder = tmp / "registry" / "m1"
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"a stand-in model")
    manifest = {"name": "m1", "preprocess": {"size": list(size), "color": color}}
    (folder / "model.json").write_text(json.dumps(manifest))
    return "m1@" + hashlib.sha256(b"a stand-in model").hexdigest()[:12]


def _record(root: Path, part_id: str, model_id: str, image, spec=None, heatmap=None) -> Path:
    """One part kept by the real recorder (with the station's spec, when given)."""
    from inspector.contract.records import Reason, Verdict
    from inspector.station.config import RecorderSection
    from inspector.station.metrics import Metrics
    from inspector.station.recorder import Recorder

    rec = Recorder(RecorderSection(path=root), Metrics(), spec=spec)
    t = 1_796_100_000.0 + len(list(root.rglob("*.json")))
    v = Verdict(
        part_id=part_id,
        seq=1,
        result="fail",
        reason=Reason.DEFECT,
        label="defect",
        scores={"good": 0.2, "defect": 0.8},
        thresholds={"defect": 0.5},
        model_id=model_id,
        t_trigger=t,
        t_capture=t,
        t_verdict=t,
        deadline=t + 1,
        deadline_mono=0.0,
    )
    return rec.write(v, image, heatmap)


def test_part_page_shows_the_model_input_and_the_heat_map(bench):
    import cv2
    import numpy as np

    from inspector.contract.preprocess import PreprocessSpec, preprocess

    tmp, cfg, app = bench
    model_id = _registered_model(tmp)
    rng = np.random.default_rng(5)
    frame = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    station = PreprocessSpec(size=(24, 20), roi=(8, 4, 40, 30))
    amap = rng.random((4, 4)).astype(np.float32)
    roi = _record(tmp / "rec1", "ROI-1", model_id, frame, spec=station, heatmap=amap)
    whole = _record(tmp / "rec1", "WHOLE-1", model_id, frame, heatmap=amap)
    unknown = _record(tmp / "rec1", "UNKNOWN-1", "other@123", frame, spec=station)
    app.state.bench.rescan()
    parts = ids(app)
    c, _ = client_as(app, "viewer")

    pid = parts["ROI-1"]["id"]
    page = c.get(f"/part/{pid}").text
    assert f'src="/input/{pid}"' in page and "roi [8, 4, 40, 30]" in page
    assert "resized as the model does (24x20, gray, area)" in page
    got = c.get(f"/input/{pid}")
    assert got.status_code == 200 and got.headers["content-type"] == "image/png"
    spec = PreprocessSpec(size=(24, 20), color="gray", roi=(8, 4, 40, 30))
    want = preprocess(cv2.imread(str(roi), cv2.IMREAD_UNCHANGED), spec)
    assert got.content == cv2.imencode(".png", want)[1].tobytes()
    made = sorted(Path(cfg.cache).rglob("*.png"))
    assert c.get(f"/input/{pid}").content == got.content
    assert sorted(Path(cfg.cache).rglob("*.png")) == made, "made once, then cached"
    # the station cropped: the heat map lies over the model input, with a toggle
    assert 'class="heat alone"' in page and f'src="/heat/{pid}"' in page
    assert 'class="heat-toggle" data-key="h"' in page
    heat = c.get(f"/heat/{pid}")
    assert heat.status_code == 200 and heat.content == roi.with_suffix(".heat.png").read_bytes()

    pid = parts["WHOLE-1"]["id"]  # no geometry: the whole frame, resized as the model does
    page = c.get(f"/part/{pid}").text
    assert "names no geometry: the whole frame, resized as the model does" in page
    want = preprocess(frame, PreprocessSpec(size=(24, 20), color="gray"))
    assert c.get(f"/input/{pid}").content == cv2.imencode(".png", want)[1].tobytes()
    assert f'src="/heat/{pid}" alt="heat map over the frame"' in page  # over the full image
    assert whole.with_name(whole.stem + ".heat.png").is_file()

    pid = parts["UNKNOWN-1"]["id"]  # a model the registry lacks: the region at its own size
    page = c.get(f"/part/{pid}").text
    assert "other@123 is not in the models registry" in page and "heat-toggle" not in page
    x = cv2.imdecode(np.frombuffer(c.get(f"/input/{pid}").content, np.uint8), -1)
    assert np.array_equal(x, cv2.imread(str(unknown))[4:34, 8:48])

    plain = ids(app)["P-0-0002"]["id"]  # recorded without a setup or a known model
    assert "heat-toggle" not in c.get(f"/part/{plain}").text
    assert c.get(f"/input/{plain}").status_code == 200


def test_model_input_and_heat_routes_stay_inside_the_roots(bench):
    import numpy as np

    tmp, cfg, app = bench
    frame = np.full((32, 32), 120, np.uint8)
    img = _record(tmp / "rec1", "H-1", "x@1", frame, heatmap=np.zeros((2, 2), np.float32))
    bad = _record(tmp / "rec1", "BAD-1", "x@1", frame)
    app.state.bench.rescan()
    parts = ids(app)
    c, _ = client_as(app, "viewer")
    outside = tmp / "outside.png"
    outside.write_bytes(img.read_bytes())
    img.unlink()
    img.symlink_to(outside)  # the image links out of the root
    pid = parts["H-1"]["id"]
    assert c.get(f"/input/{pid}").status_code == 404
    heat_png = img.with_name(img.stem + ".heat.png")
    heat_png.unlink()
    heat_png.symlink_to("/etc/passwd")
    assert c.get(f"/heat/{pid}").status_code == 404
    assert "heat-toggle" not in c.get(f"/part/{pid}").text
    for path in (
        "/input/9999",
        "/heat/9999",
        "/input/../../etc/passwd",
        "/heat/..%2f..%2fetc%2fpasswd",
        "/input/%00",
        f"/heat/{parts['P-0-0001']['id']}",  # a part without a heat map
    ):
        assert c.get(path).status_code == 404, path
    sidecar = bad.with_suffix(".json")
    record = json.loads(sidecar.read_text())
    record["preprocess"] = {"geometry": {"roi": [-1, 0, 5, 5]}}
    sidecar.write_text(json.dumps(record))
    r = c.get(f"/input/{parts['BAD-1']['id']}")
    assert r.status_code == 422 and "malformed" in r.text
