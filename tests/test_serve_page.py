"""The `recipekit serve` page: the recipe endpoint behind its cards, the favicon, the two ways of
leaving an ingredient out (``remove``: AdaMine's query-only removal; ``exclude``: the filter, which
reads the raw ingredient lines too), the partition filter, and the page end to end in headless
Chromium (Selenium) with every control.

The browser test needs Debian's ``chromium`` and ``chromedriver`` (`make browser` installs them as
root with apt-get; `make test` does it first). Without them it skips, except under ``CI=true``,
where it fails: CI must run every check."""

from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("faiss")

from PIL import Image  # noqa: E402

from recipekit.search.ingredients import RecipeMentions, mentions  # noqa: E402
from recipekit.search.server import make_server  # noqa: E402

from browser import drop_file, find_browser, open_page, screenshot, start_chrome, wait_results  # noqa: E402


@pytest.fixture(scope="module")
def server(trained_demo_run, prepared_demo, tmp_path_factory):
    srv = make_server(trained_demo_run, prepared_demo, port=0, index=tmp_path_factory.mktemp("page") / "index",
                      echo=None).start()
    yield srv
    srv.stop()


def _get(url):
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()


def _api(server, path, **params):
    status, _, body = _get(server.url + path + ("?" + urllib.parse.urlencode(params) if params else ""))
    return status, json.loads(body)


def _lines(engine):
    return engine._text_table().column("ingredients").to_pylist()


def _mentioned(engine, name):
    """Per recipe row: does it mention ``name`` in its extracted names or its raw ingredient lines."""
    return np.array([any(mentions(list(names or []), name)) or any(mentions(list(lines or []), name))
                     for names, lines in zip(engine.recipes["ingredients"], _lines(engine))])


def _pair(engine):
    """(asked, left out): a frequent ingredient and the one most often cooked with it."""
    keep = engine.ingredients.names[0]
    together = Counter(n for names in engine.recipes["ingredients"] if keep in names for n in names if n != keep)
    return keep, together.most_common(1)[0][0]


def test_recipe_endpoint_gives_the_corpus_text_url_and_photos(server, prepared_demo):
    import pyarrow.parquet as pq

    engine = server.engine
    rows = pq.read_table(prepared_demo / "recipes.parquet").to_pylist()
    with_photo = next(r for r in rows if engine.recipes["image_paths"][engine._row[r["id"]]])
    status, out = _api(server, "api/recipe/" + urllib.parse.quote(with_photo["id"], safe=""))
    assert status == 200
    assert (out["recipe_id"], out["title"], out["ingredients"], out["instructions"], out["url"]) == (
        with_photo["id"], with_photo["title"], with_photo["ingredients"], with_photo["instructions"], with_photo["url"])
    assert out["url"].startswith("https://") and out["photos"] and len(out["photos"]) == len(out["image_paths"])
    status, ctype, body = _get(server.url + out["photos"][0].lstrip("/"))
    assert status == 200 and ctype == "image/jpeg" and body[:2] == b"\xff\xd8"


def test_favicon_is_served_and_linked(server):
    for path in ("static/favicon.svg", "favicon.ico"):
        status, ctype, body = _get(server.url + path)
        assert status == 200 and ctype == "image/svg+xml" and body.startswith(b"<svg"), (path, status, ctype)
    _, _, page = _get(server.url)
    assert b'rel="icon" href="/static/favicon.svg"' in page


