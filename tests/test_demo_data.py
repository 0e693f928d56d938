"""The embedded synthetic demo corpus (recipekit.pipeline.demo)."""

from __future__ import annotations

import collections
import html
import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from recipekit.pipeline.demo import iter_recipes, load_vocabulary, render_image, write_demo_corpus
from recipekit.pipeline.demo import render as demo_render

HEX10 = re.compile(r"[0-9a-f]{10}")
COUNT_KEYS = {"recipes", "with_images", "images", "det_ingrs", "train", "val", "test"}


def _load(out: Path):
    names = ("layer1.json", "layer2.json", "det_ingrs.json")
    return tuple(json.loads((out / n).read_text(encoding="utf-8")) for n in names)


def _tree(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def _image_path(out: Path, partition: str, image_id: str) -> Path:
    return out / "images" / partition / image_id[0] / image_id[1] / image_id[2] / image_id[3] / image_id


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "corpus"  # not created yet: write_demo_corpus makes it
    counts = write_demo_corpus(out, recipes=200, seed=3, image_fraction=0.5, det_fraction=0.3, image_size=48,
                               max_images=3)
    return out, counts


@pytest.fixture(scope="module")
def text_corpus():
    """1000 recipes, text only (cheap), as yielded by iter_recipes."""
    return list(iter_recipes(1000, seed=0, image_fraction=0.5, det_fraction=0.3))


def test_layout_and_schema(corpus):
    out, _ = corpus
    assert sorted(p.name for p in out.iterdir()) == ["det_ingrs.json", "images", "layer1.json", "layer2.json"]
    layer1, layer2, det = _load(out)
    assert isinstance(layer1, list) and len(layer1) == 200
    ids = [r["id"] for r in layer1]
    assert len(set(ids)) == len(ids) and all(HEX10.fullmatch(i) for i in ids)
    for r in layer1:
        assert list(r) == ["id", "title", "ingredients", "instructions", "partition", "url"]
        assert isinstance(r["title"], str) and r["title"].strip()
        assert 3 <= len(r["ingredients"]) <= 13 and 3 <= len(r["instructions"]) <= 10
        for item in r["ingredients"] + r["instructions"]:
            assert list(item) == ["text"] and isinstance(item["text"], str) and item["text"].strip()
        assert r["partition"] in ("train", "val", "test")
        assert r["url"].startswith("https://") and r["id"] in r["url"]
    by_id = {r["id"]: r for r in layer1}
    with_photos = set()
    image_ids = []
    for e in layer2:
        assert list(e) == ["id", "images"] and e["id"] in by_id and e["id"] not in with_photos
        with_photos.add(e["id"])
        assert 1 <= len(e["images"]) <= 3
        for im in e["images"]:
            assert list(im) == ["id", "url"] and im["id"].endswith(".jpg") and HEX10.fullmatch(im["id"][:-4])
            image_ids.append(im["id"])
            path = _image_path(out, by_id[e["id"]]["partition"], im["id"])
            with Image.open(path) as img:
                assert img.format == "JPEG" and img.mode == "RGB" and img.size == (48, 48)
    assert len(set(image_ids)) == len(image_ids)
    on_disk = sorted(p.name for p in (out / "images").rglob("*") if p.is_file())
    assert on_disk == sorted(image_ids)
    # Like Recipe1M, every recipe, with photos or not, is split ~70/15/15 by a hash of its id.
    for subset in (with_photos, set(by_id) - with_photos):
        parts = collections.Counter(by_id[i]["partition"] for i in subset)
        assert set(parts) == {"train", "val", "test"} and parts["train"] > parts["val"] + parts["test"]
    assert 60 <= len(with_photos) <= 140  # image_fraction=0.5
    names = {i["name"] for i in load_vocabulary()["ingredients"]}
    plural = {i["name"]: i.get("plural", i["name"]) for i in load_vocabulary()["ingredients"]}
    det_ids = set()
    for e in det:
        assert list(e) == ["id", "ingredients", "valid"] and e["id"] in by_id and e["id"] not in det_ids
        det_ids.add(e["id"])
        lines = by_id[e["id"]]["ingredients"]
        assert len(e["ingredients"]) == len(e["valid"]) == len(lines)  # one entry per ingredient line
        assert all(isinstance(v, bool) for v in e["valid"]) and any(e["valid"])
        for item, ok, line in zip(e["ingredients"], e["valid"], lines, strict=True):
            assert list(item) == ["text"] and item["text"].strip()
            if ok:  # the clean canonical name, found in its raw line
                assert item["text"] in names
                raw = html.unescape(line["text"]).replace("&", "and").lower()
                assert item["text"] in raw or plural[item["text"]] in raw
    assert 25 <= len(det) <= 95  # det_fraction=0.3


def test_counts_match_files(corpus):
    out, counts = corpus
    layer1, layer2, det = _load(out)
    assert set(counts) == COUNT_KEYS
    assert counts["recipes"] == len(layer1) == 200
    assert counts["with_images"] == len(layer2)
    assert counts["images"] == sum(len(e["images"]) for e in layer2)
    assert counts["images"] == sum(1 for p in (out / "images").rglob("*.jpg"))
    assert counts["det_ingrs"] == len(det)
    part = collections.Counter(r["partition"] for r in layer1)
    assert (counts["train"], counts["val"], counts["test"]) == (part["train"], part["val"], part["test"])
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]


