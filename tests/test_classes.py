import json

import numpy as np
import polars as pl
import pytest

from recipekit.pipeline.classes import (
    BANNED_WORDS,
    assign_classes,
    auto_min_train,
    food101_names,
    title_keys,
)

STOP = frozenset({"and", "with", "the", "a", "of"})


def _brute_force(titles, parts, top, max_classes, min_train, extra=()):
    """The rule as im2recipe's script states it, one query and one recipe at a time."""
    keys = [title_keys(t, STOP) for t in titles]
    counts = {}
    for k, p in zip(keys, parts):
        if p != 0:
            continue
        for g in {f"{a} {b}" for a, b in zip(k, k[1:])}:
            if not any(w in BANNED_WORDS or not w.isalpha() for w in g.split()):
                counts[g] = counts.get(g, 0) + 1
    queries = sorted(counts, key=lambda g: (-counts[g], g))[:top]
    labels = [0] * len(titles)
    names = ["background"]

    def contains(k, phrase):
        n = len(phrase)
        return any(k[j : j + n] == phrase for j in range(len(k) - n + 1))

    def attempt(name, phrase):
        members = [i for i, k in enumerate(keys) if labels[i] == 0 and contains(k, phrase)]
        c = [sum(parts[i] == s for i in members) for s in range(3)]
        if c[0] > min_train and c[1] > 0 and c[2] > 0:
            names.append(name)
            for i in members:
                labels[i] = len(names) - 1

    for q in queries:
        if len(names) > max_classes:
            break
        attempt(q, q.split())
    for e in extra:
        if " ".join(title_keys(e, STOP)) not in names:
            attempt(e, title_keys(e, STOP))
    return labels, names


def _random_titles(rng, n):
    heads = ["chicken", "tomato", "beef", "apple", "lemon", "garlic", "mushroom"]
    dishes = ["soup", "curry", "pie", "salad", "tacos", "cake", "stew"]
    adj = ["easy", "best", "creamy", "spicy", "the", "with"]
    titles = []
    for _ in range(n):
        words = list(rng.choice(adj, size=rng.integers(0, 3))) + [rng.choice(heads), rng.choice(dishes)]
        if rng.random() < 0.3:
            words += ["and", rng.choice(heads)]
        titles.append(" ".join(words).title())
    return titles


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_sequential_reference_rule(seed):
    rng = np.random.default_rng(seed)
    titles = _random_titles(rng, 600)
    parts = rng.choice(3, size=600, p=[0.7, 0.15, 0.15])
    extra = ["apple pie", "chicken curry", "lemon cake", "fish and chips"]
    for top, max_classes, min_train in [(2000, 1000, 5), (10, 1000, 3), (2000, 4, 2), (2000, 1000, 60)]:
        labels, names = assign_classes(
            [title_keys(t, STOP) for t in titles], parts, stop_words=STOP, top_bigrams=top,
            max_classes=max_classes, min_train=min_train, extra_names=extra,
        )
        ref_labels, ref_names = _brute_force(titles, parts, top, max_classes, min_train, extra)
        assert names == ref_names
        assert labels.tolist() == ref_labels


def test_banned_words_plurals_and_thresholds():
    titles = ["Easy Chicken Soup"] * 10 + ["Best Chicken Soups"] * 10 + ["Chicken Soup"] * 4
    parts = np.array([0] * 20 + [1, 1, 2, 2])
    labels, names = assign_classes([title_keys(t, STOP) for t in titles], parts, stop_words=STOP, min_train=5)
    assert names == ["background", "chicken soup"]  # never "easy chicken" or "best chicken"
    assert (labels == 1).all()  # "soups" and "soup" are one class
    # Without val members the class is not kept.
    labels, names = assign_classes([title_keys(t, STOP) for t in titles], np.zeros(24, dtype=int), stop_words=STOP,
                                   min_train=5)
    assert names == ["background"] and (labels == 0).all()


def test_food101_list_and_auto_threshold():
    names = food101_names()
    assert len(names) == 101 and len(set(names)) == 101
    assert "apple pie" in names and "macaroni and cheese" in names
    assert auto_min_train(280_000) == 20 and auto_min_train(1_000_000) == 20
    assert auto_min_train(500) == 2 and auto_min_train(70_000) == 5


def test_classes_stage_on_real_data(recipes_en, tmp_path):
    from recipekit.pipeline.classes import classes
    from recipekit.pipeline.parse import parse

    parse(recipes_en, tmp_path)
    report = classes(tmp_path)
    names = json.loads((tmp_path / "classes.json").read_text())
    table = pl.read_parquet(tmp_path / "recipe_classes.parquet")
    assert names["0"] == "background" and len(names) == report.counts["classes"] + 1 >= 2
    assert table.height == pl.read_parquet(tmp_path / "recipes.parquet").height
    assert set(table.get_column("class_name").unique()) == set(names.values())
    for cid, name in names.items():
        if cid != "0":  # each kept class has > min_train train members and val and test members
            members = table.filter(pl.col("class_id") == int(cid))
            assert members.filter(pl.col("partition") == "train").height > report.counts["min_train"]
            assert set(members.get_column("partition")) >= {"val", "test"}