def test_exclude_reads_raw_lines_remove_only_changes_the_query(server):
    engine = server.engine
    keep, drop = _pair(engine)
    # exclude: no result mentions it, by extracted name or by raw line
    status, out = _api(server, "api/ingredients", q=keep, exclude=drop, k=40, target="recipes")
    assert status == 200 and out["count"] == len(out["hits"]) == 40 and out["query"]["exclude"] == drop
    mentioned = _mentioned(engine, drop)
    assert not any(mentioned[engine._row[h["recipe_id"]]] for h in out["hits"])
    # remove: AdaMine's experiment; the query loses the ingredient, the results are not filtered
    status, removed = _api(server, "api/ingredients", q=f"{keep}, {drop}", remove=drop, k=40, target="recipes")
    _, plain = _api(server, "api/ingredients", q=keep, k=40, target="recipes")
    assert [h["recipe_id"] for h in removed["hits"]] == [h["recipe_id"] for h in plain["hits"]]
    assert any(mentioned[engine._row[h["recipe_id"]]] for h in removed["hits"]), "remove must not filter"
    # the older `without` is both
    _, both = _api(server, "api/ingredients", q=f"{keep}, {drop}", without=drop, k=40, target="recipes")
    _, explicit = _api(server, "api/ingredients", q=f"{keep}, {drop}", remove=drop, exclude=drop, k=40, target="recipes")
    assert [h["recipe_id"] for h in both["hits"]] == [h["recipe_id"] for h in explicit["hits"]] == \
        [h["recipe_id"] for h in out["hits"]]


def test_exclude_drops_a_recipe_whose_raw_line_names_it_but_whose_names_miss_it(server):
    """The tomato-soup case on the real engine: the top result gets a raw line "2 {drop}s" that its
    extracted names do not have; exclude drops it, remove keeps it."""
    engine = server.engine
    keep, drop = _pair(engine)
    top = next(h for h in engine.by_ingredients([keep], exclude=[drop], k=10, target="recipes"))
    row = engine._row[top.recipe_id]
    assert drop not in engine.recipes["ingredients"][row]
    lines = _lines(engine)
    lines[row] = list(lines[row]) + [f"2 {drop}s, chopped"]
    saved = engine._mentions
    engine._mentions = RecipeMentions(engine.recipes["ingredients"], lines, engine.ingredients)
    try:
        after = engine.by_ingredients([keep], exclude=[drop], k=10, target="recipes")
        assert top.recipe_id not in [h.recipe_id for h in after]
        kept = [h.recipe_id for h in engine.by_ingredients([keep], remove=[drop], k=200, target="recipes")]
        assert top.recipe_id in kept  # remove does not filter
        assert kept == [h.recipe_id for h in engine.by_ingredients([keep], k=200, target="recipes")]
    finally:
        engine._mentions = saved


def test_partition_filter(server):
    engine = server.engine
    keep, _ = _pair(engine)
    status, info = _api(server, "api/classes")
    assert info["partitions"] == sorted(set(engine.recipes["partition"])) and "test" in info["partitions"]
    for partition in info["partitions"]:
        status, out = _api(server, "api/ingredients", q=keep, partition=partition, k=20)
        assert status == 200 and out["hits"] and {h["partition"] for h in out["hits"]} == {partition}
    _, everything = _api(server, "api/ingredients", q=keep, partition="all", k=20)
    _, default = _api(server, "api/ingredients", q=keep, k=20)
    assert everything["hits"] == default["hits"] and len({h["partition"] for h in default["hits"]}) > 1


# -- the page in a real browser ------------------------------------------------------------------

def _browser_or_skip():
    """(chromium, chromedriver) paths; a skip (a failure under CI=true) when they are missing."""
    chromium, driver, missing = find_browser()
    if missing:
        reason = (f"browser test needs {', '.join(missing)}: `make browser` (root + apt-get) installs chromium and "
                  f"chromium-driver, `pip install -e '.[test]'` selenium")
        if os.environ.get("CI") == "true":
            pytest.fail(reason + " (CI=true: not skipped)")
        pytest.skip(reason)
    return chromium, driver


def test_missing_browser_skips_but_fails_under_ci(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="needs chromium, chromedriver.*make browser"):
        _browser_or_skip()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true: not skipped"):
        _browser_or_skip()


def _not_blank(png) -> None:
    pixels = np.asarray(Image.open(png).convert("RGB"))
    colours = len(np.unique(pixels.reshape(-1, 3), axis=0))
    assert pixels.shape[0] > 300 and colours > 200 and pixels.std() > 20, (pixels.shape, colours, pixels.std())


