"""The screenshots of docs/web.md: `recipekit serve` on a run, driven in headless Chromium by the
same helper as the browser test (tests/browser.py), written as 128-colour PNGs.

    python benchmarks/web_screenshots.py RUN PREPARED [--index DIR] [--out docs/img]

Writes ``serve.png`` (an ingredient query without an ingredient), ``serve-recipe.png`` (a card
opened) and ``serve-photo.png`` (a dropped photo, its preview and the test-partition results).
The index is built first when ``--index`` (default ``RUN/index``) holds none.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from browser import drop_file, find_browser, open_page, screenshot, start_chrome, wait_results  # noqa: E402


def shoot(run: Path, data: Path, index: Path | None, out: Path, *, ingredients: str, without: str) -> list[Path]:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from recipekit.search.server import make_server

    chromium, driver, missing = find_browser()
    if missing:
        raise SystemExit(f"needs {', '.join(missing)} (`make browser`)")
    out.mkdir(parents=True, exist_ok=True)
    server = make_server(run, data, port=0, index=index, echo=print).start()
    browser = start_chrome(chromium, driver)
    written = []
    try:
        wait = open_page(browser, server.url)
        browser.find_element(By.ID, "q").send_keys(ingredients)
        browser.find_element(By.ID, "without").send_keys(without)
        browser.find_element(By.ID, "ingredients-submit").click()
        cards = wait_results(browser, wait)
        written.append(screenshot(browser, out / "serve.png", colours=128))
        cards[0].click()
        wait.until(lambda b: b.find_element(By.ID, "recipe").is_displayed() and b.execute_script(
            "const i = document.getElementById('recipe-photo'); return i.hidden || (i.complete && i.naturalWidth > 0)"))
        written.append(screenshot(browser, out / "serve-recipe.png", colours=128))
        browser.find_element(By.ID, "recipe-close").click()
        engine = server.engine
        row = next(j for j, r in enumerate(engine.images["recipe_row"]) if engine.recipes["partition"][r] == "test")
        rid, pos = engine.images["recipe_id"][row], engine.images["position"][row]
        drop_file(browser, f"/api/photo/{rid}/{pos}", "soup.jpg")
        wait.until(lambda b: b.find_element(By.ID, "drop-hint").text == "soup.jpg")
        Select(browser.find_element(By.ID, "partition")).select_by_value("test")
        previous = browser.find_element(By.ID, "results-title").text
        browser.find_element(By.ID, "photo-submit").click()
        wait_results(browser, wait, previous)
        written.append(screenshot(browser, out / "serve-photo.png", colours=128))
    finally:
        browser.quit()
        server.stop()
    return written


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("data", type=Path)
    ap.add_argument("--index", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    ap.add_argument("--ingredients", default="garlic, onion")
    ap.add_argument("--without", default="tomato")
    a = ap.parse_args()
    for path in shoot(a.run, a.data, a.index, a.out, ingredients=a.ingredients, without=a.without):
        print(path)


if __name__ == "__main__":
    main()