def test_json_is_json_dumps_without_ascii_escapes(corpus):
    out, _ = corpus
    text = (out / "layer1.json").read_text(encoding="utf-8")
    lines = text.splitlines()
    assert lines[0] == "[" and lines[-1] == "]"
    for line in lines[1:-1]:
        element = line.rstrip(",")
        assert json.dumps(json.loads(element), ensure_ascii=False) == element
    assert "\\u00bd" not in text


def test_deterministic_and_independent_of_workers(tmp_path):
    args = {"recipes": 60, "image_fraction": 0.6, "image_size": 32, "max_images": 2}
    a = write_demo_corpus(tmp_path / "a", seed=5, workers=1, **args)
    b = write_demo_corpus(tmp_path / "b", seed=5, workers=1, **args)
    c = write_demo_corpus(tmp_path / "c", seed=5, workers=2, **args)
    write_demo_corpus(tmp_path / "d", seed=6, workers=1, **args)
    assert a == b == c
    ta, tb, tc, td = (_tree(tmp_path / n) for n in "abcd")
    assert any(k.endswith(".jpg") for k in ta)
    assert ta == tb == tc
    assert ta["layer1.json"] != td["layer1.json"] and set(ta) != set(td)


def test_smaller_corpus_is_a_prefix(tmp_path):
    write_demo_corpus(tmp_path / "small", recipes=300, image_fraction=0)
    write_demo_corpus(tmp_path / "large", recipes=700, image_fraction=0)
    small, large = _load(tmp_path / "small")[0], _load(tmp_path / "large")[0]
    assert large[:300] == small


def test_empty_and_text_only(tmp_path):
    counts = write_demo_corpus(tmp_path / "empty", recipes=0)
    assert counts == dict.fromkeys(COUNT_KEYS, 0)
    assert _load(tmp_path / "empty") == ([], [], [])
    counts = write_demo_corpus(tmp_path / "text", recipes=50, image_fraction=0, det_fraction=1)
    _, layer2, det = _load(tmp_path / "text")
    assert layer2 == [] and len(det) == 50 and not (tmp_path / "text" / "images").exists()
    assert counts["train"] + counts["val"] + counts["test"] == 50 and counts["train"] > 25


def test_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        write_demo_corpus(tmp_path, recipes=-1)
    with pytest.raises(ValueError):
        write_demo_corpus(tmp_path, image_fraction=1.5)
    with pytest.raises(ValueError):
        write_demo_corpus(tmp_path, workers=0)
    with pytest.raises(TypeError):
        write_demo_corpus(tmp_path, recipes="10")


def test_failure_leaves_no_partial_files(tmp_path, monkeypatch):
    def boom(*args):
        raise RuntimeError("render failed")

    monkeypatch.setattr(demo_render, "render_chunk", boom)
    with pytest.raises(RuntimeError):
        write_demo_corpus(tmp_path, recipes=100, image_fraction=1.0, image_size=32)
    assert not list(tmp_path.glob("*.json*"))


def test_frequent_title_bigrams(text_corpus):
    adjectives = {w for a, _ in load_vocabulary()["adjectives"] for w in re.findall(r"[a-z']+", a)}
    titles = [html.unescape(r.record["title"]).lower() for r in text_corpus]
    bigrams = collections.Counter()
    for t in titles:
        words = re.findall(r"[a-z']+", t)
        bigrams.update({b for b in itertools.pairwise(words) if not set(b) & adjectives and "and" not in b})
    frequent = [" ".join(b) for b, n in bigrams.items() if n >= 0.02 * len(titles)]
    assert len(frequent) >= 4, bigrams.most_common(10)
    for dish in ("apple pie", "caesar salad", "chicken curry", "french toast", "fried rice", "pancakes", "ramen",
                 "tacos", "waffles", "risotto"):
        assert sum(dish in t for t in titles) >= 2, dish
    # Title words that class building must filter out are there too.
    assert sum(t.startswith(("easy ", "quick ", "best ", "the best ")) for t in titles) >= 50


