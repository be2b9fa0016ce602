"""The review workbench: every route in-process (Starlette's TestClient), then the key
journey in a real headless Chromium (tests/review_browser.py)."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from inspector.cli import main
from inspector.errors import ConfigError
from inspector.review import index
from inspector.review.config import load_review_config
from inspector.review.store import MIGRATIONS, Store

from .review_helpers import PASSWORD, csrf_of, serve, workbench

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:starlette.*")


@pytest.fixture
def bench(tmp_path):
    cfg, app = workbench(tmp_path)
    return tmp_path, cfg, app


def client_as(app, role: str) -> tuple[TestClient, str]:
    c = TestClient(app)
    token = csrf_of(c.get("/login").text)
    r = c.post("/login", data={"name": role, "password": PASSWORD, "csrf": token, "next": "/"})
    assert r.status_code == 200 and r.url.path == "/"
    return c, csrf_of(r.text)


def total(html: str) -> int:
    return int(re.search(r"<small>(\d+) part\(s\)", html).group(1))


def ids(app, station: str = "line1") -> dict[str, dict]:
    """part_id -> the store's row (ids follow the order the indexer found the files)."""
    from inspector.review.store import PartFilter

    rows = app.state.bench.store.parts(PartFilter(station=station), 0, 1000)
    return {r["part_id"]: r for r in rows}


def rows(html: str) -> int:
    return html.count('<tr class="part ')


