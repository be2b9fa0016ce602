"""The newcomer's path: ``inspector demo`` as ``make demo`` runs it, then the closing
lines' commands as printed, and the example configs (review, SPC) on the demo's folder."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from starlette.testclient import TestClient

from inspector.lab.demo import BASE_RATE, DRIFT_AT, DRIFT_RATE, defect_schedule
from inspector.review.app import create_app
from inspector.review.config import load_review_config

from .review_helpers import csrf_of

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:starlette.*")

ROOT = Path(__file__).resolve().parents[1]
INSPECTOR = ROOT / ".venv" / "bin" / "inspector"
EXAMPLES = ROOT / "deploy" / "examples"
PW = "demo password 1"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """``inspector demo`` from the checkout, as the Makefile runs it: (home, output)."""
    home = tmp_path_factory.mktemp("demo") / "home"
    r = subprocess.run(
        [str(INSPECTOR), "demo", "--parts", "240", "--rate", "40", "--keep", str(home)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return home, r.stdout


def closing_commands(out: str) -> list[str]:
    lines = out.split("review what the line kept in the QA workbench:\n", 1)[1].splitlines()
    return [ln.strip().split("   #")[0] for ln in lines if ln.startswith("  ")]


def test_the_demo_keeps_its_folder_and_its_closing_commands_work_as_printed(demo):
    home, out = demo
    commands = closing_commands(out)
    assert commands[0] == f"export INSPECTOR_HOME={home}"
    assert all(c.startswith(".venv/bin/inspector review --config ") for c in commands[1:])
    assert list((home / "recordings").rglob("*.json")), "the recordings are kept"
    # the user line, as printed, from the checkout (the password on standard input)
    r = subprocess.run(
        ["bash", "-c", f"{commands[0]} && {commands[1]}"],
        cwd=ROOT,
        input=PW + "\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0 and "user qa (admin) saved" in r.stdout, r.stdout + r.stderr
    # the workbench line, as printed: it serves the login page
    server = subprocess.Popen(
        ["bash", "-c", f"{commands[0]} && exec {commands[2]}"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline, page = time.time() + 30, None
        while page is None and time.time() < deadline and server.poll() is None:
            try:
                page = urllib.request.urlopen("http://127.0.0.1:8470/login", timeout=2).read()
            except OSError:
                time.sleep(0.3)
        assert page is not None and b'name="password"' in page, server.poll()
    finally:
        server.terminate()
        server.wait(10)


def test_the_example_review_config_fits_the_demo(demo, monkeypatch):
    home, _ = demo
    monkeypatch.setenv("INSPECTOR_HOME", str(home))
    cfg = load_review_config(EXAMPLES / "review.yaml")
    manifest = json.loads((home / "models" / "current" / "model.json").read_text())
    # the classes a relabelled part gets are the demo model's, so evaluation takes them
    assert {cfg.dataset.good, *cfg.dataset.defects} == set(manifest["classes"])
    [station] = cfg.models.stations
    assert [r.station for r in cfg.recordings] == [station.name] == ["demo"]
    # promote's check when the station is down: `inspector verify` with the config's files
    r = subprocess.run(
        [sys.executable, "-m", "inspector.cli", "verify", str(station.config),
         str(station.golden), "--model", str(home / "models" / "demo" / "model.onnx"),
         "--no-publish"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    # the inbox shows the demo's kept parts, each part id a page of its own
    app = create_app(cfg)
    from inspector.review import auth

    auth.add_user(app.state.bench.store, "ann", PW, "admin")
    with TestClient(app) as c:
        token = csrf_of(c.get("/login").text)
        r = c.post("/login", data={"name": "ann", "password": PW, "csrf": token, "next": "/"})
        assert r.status_code == 200
        kept = len(list((home / "recordings").rglob("*.json")))
        assert kept > 0
        assert len(set(re.findall(r"demo-\d{8}T\d{6}-\d+", r.text))) == min(kept, cfg.page_size)


def test_the_demo_runs_spc_which_alarms_after_the_drift_only(demo):
    home, out = demo
    line = re.search(r"SPC alarms +first after (\d+) parts \(the defect rate drifted at part (\d+)\)"
                     r".*; none before the drift", out)  # fmt: skip
    assert line, out[-3000:]
    assert int(line.group(1)) > int(line.group(2)) == 144
    # the report command as printed, from the checkout
    printed = out.split("as a report (open its index.html):\n", 1)[1].splitlines()[0].strip()
    assert printed.startswith(".venv/bin/inspector spc report --config ")
    r = subprocess.run(
        ["bash", "-c", printed], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert (home / "spc-report" / "index.html").is_file()


def test_the_example_spc_config_reads_the_demo_recordings(demo, monkeypatch):
    home, _ = demo
    monkeypatch.setenv("INSPECTOR_HOME", str(home))
    from inspector.spc.config import load_spc_config

    cfg = load_spc_config(EXAMPLES / "spc.yaml")
    assert [b.station for b in cfg.backfill] == ["demo"]
    assert all(Path(b.path).is_dir() for b in cfg.backfill), "the backfill path exists"
    assert Path(cfg.store.url).resolve().is_relative_to(home), "its database is not in the checkout"


def test_the_replay_mixes_good_and_bad_parts_and_drifts_once():
    """Random order (not all defects first), and a p-chart over subgroups of 20 with limits
    from the parts before the drift stays in control until the drift, then signals."""
    from inspector.spc.charts import p_limits

    n, size = 600, 20
    defects = np.array(defect_schedule(n), dtype=float)
    first = defects[: int(n * DRIFT_AT)]
    switches = int(np.sum(first[1:] != first[:-1]))
    assert switches > 10, "good and defective parts alternate as on a line"
    assert abs(first.mean() - BASE_RATE) < 0.05
    assert abs(defects[int(n * DRIFT_AT) :].mean() - DRIFT_RATE) < 0.08
    p = defects.reshape(-1, size).mean(axis=1)
    before = int(n * DRIFT_AT) // size
    _centre, _lcl, ucl = p_limits(float(p[:before].mean()), np.full(len(p), size))
    beyond = p > ucl
    assert not beyond[:before].any(), "no alarm before the drift"
    assert beyond[before:].any(), "the drift raises an alarm"
    assert defect_schedule(n) == defect_schedule(n), "seeded"


def test_browser_journey_from_the_demo(demo, monkeypatch, tmp_path_factory):
    """After the demo, in Chromium on the example config: the dashboard, the inbox, a part,
    relabel and undo (the list kept), an evaluation of the demo's model on what was reviewed
    and its report on compare (ROC, slider), the models page and a promotion of the demo's model
    (the station is down: verified on its golden set, then ``current`` moves).
    INSPECTOR_SCREENSHOTS=docs remakes the README's journey screenshots."""
    if not (Path("/usr/bin/chromedriver").exists() and Path("/usr/bin/chromium").exists()):
        pytest.skip("needs Debian's chromium and chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from inspector.review import auth

    from .review_helpers import serve

    home, _ = demo
    monkeypatch.setenv("INSPECTOR_HOME", str(home))
    shots = Path(os.environ.get("INSPECTOR_SCREENSHOTS") or tmp_path_factory.mktemp("shots"))
    shots.mkdir(parents=True, exist_ok=True)
    app = create_app(load_review_config(EXAMPLES / "review.yaml"))
    auth.add_user(app.state.bench.store, "qa", PW, "admin")
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,900",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):  # fmt: skip
        opts.add_argument(flag)
    with serve(app) as (host, port):
        base = f"http://{host}:{port}"
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
        wait = WebDriverWait(driver, 60)

        def key(k: str) -> None:
            before = driver.current_url
            driver.find_element(By.TAG_NAME, "body").send_keys(k)
            wait.until(lambda d: d.current_url != before)

        try:
            driver.get(base + "/dashboard")
            driver.find_element(By.ID, "name").send_keys("qa")
            driver.find_element(By.ID, "password").send_keys(PW)
            driver.find_element(By.ID, "login").click()
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, 'section[data-station="demo"]'))
            station = driver.find_element(By.CSS_SELECTOR, 'section[data-station="demo"]')
            kept = len(list((home / "recordings").rglob("*.json")))
            inspected = int(station.find_element(By.CSS_SELECTOR, ".inspected").text)
            assert (
                kept <= inspected <= 240
                and "%" in station.find_element(By.CSS_SELECTOR, ".yield").text
            )
            assert len(station.find_elements(By.CSS_SELECTOR, ".strip a")) == min(24, kept)
            driver.save_screenshot(str(shots / "journey-dashboard.png"))
            # the inbox, the rejects by score, a part by its id
            driver.get(base + "/")
            Select(driver.find_element(By.ID, "f-reason")).select_by_visible_text("defect")
            driver.find_element(By.ID, "apply").click()
            wait.until(lambda d: "reason=defect" in d.current_url)
            driver.find_element(By.CSS_SELECTOR, "td.pid a").click()
            wait.until(lambda d: d.find_elements(By.ID, "full"))
            driver.save_screenshot(str(shots / "journey-part.png"))
            key("g")  # a false reject, says the reviewer; on to the next part
            second = driver.current_url
            key("1")  # defect
            key("z")  # undo: back on the second part, in the same list, told what was undone
            assert driver.current_url.split("?")[0] == second.split("?")[0]
            assert "reason=defect" in driver.current_url
            assert "defect" in driver.find_element(By.ID, "undone").text
            key("1")  # this part is a defect, and the next one too: a dataset to evaluate on
            key("1")
            # evaluate the demo's model on what was just reviewed, then compare its report
            driver.get(base + "/models")
            driver.find_element(
                By.CSS_SELECTOR, 'section[data-model="runs/demo"] form.evaluate button'
            ).click()
            WebDriverWait(driver, 120).until(
                lambda d: (
                    d.find_elements(By.CSS_SELECTOR, '.evaluation[data-status="done"]')
                    or d.find_elements(By.CSS_SELECTOR, '.evaluation[data-status="failed"]')
                )
            )
            block = driver.find_element(By.CSS_SELECTOR, ".evaluation")
            assert block.get_attribute("data-status") == "done", block.text
            driver.find_element(By.ID, "to-compare").click()
            wait.until(lambda d: d.find_elements(By.ID, "op"))
            assert driver.find_elements(By.CSS_SELECTOR, 'svg[aria-label="ROC"] polyline')
            driver.get(driver.current_url.split("#")[0] + "#curves")
            driver.save_screenshot(str(shots / "journey-compare.png"))
            # the models page: the demo's model with readable tables; promote it
            driver.get(base + "/models")
            assert driver.find_elements(
                By.CSS_SELECTOR, 'section[data-model="runs/demo"] table.thresholds'
            )
            row = driver.find_element(By.CSS_SELECTOR, 'tr[data-station="demo"]')
            row.find_element(By.CSS_SELECTOR, "button").click()  # verify and promote
            patient = WebDriverWait(driver, 180)
            patient.until(
                lambda d: (
                    d.find_element(By.CSS_SELECTOR, ".promotion .status").text
                    not in ("running", "")
                )
            )
            assert driver.find_element(By.CSS_SELECTOR, ".promotion .status").text == "linked"
            driver.get(base + "/models")
            assert driver.find_element(
                By.CSS_SELECTOR, 'tr[data-station="demo"] .current'
            ).text.startswith("runs-demo")
            driver.save_screenshot(str(shots / "journey-models.png"))
        finally:
            driver.quit()
            app.state.bench.stop()
