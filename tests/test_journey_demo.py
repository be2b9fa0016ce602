"""The newcomer's path: ``inspector demo`` as ``make demo`` runs it, then the closing
lines' commands as printed, and the example configs (review, SPC) on the demo's folder."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
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


@pytest.fixture(scope="module")
def live_demo(tmp_path_factory):
    """``inspector demo --serve`` as a newcomer runs it: (home, workbench URL, its output
    lines); the line (broker, station, SPC) and the workbench stay up until the test ends."""
    from inspector.lab.broker import free_port

    home = tmp_path_factory.mktemp("live") / "home"
    port = free_port()
    proc = subprocess.Popen(
        [str(INSPECTOR), "demo", "--parts", "240", "--rate", "40", "--keep", str(home),
         "--serve", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "INSPECTOR_REVIEW_PASSWORD": PW},
    )  # fmt: skip
    lines: list[str] = []
    up = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            if "the QA workbench, live" in line:
                up.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert up.wait(180), "".join(lines[-40:])
        yield home, f"http://127.0.0.1:{port}", lines, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(60)


def defect_under_map_maximum(image: np.ndarray, amap: np.ndarray) -> bool:
    """Whether the cell of the heat map's maximum holds pixels of the drawn defect (the demo's
    defects are dark marks on a smooth surface: well below the surface's local median)."""
    import cv2

    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    surface = cv2.medianBlur(grey, 21).astype(np.int16)
    defect = (surface - grey) > 30
    assert defect.any(), "the part shows no drawn defect"
    rows, cols = amap.shape
    r, c = np.unravel_index(int(np.argmax(amap)), amap.shape)
    h, w = grey.shape
    cell = defect[r * h // rows : (r + 1) * h // rows, c * w // cols : (c + 1) * w // cols]
    return bool(cell.any())


def test_the_demo_model_heat_maps_put_their_maximum_on_the_defect(demo):
    """Every rejected part the demo kept has a heat map; in nearly all its hottest cell holds
    the drawn defect (the demo model's class map is 4x4 over a 96 px part)."""
    import cv2

    home, _ = demo
    sidecars = [
        json.loads(p.read_text()) | {"_at": p} for p in (home / "recordings").rglob("*.json")
    ]
    fails = [s for s in sidecars if s.get("result") == "fail"]
    assert fails and all("heatmap" in s for s in fails), "each reject keeps its heat map"
    hits = 0
    for s in fails:
        image = cv2.imread(str(s["_at"].with_name(s["image"])), cv2.IMREAD_UNCHANGED)
        amap = np.load(s["_at"].with_name(s["heatmap"]["npy"]))
        hits += defect_under_map_maximum(image, amap)
    assert hits >= 0.9 * len(fails), f"{hits} of {len(fails)}"


def test_the_live_demo_ends_cleanly_on_sigterm(live_demo):
    """Checked last in the module's order by its fixture's teardown: here, that it is up."""
    home, base, lines, proc = live_demo
    assert proc.poll() is None
    assert (home / "review.yaml").is_file()
    with urllib.request.urlopen(base + "/login", timeout=10) as r:
        assert r.status == 200


def test_browser_journey_from_the_demo(live_demo, tmp_path_factory):
    """After ``inspector demo --serve``, in Chromium: the dashboard (the station live, an SPC
    alarm), the inbox, a part with its heat map on the defect, relabel and undo (the list
    kept), labels enough to train, a training run (its curves) exported as a model, an
    evaluation of the demo's model and its report on compare (ROC, slider), then the new
    model promoted to the running station, whose status shows it.
    INSPECTOR_SCREENSHOTS=docs remakes the README's journey screenshots."""
    if not (Path("/usr/bin/chromedriver").exists() and Path("/usr/bin/chromium").exists()):
        pytest.skip("needs Debian's chromium and chromium-driver")
    import cv2
    from selenium import webdriver
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    home, base, _lines, _proc = live_demo
    shots = Path(os.environ.get("INSPECTOR_SCREENSHOTS") or tmp_path_factory.mktemp("shots"))
    shots.mkdir(parents=True, exist_ok=True)
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,900",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):  # fmt: skip
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    wait = WebDriverWait(driver, 60)
    patient = WebDriverWait(driver, 300, ignored_exceptions=(StaleElementReferenceException,))

    def key(k: str) -> None:
        before = driver.current_url
        driver.find_element(By.TAG_NAME, "body").send_keys(k)
        wait.until(lambda d: d.current_url != before)

    def label_to_the_end(k: str) -> None:
        """Press ``k`` on each part of the list in turn (the last part stays put)."""
        while True:
            before = driver.current_url
            driver.find_element(By.TAG_NAME, "body").send_keys(k)
            try:
                WebDriverWait(driver, 10).until(lambda d, b=before: d.current_url != b)
            except TimeoutException:
                return

    def text_of(d, selector: str) -> str:
        return d.find_element(By.CSS_SELECTOR, selector).text

    def station_model(d) -> str:
        d.get(base + "/dashboard")
        return text_of(d, 'section[data-station="demo"] .model-id')

    try:
        driver.get(base + "/dashboard")
        driver.find_element(By.ID, "name").send_keys("qa")
        driver.find_element(By.ID, "password").send_keys(PW)
        driver.find_element(By.ID, "login").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, 'section[data-station="demo"]'))
        # the dashboard: the station live with the demo's model, the drift's SPC alarm
        wait.until(
            lambda d: d.find_elements(By.CSS_SELECTOR, 'section[data-station="demo"] .alarms')
        )
        station = driver.find_element(By.CSS_SELECTOR, 'section[data-station="demo"]')
        assert "chart" in station.find_element(By.CSS_SELECTOR, ".alarms").text
        # and the SPC service's reject chart: the rate per subgroup against its limit
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".spc-chart svg polyline.rate"))
        assert driver.find_elements(By.CSS_SELECTOR, ".spc-chart svg polyline.limit")
        first_model = station_model(driver)
        assert first_model.startswith("demo-cnn"), first_model
        station = driver.find_element(By.CSS_SELECTOR, 'section[data-station="demo"]')
        kept = len(list((home / "recordings").rglob("*.json")))
        inspected = int(station.find_element(By.CSS_SELECTOR, ".inspected").text)
        assert (
            kept <= inspected <= 240 and "%" in station.find_element(By.CSS_SELECTOR, ".yield").text
        )
        assert len(station.find_elements(By.CSS_SELECTOR, ".strip a")) == min(24, kept)
        driver.save_screenshot(str(shots / "journey-dashboard.png"))
        # the inbox, the rejects by score, a part by its id, its heat map on the defect
        driver.get(base + "/")
        Select(driver.find_element(By.ID, "f-reason")).select_by_visible_text("defect")
        driver.find_element(By.ID, "apply").click()
        wait.until(lambda d: "reason=defect" in d.current_url)
        driver.find_element(By.CSS_SELECTOR, "td.pid a").click()
        wait.until(lambda d: d.find_elements(By.ID, "full"))
        heat = driver.find_element(By.ID, "heat")
        wait.until(lambda d: d.execute_script("return arguments[0].naturalWidth", heat) > 0)
        shown = (
            driver.find_element(By.ID, "full").get_attribute("src").split("/media/rec/demo/", 1)[1]
        )
        image_path = home / "recordings" / urllib.request.url2pathname(shown)
        sidecar = json.loads(image_path.with_suffix(".json").read_text())
        amap = np.load(image_path.with_name(sidecar["heatmap"]["npy"]))
        image = cv2.imread(str(image_path), cv2.IMREAD_UNCHANGED)
        assert defect_under_map_maximum(image, amap), (shown, amap.round(2))
        driver.save_screenshot(str(shots / "journey-part.png"))
        key("g")  # a false reject, says the reviewer; on to the next part
        second = driver.current_url
        key("1")  # defect
        key("z")  # undo: back on the second part, in the same list, told what was undone
        assert driver.current_url.split("?")[0] == second.split("?")[0]
        assert "reason=defect" in driver.current_url
        assert "defect" in driver.find_element(By.ID, "undone").text
        # label the rest of the rejects, then the passes the recorder sampled: a dataset
        label_to_the_end("1")
        driver.get(base + "/?reason=ok&reviewed=no")
        driver.find_element(By.CSS_SELECTOR, "td.pid a").click()
        wait.until(lambda d: d.find_elements(By.ID, "full"))
        label_to_the_end("g")
        labelled = {
            c: len(list((home / "datasets" / "reviewed" / c).glob("*"))) for c in ("good", "defect")
        }
        assert labelled["good"] >= 5 and labelled["defect"] >= 20, labelled
        # train on it from the page: curves while it runs, a model when it ends
        driver.get(base + "/train")
        name = driver.find_element(By.ID, "run-name")
        name.clear()
        name.send_keys("reviewed-1")
        epochs = driver.find_element(By.ID, "run-epochs")
        epochs.clear()
        epochs.send_keys("12")
        driver.find_element(By.ID, "start").click()
        patient.until(lambda d: text_of(d, ".run .status") in ("done", "failed"))
        assert text_of(driver, ".run .status") == "done", patient.until(
            lambda d: d.find_element(By.CSS_SELECTOR, ".run pre.log").get_attribute("textContent")
        )
        assert driver.find_elements(By.CSS_SELECTOR, ".run svg polyline"), "the loss curves"
        assert (home / "runs" / "reviewed-1" / "model.onnx").is_file()
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
        # verify the new model against the station (nothing changes), then promote it: the
        # running station loads, checks and swaps to it
        for button, outcome in (("button.verify", "verified"), ("button.promote", "swapped")):
            driver.get(base + "/models")
            row = driver.find_element(By.CSS_SELECTOR, 'tr[data-station="demo"]')
            Select(row.find_element(By.CSS_SELECTOR, "select")).select_by_visible_text(
                "runs/reviewed-1"
            )
            row.find_element(By.CSS_SELECTOR, button).click()
            patient.until(lambda d: text_of(d, ".promotion .status") not in ("running", ""))
            status = text_of(driver, ".promotion .status")
            assert status == outcome, driver.find_element(By.CSS_SELECTOR, ".promotion").text
            if outcome == "verified":
                assert station_model(driver) == first_model, "verifying changes nothing"
        wait.until(lambda d: station_model(d).startswith("reviewed-1"))
        driver.get(base + "/models")
        driver.save_screenshot(str(shots / "journey-models.png"))
    finally:
        driver.quit()