def test_login_is_required_and_checked(bench):
    _, _, app = bench
    c = TestClient(app)
    r = c.get("/part/1?sort=score", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/part/1%3Fsort%3Dscore"
    token = csrf_of(c.get("/login").text)
    bad = c.post("/login", data={"name": "admin", "password": "wrong-password", "csrf": token})
    assert bad.status_code == 401 and "Wrong name or password" in bad.text
    token = csrf_of(bad.text)
    assert (
        c.post("/login", data={"name": "nobody", "password": PASSWORD, "csrf": token}).status_code
        == 401
    )
    r = c.post("/login", data={"name": "viewer", "password": PASSWORD, "csrf": "forged"})
    assert r.status_code == 403, "a login without the form's token is refused"
    token = csrf_of(c.get("/login").text)
    r = c.post(
        "/login",
        data={"name": "viewer", "password": PASSWORD, "csrf": token, "next": "//evil.example/"},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/", "no redirect off the site"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "review_session=" in cookie
    inbox = c.get("/")
    assert inbox.status_code == 200 and "viewer (viewer)" in inbox.text
    c.post("/logout", data={"csrf": csrf_of(inbox.text)})
    assert c.get("/", follow_redirects=False).status_code == 303


def test_inbox_filters_sorts_and_pages(bench):
    tmp, cfg, app = bench
    c, _ = client_as(app, "viewer")
    r = c.get("/")
    assert total(r.text) == 40 and rows(r.text) == 20 and "page 1 of 2" in r.text
    assert rows(c.get("/?page=2").text) == 20
    assert total(c.get("/?station=line2").text) == 10
    assert total(c.get("/?station=line1").text) == 30
    uncertain = c.get("/?station=line1&reason=uncertain").text
    assert total(uncertain) == 4  # i % 5 == 4 among the failed of 30
    assert total(c.get("/?station=line1&reason=defect").text) == 16
    by_score = c.get("/?station=line1&sort=score").text
    scores = [float(s) for s in _column(by_score, 9)]
    assert scores == sorted(scores, reverse=True)
    assert all(
        0.4 <= s <= 0.6 for s in map(float, _column(c.get("/?score_min=0.4&score_max=0.6").text, 9))
    )
    assert total(c.get("/?station=line1&model=demo%401").text) == 15
    # line1's parts are a minute apart from 2026-11-30T00:53:20Z (review_helpers.T0):
    # 01:00 to 01:10 holds parts 7..16, the day before holds none
    window = c.get("/?station=line1&since=2026-11-30T01:00&until=2026-11-30T01:10&sort=time_asc")
    assert total(window.text) == 10
    want = ["../../etc/passwd"] + [f"P-0-{i:04d}" for i in range(8, 17)]  # part 7's id is hostile
    assert _column(window.text, 4) == want
    assert total(c.get("/?station=line1&since=2026-11-29&until=2026-11-30").text) == 0
    assert total(c.get("/?station=line1&until=2026-11-30T01:00").text) == 7  # parts 0..6
    assert total(c.get("/?station=line1&since=2026-11-30T01:00").text) == 23
    assert total(c.get("/?reviewed=yes").text) == 0
    assert total(c.get("/?reviewed=no").text) == 40
    assert "server-timing" in r.headers


def _column(html: str, n: int) -> list[str]:
    import re

    out = []
    for row in re.findall(r'<tr class="part [^"]*"[^>]*>(.*?)</tr>', html, re.S):
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        out.append(re.sub(r"<[^>]+>", "", cells[n - 1]).strip())
    return out


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


def test_thumbnails_are_made_once(bench):
    tmp, cfg, app = bench
    c, _ = client_as(app, "viewer")
    r = c.get("/thumb/3")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert "max-age" in r.headers["cache-control"]
    (made,) = list(Path(cfg.cache).rglob("*.jpg"))
    stamp = made.stat().st_mtime_ns
    time.sleep(0.01)
    assert c.get("/thumb/3").content == r.content and made.stat().st_mtime_ns == stamp
    assert c.get("/thumb/999").status_code == 404


def test_relabel_writes_the_dataset_the_log_and_undo_takes_it_back(bench):
    tmp, cfg, app = bench
    c, token = client_as(app, "reviewer")
    data = tmp / "data"
    p = ids(app)
    failed, passed, other = p["P-0-0002"]["id"], p["P-0-0003"]["id"], p["P-0-0004"]["id"]
    # P-0-0002: the line failed it; people call it good: a false reject
    r = c.post(f"/part/{failed}/label", data={"label": "good", "csrf": token, "next": "/dataset"})
    assert r.status_code == 200 and r.url.path == "/dataset"
    (copied,) = [p for p in (data / "good").glob("line1_*.png")]
    meta = json.loads(copied.with_suffix(".json").read_text())
    assert meta["review"]["label"] == "good" and meta["review"]["user"] == "reviewer"
    assert meta["review"]["line_result"] == "fail" and meta["image"] == copied.name
    assert "disagrees" not in meta and meta["scores"]  # the recorder's sidecar travels along
    # relabelled: the image moves folders
    c.post(f"/part/{failed}/label", data={"label": "crack", "csrf": token})
    assert (
        not list((data / "good").glob("line1_*")) and len(list((data / "crack").glob("*.png"))) == 1
    )
    # P-0-0003 passed on the line; people see a scratch: an escape
    c.post(f"/part/{passed}/label", data={"label": "scratch", "csrf": token})
    c.post(f"/part/{other}/label", data={"label": "unsure", "csrf": token})
    inbox = c.get("/").text
    assert 'id="escapes">1<' in inbox and 'id="false-rejects">0<' in inbox
    assert total(c.get("/?reviewed=yes").text) == 3
    log = [json.loads(line) for line in (data / "labels.jsonl").read_text().splitlines()]
    assert [e["label"] for e in log] == ["good", "crack", "scratch", "unsure"]
    assert log[0]["station"] == "line1" and log[0]["line_result"] == "fail"
    # undo my last label (unsure on part 4), then the crack of part 2: it is good again
    r = c.post("/undo", data={"csrf": token})
    assert r.url.path == f"/part/{other}" and total(c.get("/?reviewed=yes").text) == 2
    lid = app.state.bench.store.part(failed)["label_id"]
    c.post("/undo", data={"csrf": token, "label_id": str(lid)})
    assert app.state.bench.store.part(failed)["label"] == "good"
    assert len(list((data / "good").glob("line1_*.png"))) == 1 and not list(
        (data / "crack").glob("*")
    )
    assert 'id="false-rejects">1<' in c.get("/").text
    assert c.post("/undo", data={"csrf": token, "label_id": str(lid)}).status_code == 409
    page = c.get(f"/part/{failed}").text
    assert "undo of #" in page
    assert c.post(f"/part/{failed}/label", data={"label": "../x", "csrf": token}).status_code == 400


def test_bulk_labels_and_roles(bench):
    tmp, cfg, app = bench
    viewer, vtoken = client_as(app, "viewer")
    assert viewer.post("/part/2/label", data={"label": "good", "csrf": vtoken}).status_code == 403
    c, token = client_as(app, "reviewer")
    bad = c.post("/label", data={"csrf": token, "label": "scratch", "part": ["5", "6", "x"]})
    assert bad.status_code == 400 and "part: expected a whole number" in bad.text
    assert "0 part(s)" in c.get("/?reviewed=yes").text, "a bad id labels nothing"
    r = c.post("/label", data={"csrf": token, "label": "scratch", "part": ["5", "6"], "next": "/"})
    assert r.status_code == 200 and "2 part(s)" in c.get("/?reviewed=yes").text
    assert c.post("/rescan", data={"csrf": token}).status_code == 200


FORMS = [
    "/part/2/label",
    "/label",
    "/undo",
    "/train",
    "/train/1/cancel",
    "/rescan",
    "/models/promote",
    "/models/rollback",
    "/logout",
]


def test_every_form_needs_its_csrf_token(bench):
    _, _, app = bench
    c, token = client_as(app, "admin")
    for path in FORMS:
        _refused_without_token(c, token, path)


def _refused_without_token(c, token, path):
    assert c.post(path, data={"label": "good"}).status_code == 403
    assert c.post(path, data={"label": "good", "csrf": token + "x"}).status_code == 403
    assert c.post(path, data={"csrf": "x"}, headers={"X-CSRF-Token": "y"}).status_code == 403


def test_dataset_page_counts(bench):
    tmp, cfg, app = bench
    c, token = client_as(app, "reviewer")
    page = c.get("/dataset").text
    assert 'data-class="good">12<' in page and 'data-class="scratch">12<' in page
    c.post("/part/2/label", data={"label": "scratch", "csrf": token})
    page = c.get("/dataset").text
    assert 'data-class="scratch">13<' in page and "Labels in force: scratch 1" in page


FAKE_TRAIN = """
import csv, json, sys, time
out = sys.argv[sys.argv.index("--out") + 1]
epochs = int(sys.argv[sys.argv.index("--epochs") + 1])
with open(out + "/history.csv", "w") as f:
    f.write("epoch,loss,val_loss\\n")
for e in range(epochs):
    time.sleep(float(sys.argv[-1]))
    with open(out + "/history.csv", "a") as f:
        f.write(f"{e},{1 / (e + 1):.4f},{1 / (e + 1):.4f}\\n")
    print("epoch", e, flush=True)
json.dump({"ok": True}, open(out + "/run.json", "w"))
"""


def fake_trainer(tmp, app, pause: float):
    script = tmp / "fake_train.py"
    script.write_text(FAKE_TRAIN)
    jobs = app.state.bench.jobs
    real = jobs.command
    jobs.command = lambda out, epochs: [
        sys.executable,
        str(script),
        *real(out, epochs)[3:],
        str(pause),
    ]


def test_training_runs_one_at_a_time_with_progress_and_cancel(bench):
    tmp, cfg, app = bench
    fake_trainer(tmp, app, 0.05)
    c, token = client_as(app, "reviewer")
    assert 'value="2"' in c.get("/train").text  # epochs default from the config
    r = c.post("/train", data={"csrf": token, "name": "r1", "epochs": "3"})
    assert r.status_code == 200
    deadline = time.time() + 20
    while 'data-status="done"' not in (
        page := c.get("/train/1", headers={"HX-Request": "true"}).text
    ):
        assert time.time() < deadline, page
        time.sleep(0.1)
    assert '<b class="epoch">3</b> of 3' in page and "hx-trigger" not in page
    assert "epoch 2" in page and "val_loss" in page
    assert (tmp / "runs" / "r1" / "train.log").is_file()
    viewer, vtoken = client_as(app, "viewer")
    assert (
        viewer.post("/train", data={"csrf": vtoken, "name": "v", "epochs": "1"}).status_code == 403
    )
    fake_trainer(tmp, app, 5)
    c.post("/train", data={"csrf": token, "name": "r2", "epochs": "9"})
    busy = c.post("/train", data={"csrf": token, "name": "r3", "epochs": "1"})
    assert busy.status_code == 400 and "one at a time" in busy.text
    assert 'hx-trigger="every 1s"' in c.get("/train/2", headers={"HX-Request": "true"}).text
    assert "<html" in c.get("/train/2").text  # without htmx: a whole page
    # the app restarts: the run is found again by its pid
    app.state.bench.jobs.procs.clear()
    assert app.state.bench.store.active_runs()[0]["name"] == "r2"
    assert c.post("/train/2/cancel", data={"csrf": token}).status_code == 200
    assert app.state.bench.store.run(2)["status"] == "cancelled"
    assert c.post("/train/2/cancel", data={"csrf": token}).status_code == 409
    assert c.post("/train", data={"csrf": token, "name": "../x", "epochs": "1"}).status_code == 400
    assert c.post("/train", data={"csrf": token, "name": "r1", "epochs": "1"}).status_code == 400
    assert c.get("/train/99").status_code == 404


def test_compare_two_reports(bench):
    tmp, cfg, app = bench
    c, _ = client_as(app, "viewer")
    page = c.get("/compare").text
    assert "reports/a" in page and "reports/b" in page
    r = c.get("/compare?a=reports/a&b=reports/b")
    assert r.status_code == 200
    fixed, broke = r.text.count('<tr class="fixed">'), r.text.count('<tr class="broke">')
    assert fixed and broke and f"fixed {fixed}, broke {broke}" in r.text
    assert r.text.count("<caption>") == 2 and "/media/dataset/" in r.text
    link = r.text.split('href="/media/dataset/')[1].split('"')[0]
    assert c.get("/media/dataset/" + link).status_code == 200
    assert c.get("/compare?a=reports/a&b=nope").status_code == 404


def test_index_reads_only_new_sidecars_and_skips_bad_ones(tmp_path):
    from .review_helpers import make_recordings

    make_recordings(tmp_path / "rec", 6)
    store = Store(":memory:")
    assert index.scan(store, "s", tmp_path / "rec").added == 6
    assert index.scan(store, "s", tmp_path / "rec").added == 0
    day = next((tmp_path / "rec").iterdir()) / "fail"
    (day / "broken.json").write_text("{not json")
    (day / "other.json").write_text('{"hello": 1}')
    (day / "escape.json").write_text(
        '{"part_id": "x", "result": "fail", "t_verdict": 1, "image": "../../../etc/passwd"}'
    )
    r = index.scan(store, "s", tmp_path / "rec")
    assert r.added == 0 and len(r.skipped) == 3
    assert store.version() == len(MIGRATIONS)


def test_config_is_validated_with_key_and_line(tmp_path):
    bad = tmp_path / "review.yaml"
    bad.write_text("dataset:\n  path: d\n  defects: []\nbogus: 1\n")
    with pytest.raises(ConfigError) as e:
        load_review_config(bad)
    text = "\n".join(e.value.problems)
    assert "bogus" in text and "defects" in text and ":4" in text


def test_cli_adds_a_user(tmp_path, monkeypatch, capsys):
    from inspector.review import auth

    cfg = tmp_path / "review.yaml"
    cfg.write_text("database: r.sqlite\ndataset:\n  path: d\n")
    monkeypatch.setenv("INSPECTOR_REVIEW_PASSWORD", PASSWORD)
    assert main(["review", "--config", str(cfg), "--add-user", "ann", "--role", "admin"]) == 0
    store = Store(tmp_path / "r.sqlite")
    assert auth.login(store, "ann", PASSWORD, 1.0)[1].role == "admin"
    assert auth.login(store, "ann", "wrong password", 1.0) is None
    assert store.user("ann")["hash"].startswith("$argon2id$")
    monkeypatch.setenv("INSPECTOR_REVIEW_PASSWORD", "short")
    assert main(["review", "--config", str(cfg), "--add-user", "bob"]) == 1


def test_bench_measures_pages(tmp_path):
    from inspector.review.bench import run

    result = run(3000, repeats=1, work=tmp_path)
    pages = result["pages"]
    assert set(pages) >= {
        "first page, newest",
        "time range + class",
        "part page (with previous/next)",
    }
    # every filter row timed a page that found parts: the time range lies inside the data
    assert all(p["parts_matched"] > 0 for k, p in pages.items() if k.startswith(("first", "time")))
    assert (
        0
        < pages["time range + class"]["parts_matched"]
        < pages["first page, newest"]["parts_matched"]
    )
    assert pages["part page (with previous/next)"]["status"] == 200
    assert result["worst_ms"] < 2000


def test_bench_stops_on_a_filter_that_matches_nothing(tmp_path, monkeypatch):
    from inspector.review import bench

    real = bench.queries
    monkeypatch.setattr(
        bench, "queries", lambda n: {**real(n), "before the data": "until=2020-01-01"}
    )
    with pytest.raises(bench.BenchError, match="no parts matched"):
        bench.run(500, repeats=1, work=tmp_path)


CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture
def served(tmp_path):
    """The workbench served by uvicorn on a free port (as `inspector review` serves it)."""
    cfg, app = workbench(tmp_path)
    with serve(app) as (host, port):
        yield tmp_path, app, f"http://{host}:{port}"


def test_browser_journey(served, tmp_path_factory):
    """Log in, filter, relabel three parts with the keyboard, see the dataset grow, undo one,
    train a tiny model and watch it finish, compare two reports; hostile paths and forged
    POSTs are refused. Screenshots: INSPECTOR_SCREENSHOTS=docs remakes the README's."""
    if not (Path(CHROMEDRIVER).exists() and Path("/usr/bin/chromium").exists()):
        pytest.skip("needs Debian's chromium and chromium-driver")
    import urllib.error
    import urllib.request

    from selenium import webdriver
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select, WebDriverWait

    def text_of(d, selector):
        return d.find_element(By.CSS_SELECTOR, selector).text

    tmp, app, base = served
    # the README's screenshots are remade with INSPECTOR_SCREENSHOTS=docs; a plain test run
    # writes them beside its other files, so it never changes the checkout
    docs = Path(os.environ.get("INSPECTOR_SCREENSHOTS") or tmp_path_factory.mktemp("screens"))
    docs.mkdir(parents=True, exist_ok=True)
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,900",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
    ):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    wait = WebDriverWait(driver, 60)  # generous: CI shares two cores

    def key(k: str) -> None:
        before = driver.current_url
        driver.find_element(By.TAG_NAME, "body").send_keys(k)
        wait.until(lambda d: d.current_url != before)

    def count(cls: str) -> int:
        driver.get(base + "/dataset")
        return int(driver.find_element(By.CSS_SELECTOR, f'td[data-class="{cls}"]').text)

    try:
        driver.get(base + "/")
        driver.find_element(By.ID, "name").send_keys("reviewer")
        driver.find_element(By.ID, "password").send_keys(PASSWORD)
        driver.find_element(By.ID, "login").click()
        wait.until(lambda d: d.find_elements(By.ID, "filters"))
        assert count("good") == 12 and count("scratch") == 12
        driver.get(base + "/")
        Select(driver.find_element(By.ID, "f-reason")).select_by_visible_text("defect")
        Select(driver.find_element(By.ID, "f-reviewed")).select_by_value("no")
        driver.find_element(By.ID, "apply").click()
        wait.until(lambda d: "reason=defect" in d.current_url)
        assert all(
            td.text == "defect"
            for td in driver.find_elements(By.CSS_SELECTOR, "tr.part td:nth-child(7)")
        )
        driver.save_screenshot(str(docs / "review-inbox.png"))
        driver.find_element(By.CSS_SELECTOR, "tr.part a").click()
        wait.until(lambda d: d.find_elements(By.ID, "full"))
        driver.save_screenshot(str(docs / "review-part.png"))
        first = driver.current_url
        key("g")  # good: a false reject; the page moves on to the next part
        key("1")  # scratch
        key("2")  # crack
        assert (count("good"), count("scratch"), count("crack")) == (13, 13, 1)
        labels = app.state.bench.store.label_counts()
        assert sum(labels.values()) == 3, labels
        driver.get(base + "/")
        assert driver.find_element(By.ID, "false-rejects").text == "1"
        before = {c: count(c) for c in ("good", "scratch", "crack")}
        driver.get(first)
        key(Keys.ARROW_RIGHT)  # arrows move through the filtered list
        assert driver.current_url != first
        key("z")  # undo my last label
        after = {c: count(c) for c in ("good", "scratch", "crack")}
        assert sum(after.values()) == sum(before.values()) - 1
        # a tiny training run on the dataset, watched to the end
        driver.get(base + "/train")
        epochs = driver.find_element(By.ID, "run-epochs")
        epochs.clear()
        epochs.send_keys("2")
        driver.find_element(By.ID, "start").click()
        # the progress block is swapped in by polling: an element found a moment ago may be gone
        patient = WebDriverWait(driver, 240, ignored_exceptions=(StaleElementReferenceException,))
        patient.until(lambda d: text_of(d, ".run .status") in ("done", "failed"))
        status = patient.until(lambda d: text_of(d, ".run .status"))
        assert status == "done", patient.until(
            lambda d: d.find_element(By.CSS_SELECTOR, ".run pre.log").get_attribute("textContent")
        )
        assert patient.until(lambda d: text_of(d, ".run .epoch")) == "2"
        # "a run is going" gives way to the form again, without a reload
        patient.until(lambda d: d.find_elements(By.ID, "start"))
        assert not driver.find_elements(By.ID, "run-going")
        # compare two reports
        driver.get(base + "/compare")
        Select(driver.find_element(By.ID, "report-a")).select_by_visible_text("reports/a")
        Select(driver.find_element(By.ID, "report-b")).select_by_visible_text("reports/b")
        driver.find_element(By.ID, "compare").click()
        wait.until(lambda d: d.find_elements(By.ID, "changed"))
        driver.save_screenshot(str(docs / "review-compare.png"))
        # hostile paths and forged POSTs, with the browser's own session
        cookie = "; ".join(f"{c['name']}={c['value']}" for c in driver.get_cookies())
        for path in (
            "/media/rec/line1/../../etc/passwd",
            "/media/rec/line1/%2e%2e/%2e%2e/etc/passwd",
        ):
            driver.get(base + path)
            assert "not found" in driver.page_source.lower()
            req = urllib.request.Request(base + path, headers={"Cookie": cookie})
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(req, timeout=10)
            assert e.value.code == 404
        req = urllib.request.Request(
            base + "/undo", data=b"", method="POST", headers={"Cookie": cookie}
        )
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=10)
        assert e.value.code == 403
        # the Content-Security-Policy let every page above run: not one violation reported
        violations = [
            m["message"]
            for m in driver.get_log("browser")
            if "Content Security Policy" in m["message"] or "Refused to" in m["message"]
        ]
        assert not violations, violations
    finally:
        driver.quit()
