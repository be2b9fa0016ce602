"""Regions: boxes drawn on a part where the defect is, kept in the store, written with the
image into the dataset (its sidecar's review.regions) and into labels.jsonl."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from .review_helpers import client_as, ids, workbench

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:starlette.*")


@pytest.fixture
def bench(tmp_path):
    cfg, app = workbench(tmp_path)
    return tmp_path, cfg, app


def test_a_region_is_kept_shown_written_into_the_dataset_and_removed(bench):
    tmp, _cfg, app = bench
    c, token = client_as(app, "reviewer")
    pid = ids(app)["P-0-0002"]["id"]
    box = {"x": "8", "y": "10", "w": "48", "h": "20", "label": "scratch"}
    r = c.post(f"/part/{pid}/regions", data={"csrf": token, "query": "reason=defect", **box})
    assert r.status_code == 200 and r.url.path == f"/part/{pid}" and b"reason=defect" in r.url.query
    assert '<rect x="8.0" y="10.0" width="48.0" height="20.0" class="region"/>' in r.text
    rows = re.findall(r'<tr class="region-row"><td>(\d+)</td>(.*?)</tr>', r.text, re.S)
    assert len(rows) == 1 and "<td>scratch</td><td>reviewer</td>" in rows[0][1]
    # labelled: the image goes into the dataset with its region beside it
    c.post(f"/part/{pid}/label", data={"label": "scratch", "csrf": token})
    (meta,) = (tmp / "data" / "scratch").glob("line1_*.json")
    regions = json.loads(meta.read_text())["review"]["regions"]
    assert regions == [{"x": 8.0, "y": 10.0, "w": 48.0, "h": 20.0, "label": "scratch"}]
    # removed: gone from the page and from the dataset's sidecar
    rid = rows[0][0]
    r = c.post(f"/part/{pid}/regions/{rid}/remove", data={"csrf": token})
    assert r.status_code == 200 and 'class="region-row"' not in r.text
    assert json.loads(meta.read_text())["review"]["regions"] == []
    log = (tmp / "data" / "labels.jsonl").read_text().splitlines()
    kinds = [json.loads(x)["kind"] for x in log]
    assert kinds == ["region", "label", "region_removed"]
    assert c.post(f"/part/{pid}/regions/{rid}/remove", data={"csrf": token}).status_code == 409


def test_odd_regions_are_refused_with_a_sentence(bench):
    _tmp, _cfg, app = bench
    c, token = client_as(app, "reviewer")
    pid = ids(app)["P-0-0002"]["id"]
    for bad in ({"x": "-1", "y": "0", "w": "5", "h": "5"}, {"x": "0", "y": "0", "w": "0", "h": "5"},
                {"x": "nan", "y": "0", "w": "5", "h": "5"}, {"x": "0", "y": "0", "w": "5"},
                {"x": "0", "y": "0", "w": "5", "h": "5", "label": "good"},
                {"x": "1e9", "y": "0", "w": "5", "h": "5"}):  # fmt: skip
        r = c.post(f"/part/{pid}/regions", data={"csrf": token, **bad})
        assert r.status_code == 400 and 'class="card problem"' in r.text, bad
    assert app.state.bench.store.regions(pid) == []
    viewer, vtoken = client_as(app, "viewer")
    box = {"x": "1", "y": "1", "w": "5", "h": "5"}
    assert viewer.post(f"/part/{pid}/regions", data={"csrf": vtoken, **box}).status_code == 403
    assert c.post(f"/part/{pid}/regions", data=box).status_code == 403  # no CSRF token


def test_a_box_drawn_with_the_mouse_in_chromium(bench, tmp_path_factory):
    if not (Path("/usr/bin/chromedriver").exists() and Path("/usr/bin/chromium").exists()):
        pytest.skip("needs Debian's chromium and chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from .review_helpers import PASSWORD, serve

    _tmp, _cfg, app = bench
    pid = ids(app)["P-0-0002"]["id"]
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,1600",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):  # fmt: skip
        opts.add_argument(flag)
    with serve(app) as (host, port):
        base = f"http://{host}:{port}"
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
        wait = WebDriverWait(driver, 60)
        try:
            driver.get(f"{base}/login")
            driver.find_element(By.ID, "name").send_keys("reviewer")
            driver.find_element(By.ID, "password").send_keys(PASSWORD)
            driver.find_element(By.ID, "login").click()
            wait.until(lambda d: d.find_elements(By.ID, "filters"))
            driver.get(f"{base}/part/{pid}")
            img = wait.until(lambda d: d.find_element(By.ID, "full"))
            wait.until(lambda d: d.execute_script("return arguments[0].naturalWidth", img) > 0)
            size = img.size  # shown size (all in view); the image is 64 x 64 pixels
            driver.find_element(By.TAG_NAME, "body").send_keys("b")  # arm drawing
            # from a quarter in to three quarters in, both ways
            (ActionChains(driver)
             .move_to_element_with_offset(img, -size["width"] // 4, -size["height"] // 4)
             .click_and_hold().move_by_offset(size["width"] // 4, size["height"] // 4)
             .move_by_offset(size["width"] // 4, size["height"] // 4).release().perform())  # fmt: skip
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "tr.region-row"))
            [r] = app.state.bench.store.regions(pid)
            assert abs(r["x"] - 16) <= 2 and abs(r["y"] - 16) <= 2
            assert abs(r["w"] - 32) <= 2 and abs(r["h"] - 32) <= 2
            assert r["label"] == "scratch"
        finally:
            driver.quit()
