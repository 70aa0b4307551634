"""The page in a real headless Chromium (Debian's ``chromium``, driven by playwright): pick a model,
click Generate, see scored samples; curves and the sweep plot drawn; usable at phone width.

Skips, saying why, only where playwright or a Chromium binary is missing (install: ``apt-get install
chromium``). ``LLMGAN_SCREENSHOT=path.png`` also saves the screenshot there (docs/img/serve-page.png
is made that way).
"""

from __future__ import annotations

import csv
import os
import shutil

import pytest

from llmgan.serve.app import Settings
from llmgan.serve.service import Limits, Registry
from serve_runs import running_server, serve_runs  # noqa: F401 - serve_runs: the session fixture

CHROMIUM = next((p for p in (os.environ.get("LLMGAN_CHROMIUM"), shutil.which("chromium"),
                             shutil.which("chromium-browser"), shutil.which("google-chrome")) if p), None)


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    if CHROMIUM is None:
        pytest.skip("no Chromium binary found (apt-get install chromium, or set LLMGAN_CHROMIUM)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def site(serve_runs, tmp_path_factory):  # noqa: F811
    sweep = tmp_path_factory.mktemp("sweep") / "sweep.csv"
    with open(sweep, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["run", "run_dir", "temperature", "quality", "diversity", "quality_metric",
                                          "diversity_metric"])
        w.writeheader()
        for i, t in enumerate((0.5, 0.75, 1.0, 1.25, 1.5)):
            w.writerow({"run": "gan", "run_dir": serve_runs["gan"], "temperature": t, "quality": 3 + i,
                        "diversity": 2.5 - 0.2 * i, "quality_metric": "oracle_nll", "diversity_metric": "test_nll"})
        w.writerow({"run": "other", "run_dir": "/elsewhere", "temperature": 1, "quality": 9, "diversity": 9,
                    "quality_metric": "oracle_nll", "diversity_metric": "test_nll"})
    registry = Registry.load([serve_runs["gan"], serve_runs["mle"], serve_runs["cond"]], calibration_n=40,
                             sweeps=[str(sweep)], limits=Limits(max_n=8, max_tokens=16))
    with running_server(registry, Settings()) as port:
        yield f"http://127.0.0.1:{port}/"


def test_page_generates_scored_samples(browser, site, tmp_path):
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(site)
    page.wait_for_selector("#model option[value=gan]", state="attached")
    page.select_option("#model", "gan")
    page.wait_for_selector("#sweep svg circle")
    assert page.locator("#sweep svg circle").count() == 5  # this run's 5 rows, not the other run's
    assert page.locator("#curve svg polyline").count() == 1
    page.fill("#n", "4")
    page.fill("#seed", "3")
    page.click("#generate")
    page.wait_for_selector("#samples li.sample")
    items = page.locator("#samples li.sample")
    assert items.count() == 4
    for i in range(4):
        r = float(items.nth(i).get_attribute("data-realness"))
        assert 0.0 <= r <= 1.0
        colour = items.nth(i).evaluate("e => getComputedStyle(e).borderLeftColor")
        assert colour != "rgb(153, 153, 153)"  # coloured by the score, not the default grey
    assert page.locator("#gen-error").inner_text() == ""
    shot = tmp_path / "serve-page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("LLMGAN_SCREENSHOT"):
        page.screenshot(path=os.environ["LLMGAN_SCREENSHOT"], full_page=True)
    # a conditional run shows the prompt box; an error comes back as a line on the page
    page.select_option("#model", "cond")
    assert page.locator("#prompt").is_visible()
    page.fill("#prompt", "")
    page.click("#generate")
    page.wait_for_function("document.getElementById('gen-error').textContent.length > 0")
    assert "prompt" in page.locator("#gen-error").inner_text()
    assert errors == []
    page.close()


def test_page_fits_a_phone(browser, site):
    page = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2)
    page.goto(site)
    page.wait_for_selector("#model option[value=gan]", state="attached")
    page.select_option("#model", "mle")
    page.click("#generate")
    page.wait_for_selector("#samples li.sample")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling
    box = page.locator("#generate").bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390
    page.close()
