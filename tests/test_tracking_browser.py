"""Looked at as a person would: a `resplat report` page and the MLflow UI (`resplat ui`) in a real
headless Chromium (Debian's, driven by selenium; nothing downloaded): the page loads, shows the
runs or the sweep's curves, and logs no console errors. Screenshots stay in the test's tmp dir."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from test_report import SWEEP, TRIALS, store  # noqa: F401  (the report tests' MLflow store fixture)

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("Debian's chromium and chromium-driver are missing (make test-deps)")
    os.environ["SE_OFFLINE"] = "true"  # selenium must not look for or fetch a driver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1000", f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
                     "--no-first-run", "--disable-background-networking", "--disable-component-update"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(120)
    try:
        yield driver
    finally:
        driver.quit()


# MLflow's UI asks for the signed-in user, which a server without its auth app answers with 404.
KNOWN_MLFLOW_UI_PROBES = ("/ajax-api/2.0/mlflow/users/current",)


def console_errors(driver) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"
            and not any(probe in entry["message"] for probe in KNOWN_MLFLOW_UI_PROBES)]


def wait_until(condition, limit_s: float = 120, step_s: float = 0.5):
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step_s)
    return condition()


def test_the_report_page_shows_the_curves_and_tables(browser, store, tmp_path):  # noqa: F811
    from resplat.tracking.report import build_report

    index = build_report(store.uri, SWEEP, tmp_path / "report")
    browser.get(index.as_uri())
    assert SWEEP in browser.title
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight]);")
    assert len(images) == 2 and all(done and width > 300 and height > 200 for done, width, height in images)
    ranked_rows = browser.execute_script("return document.querySelectorAll('table.ranked tr').length;")
    assert ranked_rows == len(TRIALS) + 1
    assert console_errors(browser) == []
    shot = tmp_path / "report.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_mlflow_ui_lists_the_sweep_runs(browser, store, tmp_path):  # noqa: F811
    from mlflow.tracking import MlflowClient

    experiment = MlflowClient(store.uri).get_experiment_by_name("sweeps")
    port = free_port()
    ui = subprocess.Popen([sys.executable, "-m", "resplat", "ui", "--port", str(port), "--tracking-uri", store.uri,
                           "--workers", "1"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env={**os.environ, "RESPLAT_HOME": str(tmp_path / "home")})
    url = f"http://127.0.0.1:{port}"
    try:
        def answers() -> bool:
            assert ui.poll() is None, ui.communicate()[1][-3000:]
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    return True
            except OSError:
                return False

        assert wait_until(answers, 300), "the MLflow UI did not answer"
        # The runs tab: MLflow 3's UI opens an experiment on its GenAI traces overview otherwise.
        browser.get(f"{url}/#/experiments/{experiment.experiment_id}/runs")
        shown = wait_until(lambda: SWEEP in browser.find_element("tag name", "body").text, 300)
        shot = tmp_path / "mlflow-ui.png"
        browser.save_screenshot(str(shot))
        assert shown, f"the runs table never showed the sweep's runs; screenshot {shot}"
        assert console_errors(browser) == []
    finally:
        browser.get("about:blank")
        ui.terminate()
        try:
            ui.wait(timeout=180)
        except subprocess.TimeoutExpired:  # never leave a server behind, even if its stop hangs
            ui.kill()
            ui.wait()
            raise
