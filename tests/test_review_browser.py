"""The review workbench's key journey in a real headless Chromium: the inbox, the part page,
labelling with the keys, the dataset, a training run and compare. It also remakes the
README's screenshots (make screenshots)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .review_helpers import PASSWORD, serve, workbench

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:starlette.*")


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
