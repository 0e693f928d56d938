"""The naive baseline for benchmarks/prepare_text.py, run as its own process.

What a first script would do: ``json.load`` each whole file, then plain Python
per record: the same validation and clean-up, the same ingredient extractor
called on every line (no de-duplication), and im2recipe's class rule as its
script runs it (each candidate bigram tested against every title). Prints one
JSON line of per-stage wall times. Usage: python _naive_prepare.py SRC OUT
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path

from recipekit.pipeline.classes import BANNED_WORDS, food101_names, title_keys
from recipekit.pipeline.ingredient_names import extract_name
from recipekit.pipeline.parse import validate_recipe


def main(src: Path, out: Path) -> None:
    from spacy.lang.en.stop_words import STOP_WORDS

    times = {}
    t = time.perf_counter()
    layer1 = json.load(open(src / "layer1.json", encoding="utf-8"))
    layer2 = json.load(open(src / "layer2.json", encoding="utf-8"))
    recipes, seen = [], set()
    for rec in layer1:
        row, why, rid = validate_recipe(rec)
        if row is not None and rid not in seen:
            seen.add(rid)
            recipes.append(row)
    images = [(e["id"], img["id"]) for e in layer2 if e["id"] in seen for img in e["images"]]
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "recipes.jsonl", "w", encoding="utf-8") as fh:
        for r in recipes:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    times["parse"] = time.perf_counter() - t

    t = time.perf_counter()
    names = {}
    for r in recipes:
        found = []
        for line in r["ingredients"]:
            n = extract_name(line)
            if n and n not in found:
                found.append(n)
        names[r["id"]] = found
    times["ingredients"] = time.perf_counter() - t

    t = time.perf_counter()
    stop = frozenset(STOP_WORDS)
    keys = [title_keys(r["title"], stop) for r in recipes]
    counts = Counter()
    for r, k in zip(recipes, keys):
        if r["partition"] == "train":
            counts.update(f"{a} {b}" for a, b in zip(k, k[1:]) if a.isalpha() and b.isalpha()
                          and a not in BANNED_WORDS and b not in BANNED_WORDS)
    labels = {}
    n_class = 1
    queries = [q for q, _ in counts.most_common(2000)] + food101_names()
    for q in queries:
        phrase = " " + q + " "
        members = [r["id"] for r, k in zip(recipes, keys) if phrase in " " + " ".join(k) + " " and r["id"] not in labels]
        member_set = set(members)
        parts = Counter(r["partition"] for r in recipes if r["id"] in member_set)
        if parts["train"] > 20 and parts["val"] and parts["test"]:
            for m in members:
                labels[m] = n_class
            n_class += 1
    times["classes"] = time.perf_counter() - t
    print(json.dumps({"times": times, "recipes": len(recipes), "images": len(images), "classes": n_class - 1}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