def _few_images(engine, partition="test"):
    """A class with 1 to 11 photos in ``partition``: a query that must say fewer results came back."""
    counts = Counter(engine.recipes["class_name"][r] for r in engine._image_recipe
                     if engine.recipes["partition"][r] == partition and engine.recipes["class_id"][r] != 0)
    name, n = next((c, n) for c, n in sorted(counts.items(), key=lambda cn: -cn[1]) if 0 < n < 12)
    return name, n


@pytest.mark.slow
def test_page_end_to_end_in_headless_chromium(server, tmp_path):
    chromium, driver_path = _browser_or_skip()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser = start_chrome(chromium, driver_path)
    engine = server.engine
    find = browser.find_element
    js = browser.execute_script

    def title():
        return find(By.ID, "results-title").text

    try:
        wait = open_page(browser, server.url)
        assert [o.text for o in browser.find_elements(By.CSS_SELECTOR, "#class option")] == ["any class", *engine.classes()]
        assert [o.get_attribute("value") for o in browser.find_elements(By.CSS_SELECTOR, "#partition option")] == [
            "all", *engine.partitions()]
        def layout():
            """Both forms side by side, of one height, and no empty space under either form's button."""
            gaps = js("""return [...document.querySelectorAll('.panel')].map(p => {
                const r = p.getBoundingClientRect(), b = p.querySelector('button').getBoundingClientRect();
                return [r.top, r.height, r.bottom - b.bottom]; })""")
            assert len(gaps) == 2 and gaps[0][0] == gaps[1][0] and gaps[0][1] == gaps[1][1], gaps
            assert all(g[2] < 40 for g in gaps), f"empty space under a form: {gaps}"
            assert find(By.ID, "drop").size["height"] > 150

        layout()

        # a photo from the file field: a preview, then 12 cards
        photo = tmp_path / "photo.jpg"
        photo.write_bytes(engine.image_bytes(engine.images["recipe_id"][0], engine.images["position"][0]))
        find(By.ID, "photo").send_keys(str(photo))
        wait.until(lambda b: b.find_element(By.ID, "preview").is_displayed()
                   and js("return document.getElementById('preview').naturalWidth") > 0)
        find(By.ID, "photo-submit").click()
        found = wait_results(browser, wait, previous="")
        assert len(found) == 12 and all(c.find_element(By.CSS_SELECTOR, ".title").text.strip() for c in found)
        assert js("return [...document.querySelectorAll('#results .card img')].every(i => i.naturalWidth > 0)")
        assert "score" in found[0].find_element(By.CSS_SELECTOR, ".meta").text
        assert find(By.ID, "results-count").text == "12 results."

        # a photo dropped on the drop zone replaces it (preview and query), among the test partition
        other = engine.images["recipe_id"][5], engine.images["position"][5]
        drop_file(browser, f"/api/photo/{urllib.parse.quote(other[0], safe='')}/{other[1]}", "dropped.jpg")
        wait.until(lambda b: b.find_element(By.ID, "drop-hint").text == "dropped.jpg")
        assert find(By.ID, "preview").get_attribute("src").startswith("blob:")
        assert js("return document.getElementById('photo').files[0].name") == "dropped.jpg"
        layout()  # with a preview in the drop zone too
        Select(find(By.ID, "partition")).select_by_value("test")
        previous = title()
        find(By.ID, "photo-submit").click()
        found = wait_results(browser, wait, previous)
        assert title() == "Recipes for dropped.jpg (test only)"
        assert len(found) == 12 and {c.get_attribute("data-partition") for c in found} == {"test"}

        # the loading state, held visible while the server's query lock is taken
        keep, drop = _pair(engine)
        find(By.ID, "q").send_keys(keep)
        find(By.ID, "without").send_keys(drop)
        previous = title()
        with server.lock:
            find(By.ID, "ingredients-submit").click()
            wait.until(lambda b: b.find_element(By.ID, "loading").is_displayed())
            assert not find(By.ID, "ingredients-submit").is_enabled() and not find(By.ID, "photo-submit").is_enabled()
            assert find(By.ID, "results").get_attribute("aria-busy") == "true"
        found = wait_results(browser, wait, previous)
        assert not find(By.ID, "loading").is_displayed() and find(By.ID, "ingredients-submit").is_enabled()

        # "without", the filter (the default): no card's recipe mentions it, in names or raw lines
        assert title() == f"Dishes with {keep} without {drop} (test only)"
        mentioned = _mentioned(engine, drop)
        ids = [c.get_attribute("data-recipe-id") for c in found]
        assert ids and not any(mentioned[engine._row[i]] for i in ids)
        assert {c.get_attribute("data-partition") for c in found} == {"test"}

        # "without", AdaMine's removal: the same results as the engine's, unfiltered
        Select(find(By.ID, "partition")).select_by_value("all")
        find(By.ID, "q").send_keys(", " + drop)
        find(By.ID, "mode-remove").click()
        previous = title()
        find(By.ID, "ingredients-submit").click()
        found = wait_results(browser, wait, previous)
        assert title() == f"Dishes with {keep}, {drop} with {drop} removed from the query"
        expected = engine.by_ingredients([keep, drop], remove=[drop], k=12)
        assert [c.get_attribute("data-recipe-id") for c in found] == [h.recipe_id for h in expected]

        # fewer results than asked: said so
        name, n = _few_images(engine)
        find(By.ID, "without").clear()
        Select(find(By.ID, "class")).select_by_value(name)
        Select(find(By.ID, "partition")).select_by_value("test")
        previous = title()
        find(By.ID, "ingredients-submit").click()
        found = wait_results(browser, wait, previous)
        assert len(found) == n and find(By.ID, "results-count").text == (
            f"Only {n} of the 12 results asked: no more pass the filters.")

        # a card opens its recipe: title, raw ingredient lines, instructions, source link
        card_title = found[0].find_element(By.CSS_SELECTOR, ".title").text
        found[0].click()
        wait.until(lambda b: b.find_element(By.ID, "recipe").is_displayed())
        recipe = engine.recipe(found[0].get_attribute("data-recipe-id"))
        assert find(By.ID, "recipe-title").text == card_title == recipe["title"]
        items = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#recipe-ingredients li")]
        steps = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#recipe-instructions li")]
        assert items == [" ".join(x.split()) for x in recipe["ingredients"]] and len(steps) == len(recipe["instructions"])
        link = find(By.ID, "recipe-source")
        assert link.is_displayed() and link.get_attribute("href") == recipe["url"]
        assert link.get_attribute("rel") == "noopener noreferrer"
        wait.until(lambda b: js("const i = document.getElementById('recipe-photo'); return i.complete && i.naturalWidth > 0"))
        screenshot(browser, tmp_path / "recipe.png")
        find(By.ID, "recipe-close").click()
        wait.until(lambda b: not b.find_element(By.ID, "recipe").is_displayed())

        # a bad upload: the error box, no cards; then a good query again
        text = tmp_path / "notes.txt"
        text.write_text("not a photo\n")
        find(By.ID, "photo").send_keys(str(text))
        find(By.ID, "photo-submit").click()
        wait.until(lambda b: b.find_element(By.ID, "error").is_displayed())
        assert "not a usable image" in find(By.ID, "error").text
        assert not browser.find_elements(By.CSS_SELECTOR, "#results .card") and not find(By.ID, "preview").is_displayed()
        find(By.ID, "ingredients-submit").click()
        found = wait_results(browser, wait)
        assert found and title().startswith(f"Dishes with {keep}")
        _not_blank(screenshot(browser, tmp_path / "page.png"))

        # the console: no failed resource (the favicon was a 404), no CSP violation
        console = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not [m for m in console if "favicon" in m or "Content Security Policy" in m or " 404 " in m], console
        assert not [m for m in console if "notes.txt" not in m and "api/image" not in m], console
    finally:
        browser.quit()
