"""Labelling in the review workbench: one part or many, by role; what a label writes into
the dataset and its log, undo taking it back, and the dataset page's counts."""

from __future__ import annotations

import json

import pytest

from .review_helpers import client_as, ids, total

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:starlette.*")


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


def test_dataset_page_counts(bench):
    tmp, cfg, app = bench
    c, token = client_as(app, "reviewer")
    page = c.get("/dataset").text
    assert 'data-class="good">12<' in page and 'data-class="scratch">12<' in page
    c.post("/part/2/label", data={"label": "scratch", "csrf": token})
    page = c.get("/dataset").text
    assert 'data-class="scratch">13<' in page and "Labels in force: scratch 1" in page
