"""The workbench's pages as a QA engineer reads them: undo keeps the list being walked and
says what it undid, links where a user clicks, readable model tables, the site's style on
the login, error and promote-refusal pages, the train form's real command."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections import Counter
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from .review_helpers import client_as, follow, ids, workbench

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:starlette.*")
DEMO = Path(__file__).resolve().parents[1] / "inspector" / "models" / "demo"


@pytest.fixture
def bench(tmp_path):
    reg = tmp_path / "registry" / "demo"
    reg.mkdir(parents=True)
    shutil.copyfile(DEMO.with_suffix(".onnx"), reg / "model.onnx")
    shutil.copyfile(DEMO.with_suffix(".json"), reg / "model.json")
    cfg, app = workbench(tmp_path)
    return tmp_path, cfg, app


def links(html: str, id_: str) -> str:
    return re.search(rf'href="([^"]+)"[^>]*id="{id_}"', html).group(1).replace("&amp;", "&")


def test_undo_returns_to_the_part_in_the_same_list_and_says_what_it_undid(bench):
    _tmp, _cfg, app = bench
    c, token = client_as(app, "reviewer")
    query = "reason=defect&sort=score_asc"
    inbox = c.get(f"/?{query}").text
    first = re.search(r'href="(/part/(\d+)\?[^"]+)"', inbox)
    page = c.get(first.group(1).replace("&amp;", "&")).text
    pid, walked_next = first.group(2), links(page, "next")
    # label with the key (the page moves on to the next part in the list), then undo there
    r = c.post(f"/part/{pid}/label", data={"label": "crack", "csrf": token, "next": walked_next})
    assert r.url.path + "?" + r.url.query.decode() == walked_next
    here_query = parse_qs(urlsplit(walked_next).query)
    undo = re.search(r'action="/undo".*?name="query" value="([^"]*)"', r.text, re.S).group(1)
    r = c.post("/undo", data={"csrf": token, "query": undo.replace("&amp;", "&")})
    assert r.status_code == 200 and r.url.path == f"/part/{pid}", "back to the undone part"
    got = parse_qs(r.url.query.decode())
    assert got["reason"] == here_query["reason"] == ["defect"]
    assert got["sort"] == ["score_asc"], "the sort is kept: the arrows keep their direction"
    notice = re.search(r'id="undone"[^>]*>(.*?)</p>', r.text, re.S).group(1)
    assert "crack" in notice and "reviewer" in notice and "none" in notice
    # the arrows on that page walk the same list: its next is the part that came after it
    assert links(r.text, "next").split("?")[0] == walked_next.split("?")[0]
    assert "sort=score_asc" in links(r.text, "next") and "undone" not in links(r.text, "next")


def test_the_part_id_in_the_inbox_opens_the_part(bench):
    _tmp, _cfg, app = bench
    c, _ = client_as(app, "viewer")
    html = c.get("/?reason=defect").text
    cell = re.search(r'<td class="pid"><a href="([^"]+)">([^<]+)</a></td>', html)
    assert cell, "the part-id cell is a link"
    page = c.get(cell.group(1).replace("&amp;", "&"))
    assert page.status_code == 200 and cell.group(2) in page.text


def test_the_models_page_prints_thresholds_validation_and_parity_as_tables(bench):
    _tmp, _cfg, app = bench
    c, _ = client_as(app, "viewer")
    r = c.get("/models")
    assert r.status_code == 200 and len(r.content) < 50_000, "one page, not a template blown up"
    html = r.text
    section = html.split('data-model="registry/demo"', 1)[1].split("</section>", 1)[0]
    assert "{&#39;" not in section and "{&#34;" not in section, "no raw dicts"
    row = re.search(r'<table class="grid thresholds">.*?</table>', section, re.S).group(0)
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", row)
    demo = json.loads(DEMO.with_suffix(".json").read_text())
    t = demo["thresholds"]["defect"]
    assert cells[:3] == ["defect", f"{t['value']:.4f}", "max_escape_rate (0 %)"]
    m = t["metrics"]
    assert cells[3].startswith(f"{m['fn']} of {m['fn'] + m['tp']}")
    assert cells[4].startswith(f"{m['fp']} of {m['fp'] + m['tn']}")
    assert '<th>accuracy</th><td class="num">100 %</td>' in section
    assert '<th>decisions that differ</th><td class="num">0</td>' in section
    assert "within tolerance" in section


def test_a_refused_promotion_is_a_styled_page_that_says_so(bench):
    _tmp, _cfg, app = bench
    c, token = client_as(app, "admin")
    r = c.post("/models/promote", data={"csrf": token, "station": "line9", "model": "x"})
    assert r.status_code == 404
    assert 'class="card problem"' in r.text and "<h1>Not promoted</h1>" in r.text
    assert "no station &#39;line9&#39;" in r.text and 'href="/models"' in r.text
    assert "Sorry" not in r.text and "<pre" not in r.text
    assert '<link rel="stylesheet" href="/static/review.css">' in r.text


def test_the_train_form_shows_the_command_it_runs(bench):
    _tmp, cfg, app = bench
    c, _ = client_as(app, "reviewer")
    html = c.get("/train").text
    command = re.search(r'<code id="command">([^<]+)</code>', html).group(1)
    assert command.startswith(sys.executable + " -m inspector.cli train ")
    assert f"--epochs {cfg.training.epochs}" in command and "--epochs 0" not in command
    name = re.search(r'id="run-name" value="([^"]+)"', html).group(1)
    assert f"--out {cfg.training.runs / name}" in command


def test_a_run_is_going_only_while_one_is(bench):
    _tmp, _cfg, app = bench
    c, _ = client_as(app, "reviewer")
    store = app.state.bench.store
    rid = store.add_run("r1", str(_tmp / "runs" / "r1"), "reviewer", 2)
    store.set_run(rid, status="running", pid=os.getpid())
    html = c.get("/train").text
    going = re.search(r'<p id="run-going"([^>]*)>', html)
    assert going, "the run is shown as going"
    # the notice asks the page again until the run ends, and is replaced by the form then
    assert 'hx-get="/train"' in going.group(1) and 'hx-select="#train-form"' in going.group(1)
    store.set_run(rid, status="done")
    html = c.get("/train").text
    assert 'id="run-going"' not in html and 'id="start"' in html
    assert html.count('id="train-form"') == 1


def test_login_error_pages_and_favicon_use_the_site_style(bench):
    _tmp, _cfg, app = bench
    from starlette.testclient import TestClient

    c = TestClient(app)
    login = c.get("/login").text
    assert 'class="card"' in login and 'rel="icon"' in login and "review.css" in login
    missing = c.get("/no/such/page")
    assert missing.status_code == 404 and "Not found" in missing.text
    assert "review.css" in missing.text and 'class="card problem"' in missing.text
    icon = c.get("/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg")
    assert b"<svg" in icon.content


def test_undo_in_a_real_browser_keeps_the_walk(bench, tmp_path_factory):
    """Keys g, 1, then z in Chromium: the undone part comes back in the filtered, sorted
    list with a line that says what was undone, and the arrow keys keep their direction."""
    from .review_helpers import serve

    chromedriver = "/usr/bin/chromedriver"
    if not (Path(chromedriver).exists() and Path("/usr/bin/chromium").exists()):
        pytest.skip("needs Debian's chromium and chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    from .review_helpers import PASSWORD

    _tmp, _cfg, app = bench
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,900",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):  # fmt: skip
        opts.add_argument(flag)
    with serve(app) as (host, port):
        base = f"http://{host}:{port}"
        driver = webdriver.Chrome(service=Service(chromedriver), options=opts)
        wait = WebDriverWait(driver, 60)

        def key(k: str) -> None:
            before = driver.current_url
            driver.find_element(By.TAG_NAME, "body").send_keys(k)
            wait.until(lambda d: d.current_url != before)

        try:
            driver.get(base + "/login")
            driver.find_element(By.ID, "name").send_keys("reviewer")
            driver.find_element(By.ID, "password").send_keys(PASSWORD)
            driver.find_element(By.ID, "login").click()
            wait.until(lambda d: d.find_elements(By.ID, "filters"))
            driver.get(base + "/?reason=defect&sort=score_asc")
            driver.find_element(By.CSS_SELECTOR, "td.pid a").click()
            wait.until(lambda d: d.find_elements(By.ID, "full"))
            first = driver.current_url
            key("g")
            second = driver.current_url
            key("1")  # scratch on the second part; the page moves on to the third
            third = driver.current_url
            key("z")
            assert driver.current_url.split("?")[0] == second.split("?")[0]
            assert "reason=defect" in driver.current_url and "sort=score_asc" in driver.current_url
            said = driver.find_element(By.ID, "undone").text
            assert "scratch" in said and "reviewer" in said
            key(Keys.ARROW_RIGHT)  # the same direction as before the undo
            assert driver.current_url.split("?")[0] == third.split("?")[0]
            key(Keys.ARROW_LEFT)
            key(Keys.ARROW_LEFT)
            assert driver.current_url.split("?")[0] == first.split("?")[0]
            # compare's slider: a step shows that threshold's counts without a reload
            driver.get(base + "/compare?a=reports/a&b=reports/b")
            url, slider = driver.current_url, driver.find_element(By.ID, "op")
            before = driver.find_element(By.ID, "op-a_fr").text
            slider.send_keys(Keys.HOME)
            wait.until(lambda d: d.find_element(By.ID, "op-t").text != "0.500")
            lowest = json.loads(slider.get_attribute("data-points"))[0]
            assert driver.find_element(By.ID, "op-t").text == lowest["t"]
            assert driver.find_element(By.ID, "op-a_fr").text == lowest["a_fr"] != before
            assert driver.current_url == url
        finally:
            driver.quit()


def test_the_models_page_shows_the_threshold_curve_and_its_bounds(bench):
    tmp, _cfg, app = bench
    manifest = json.loads(DEMO.with_suffix(".json").read_text())
    t = manifest["thresholds"]["defect"]
    t["value"] = 0.5
    t["confidence"] = {
        "level": 0.95,
        "escape_rate": {"k": 1, "n": 10, "rate": 0.1, "upper": 0.394},
        "false_reject_rate": {"k": 1, "n": 20, "rate": 0.05, "upper": 0.216},
    }
    t["curve"] = {"on": "validation", "level": 0.95, "defective": 10, "good": 20, "chosen": 0.5,
                  "points": [{"threshold": 0.3, "escapes": 0, "escape_upper": 0.259,
                              "false_rejects": 4, "false_reject_upper": 0.4},
                             {"threshold": 0.5, "escapes": 1, "escape_upper": 0.394,
                              "false_rejects": 1, "false_reject_upper": 0.216}]}  # fmt: skip
    reg = tmp / "registry" / "curved"
    reg.mkdir()
    shutil.copyfile(DEMO.with_suffix(".onnx"), reg / "model.onnx")
    (reg / "model.json").write_text(json.dumps(manifest))
    c, _ = client_as(app, "viewer")
    html = c.get("/models").text
    section = html.split('data-model="registry/curved"', 1)[1].split("</section>", 1)[0]
    assert (
        "1 of 10 (10 %), at most 39.4 %" in section and "1 of 20 (5 %), at most 21.6 %" in section
    )
    rows = re.findall(r"<tr( class=\"chosen\")?><td class=\"num\">([^<]+)</td><td>([^<]+)</td>"
                      r"<td>([^<]+)</td></tr>", section)  # fmt: skip
    assert rows == [
        ("", "0.3", "0 of 10 (0 %), at most 25.9 %", "4 of 20 (20 %), at most 40 %"),
        (' class="chosen"', "0.5 (in use)", "1 of 10 (10 %), at most 39.4 %",
         "1 of 20 (5 %), at most 21.6 %"),
    ]  # fmt: skip


def test_the_new_pages_refuse_odd_parameters_without_a_server_error(bench):
    _tmp, _cfg, app = bench
    c, _ = client_as(app, "viewer")
    odd = ["nan", "-1", "1e309", "%00", "9" * 5000, "abc", "2.5", "-5", "1e99"]
    for value in odd:
        for path in (f"/dashboard?hours={value}",
                     f"/compare?a=reports/a&b=reports/b&i={value}",
                     f"/part/1?undone={value}"):  # fmt: skip
            r = c.get(path)
            assert r.status_code in (200, 400), (path[:80], r.status_code)
            assert "review.css" in r.text, "the site's page, with its style"


def test_without_tensorflow_the_train_page_names_the_command_that_installs_it(bench, monkeypatch):
    import importlib.util

    from inspector.review.views import train

    _tmp, _cfg, app = bench
    real = importlib.util.find_spec
    monkeypatch.setattr(
        train.importlib.util, "find_spec", lambda name: None if name == "tensorflow" else real(name)
    )
    c, _ = client_as(app, "reviewer")
    html = c.get("/train").text
    hint = re.search(r'id="no-tensorflow">.*?<code>([^<]+)</code>', html, re.S).group(1)
    hint = hint.replace("&amp;", "&")
    checkout = Path(__file__).resolve().parents[1]
    if Path(sys.prefix).parent == checkout:  # this checkout's .venv: its Makefile's step
        assert hint == f"cd {checkout} && make {Path(sys.prefix).name}/.installed-train"
        make = (checkout / "Makefile").read_text()
        assert "TRAIN_STAMP := $(VENV)/.installed-train" in make and "\n$(TRAIN_STAMP):" in make
    else:
        assert hint.startswith(sys.executable) and "defect-inspector[train]" in hint


def test_evaluate_a_model_from_its_page_and_compare_the_report(bench):
    tmp, _cfg, app = bench
    c, token = client_as(app, "reviewer")
    assert "Evaluate on the reviewed dataset" in c.get("/models").text

    def evaluate() -> str:
        r = c.post("/models/evaluate", data={"csrf": token, "model": "registry/demo"})
        assert r.status_code == 200 and r.url.path.startswith("/models/evaluation/")
        return follow(c, r, timeout=120, every=0.3).text

    # the seeded dataset names its defects 'scratch'; the demo model says 'defect'
    block = evaluate()
    assert 'data-status="failed"' in block and "scratch" in block, block[-2000:]
    (tmp / "data" / "scratch").rename(tmp / "data" / "defect")
    # parts labelled here carry the review (station, what the line said) into the dataset
    line1, line2 = ids(app, "line1").values(), ids(app, "line2").values()
    chosen = [
        next(p for p in line1 if p["result"] == "fail"),
        next(p for p in line1 if p["result"] == "pass"),
        next(iter(line2)),
    ]
    for p in chosen:
        c.post(f"/part/{p['id']}/label", data={"label": "good", "csrf": token})
    block = evaluate()
    assert 'data-status="done"' in block, block[-2000:]
    report = re.search(r"Report <code>([^<]+)</code> written", block).group(1)
    assert report.startswith("reports/registry-demo-")
    page = c.get(f"/compare?a=reports/a&b={report}")
    assert page.status_code == 200 and 'id="metrics"' in page.text
    by_line = re.search(r'id="by-line_result".*?</table>', page.text, re.S).group(0)
    assert "the defects in the pass row are the line&#39;s escapes" in by_line
    values = re.findall(r"<tr><td>([^<]+)</td><td>([^<]+)</td>", by_line)
    seeded = len(list((tmp / "data").rglob("seed_*.png")))
    said = Counter(p["result"] for p in chosen)
    assert dict(values) == {
        **{r: f"0 defective, {n} good" for r, n in said.items()},
        "not reviewed": f"{seeded // 2} defective, {seeded // 2} good",
    }
    rec = {"line1": tmp / "rec1", "line2": tmp / "rec2"}
    live = {json.loads((rec[p["station"]] / p["sidecar"]).read_text())["model_id"] for p in chosen}
    by_model = re.search(r'id="by-line_model".*?</table>', page.text, re.S).group(0)
    rows = re.findall(r"<tr><td>([^<]+)</td><td>([^<]+)</td>", by_model)
    assert {v for v, _ in rows} == live | {"not reviewed"}
    stations = re.search(r'id="by-station".*?</table>', page.text, re.S).group(0)
    assert [v for v, _ in re.findall(r"<tr><td>([^<]+)</td><td>([^<]+)</td>", stations)] == [
        "line1",
        "line2",
        "not reviewed",
    ]
    assert c.post("/models/evaluate", data={"csrf": token, "model": "nope"}).status_code == 404
    viewer, vtoken = client_as(app, "viewer")
    assert (
        viewer.post("/models/evaluate", data={"csrf": vtoken, "model": "registry/demo"}).status_code
        == 403
    )


def test_undo_from_the_dataset_page_says_what_it_undid(bench):
    _tmp, _cfg, app = bench
    c, token = client_as(app, "reviewer")
    inbox = c.get("/?reason=defect").text
    pid = re.search(r'<td class="pid"><a href="/part/(\d+)\?', inbox).group(1)
    c.post(f"/part/{pid}/label", data={"label": "crack", "csrf": token})
    page = c.get("/dataset").text
    form = re.search(r'<form method="post" action="/undo".*?</form>', page, re.S).group(0)
    fields = dict(re.findall(r'name="(\w+)" value="([^"]*)"', form))
    r = c.post("/undo", data=fields)
    assert r.status_code == 200 and r.url.path == "/dataset"
    notice = re.search(r'id="undone"[^>]*>(.*?)</p>', r.text, re.S).group(1)
    assert "crack" in notice and f'href="/part/{pid}"' in notice and "<b>none</b>" in notice
    assert app.state.bench.store.part(int(pid))["label"] is None
