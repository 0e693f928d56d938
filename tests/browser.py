"""Headless Chromium for the `recipekit serve` page: used by tests/test_serve_page.py and by
benchmarks/web_screenshots.py (the screenshots of docs/web.md), so both drive the same browser the
same way. Needs Debian's ``chromium`` and ``chromedriver`` and the ``selenium`` package."""

from __future__ import annotations

import shutil
from pathlib import Path

WINDOW = (1280, 1000)


def find_browser() -> tuple[str | None, str | None, list[str]]:
    """(chromium, chromedriver, names of what is missing)."""
    chromium = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    driver = shutil.which("chromedriver")
    try:
        import selenium  # noqa: F401
    except ImportError:
        selenium = None
    missing = [n for n, p in (("chromium", chromium), ("chromedriver", driver), ("selenium", selenium)) if not p]
    return chromium, driver, missing


def start_chrome(chromium: str, driver: str, window: tuple[int, int] = WINDOW):
    """A headless Chromium through Debian's chromedriver (``Service(executable_path=...)``: Selenium
    Manager never downloads a driver), with the browser console kept for ``get_log("browser")``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={window[0]},{window[1]}", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def open_page(browser, url: str, timeout: float = 60):
    """Load the page and wait until its class and partition lists are filled; returns a WebDriverWait."""
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, timeout)
    browser.get(url)
    wait.until(lambda b: b.execute_script("return document.body.dataset.ready === '1'"))
    return wait


def drop_file(browser, photo_url: str, name: str) -> None:
    """Drag and drop, as a user's file manager does it: a ``drop`` event whose DataTransfer holds
    the bytes of ``photo_url`` as a file called ``name`` (Selenium cannot drag a file from outside)."""
    browser.execute_async_script("""
        const [url, name, done] = arguments;
        fetch(url).then(r => r.blob()).then(blob => {
          const data = new DataTransfer();
          data.items.add(new File([blob], name, {type: blob.type || "image/jpeg"}));
          const zone = document.getElementById("drop");
          zone.dispatchEvent(new DragEvent("dragover", {dataTransfer: data, bubbles: true, cancelable: true}));
          zone.dispatchEvent(new DragEvent("drop", {dataTransfer: data, bubbles: true, cancelable: true}));
          done();
        });""", photo_url, name)


def wait_results(browser, wait, previous: str | None = None) -> list:
    """The result cards once a query (submitted after the results titled ``previous``) is done and
    their photos have loaded; fails with the page's error message when it shows one."""
    from selenium.webdriver.common.by import By

    def title():
        return browser.execute_script("return document.getElementById('results-title').textContent")

    wait.until(lambda b: b.find_element(By.ID, "error").is_displayed()
               or (b.find_element(By.ID, "loading").get_attribute("hidden") is not None
                   and b.find_element(By.ID, "results-count").is_displayed() and title() != previous))
    assert not browser.find_element(By.ID, "error").is_displayed(), browser.find_element(By.ID, "error").text
    wait.until(lambda b: b.execute_script(
        "return [...document.querySelectorAll('#results .card img')].every(i => i.complete)"))
    return browser.find_elements(By.CSS_SELECTOR, "#results .card")


def screenshot(browser, path: Path, colours: int | None = None) -> Path:
    """The window as a PNG at ``path``; ``colours``: reduced to that many (small files for docs/)."""
    path = Path(path)
    assert browser.save_screenshot(str(path)), path
    if colours:
        from PIL import Image

        Image.open(path).convert("RGB").quantize(colours).save(path, optimize=True)
    return path