def test_dirt_for_parse_to_clean(text_corpus):
    records = [r.record for r in text_corpus]
    texts = [r["title"] for r in records]
    texts += [i["text"] for r in records for i in r["ingredients"] + r["instructions"]]
    assert any("&amp;" in t for t in texts)
    assert any("½" in t for t in texts)
    assert any(t != t.strip() for t in texts)
    assert any("  " in t.strip() for t in texts)
    clean = sum(t == " ".join(t.split()) and "&" not in t for t in texts)
    assert clean > 0.95 * len(texts)  # a small share only
    lines = [i["text"] for r in records for i in r["ingredients"]]
    assert any(re.match(r"\d+ \(\d+(\.\d+)? ?(oz|ounce|ml)\) cans? ", t) for t in lines)
    assert any(re.search(r"\b(cups?|tbsp|teaspoons?|tablespoons?|g|oz|pounds?|lbs?)\b", t) for t in lines)
    assert any(re.search(r", (minced|chopped|diced|peeled and sliced)", t) for t in lines)


def test_images_carry_signal(tmp_path):
    """Dish type is predictable from pixels; photos of one recipe look alike but differ."""
    n, size = 400, 48
    write_demo_corpus(tmp_path, recipes=n, seed=1, image_fraction=1.0, det_fraction=0, image_size=size, max_images=2)
    recs = {r.id: r for r in iter_recipes(n, seed=1, image_fraction=1.0, det_fraction=0, max_images=2)}
    feats, dish, part, rid, raw = [], [], [], [], []
    for e in _load(tmp_path)[1]:
        r = recs[e["id"]]
        for im in e["images"]:
            with Image.open(_image_path(tmp_path, r.partition, im["id"])) as img:
                pixels = np.asarray(img)
            raw.append(pixels)
            # Colour histogram (4 levels per channel) of the centre, where the food is.
            q = pixels[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4].reshape(-1, 3) // 64
            hist = np.bincount(q[:, 0] * 16 + q[:, 1] * 4 + q[:, 2], minlength=64)
            feats.append(np.sqrt(hist / hist.sum()))
            dish.append(r.dish), part.append(r.partition), rid.append(r.id)
    x, dish, rid = np.array(feats), np.array(dish), np.array(rid)
    dist = ((x[:, None] - x[None]) ** 2).sum(-1)
    train = np.array(part) == "train"
    nearest = dist[np.ix_(~train, train)].argmin(1)  # 1-NN on held-out (val + test) recipes
    accuracy = (dish[train][nearest] == dish[~train]).mean()
    majority = (dish[~train] == collections.Counter(dish[train]).most_common(1)[0][0]).mean()
    assert accuracy > max(4 * majority, 0.2), (accuracy, majority)
    # Two photos of the same recipe: never identical, closer than a typical other recipe.
    closer = []
    for i in range(len(x)):
        same = np.flatnonzero((rid == rid[i]) & (np.arange(len(x)) != i))
        if len(same):
            assert not np.array_equal(raw[i], raw[same[0]])
            closer.append(dist[i, same[0]] < np.median(dist[i, rid != rid[i]]))
    assert len(closer) >= 40 and np.mean(closer) > 0.65, np.mean(closer)


def test_main_ingredient_colours_the_picture():
    v = load_vocabulary()
    dish = next(i for i, d in enumerate(v["dishes"]) if d["name"] == "soup")
    index = {i["name"]: k for k, i in enumerate(v["ingredients"])}

    def centre_mean(main: str) -> np.ndarray:
        means = []
        for k in range(12):
            img = render_image(0, f"{k:010x}.jpg", dish, index[main], (index[main], index["onion"]), 64)
            means.append(np.asarray(img.crop((20, 20, 44, 44)), dtype=np.float32).reshape(-1, 3).mean(0))
        return np.mean(means, axis=0)

    tomato, broccoli = centre_mean("tomato"), centre_mean("broccoli")
    assert tomato[0] - tomato[1] > broccoli[0] - broccoli[1] + 40  # red vs green soup


def test_render_handles_every_dish_at_odd_sizes():
    v = load_vocabulary()
    for d, dish in enumerate(v["dishes"]):
        main = {i["name"]: k for k, i in enumerate(v["ingredients"])}[dish["mains"][0]]
        for size in (16, 33):
            img = render_image(7, "0123456789.jpg", d, main, (main,), size)
            assert img.mode == "RGB" and img.size == (size, size)


def test_iter_recipes_matches_written_files(corpus):
    out, _ = corpus
    layer1, layer2, det = _load(out)
    recs = list(iter_recipes(200, seed=3, image_fraction=0.5, det_fraction=0.3, max_images=3))
    assert [r.record for r in recs] == layer1
    assert [(r.id, r.partition) for r in recs] == [(r["id"], r["partition"]) for r in layer1]
    photos = [(e["id"], [i["id"] for i in e["images"]]) for e in layer2]
    assert [(r.id, list(r.images)) for r in recs if r.images] == photos
    assert [r.det for r in recs if r.det is not None] == det
