"""The embedded, deterministic, synthetic Recipe1M-style demo corpus.

:func:`write_demo_corpus` writes ``layer1.json``, ``layer2.json``, ``det_ingrs.json``
and ``images/{partition}/a/b/c/d/{id}.jpg`` as Recipe1M lays them out. Ids are a
SHA-1 of ``(seed, index)``; content comes from one RNG stream per block of 256
recipes seeded from ``(seed, block)``, so a smaller corpus is a prefix of a larger
one; each image depends on ``(seed, image id)`` only, so files are byte-identical
whatever the number of ``workers``.

A recipe is a dish type plus 3-12 ingredients, the main one drawn with a Zipf-like
skew so that "tomato soup" or "chicken curry" are frequent title bigrams; lines carry
real-looking quantities, units and preparations; a small share of records carry the
dirt (HTML entities, unicode fractions, stray spaces) that ``parse`` must clean.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zlib
from bisect import bisect
from collections.abc import Iterator
from functools import cache, lru_cache
from itertools import accumulate, cycle
from pathlib import Path
from random import Random
from typing import NamedTuple

from .render import ImageWriter, image_rel_path, load_vocabulary

log = logging.getLogger(__name__)

__all__ = ["DemoRecipe", "iter_recipes", "write_demo_corpus"]

URL = "https://demo.recipekit.invalid"
MINUTES = ["2", "3", "5", "5", "8", "10", "10", "15", "20", "25", "30", "45", "60", "5 to 7"]
TEMPS = ["350°F", "375°F", "400°F (200°C)", "180°C", "425 degrees F", "350 degrees F (175 degrees C)"]
N_INGR = list(accumulate([4, 7, 10, 12, 13, 12, 10, 8, 6, 4]))  # 3..12 ingredients
LONG = ["20", "25", "30", "35", "40", "45", "60", "90", "30 to 35"]
SOLID = {"veg", "leafy", "aromatic", "fruit", "berry", "poultry", "meat", "seafood", "herb", "nut", "cheese", "legume"}
TITLED = {"veg", "leafy", "fruit", "berry", "poultry", "meat", "seafood", "cheese", "legume"}
SMALL_WORDS = {"and", "with", "of", "in"}
POOL = 128  # pre-rendered ingredient lines per ingredient
SELECTIONS = 64  # pre-drawn instruction-template selections per phase
BLOCK = 256  # recipes per RNG seeding
ESC = json.encoder.encode_basestring  # what json.dumps(..., ensure_ascii=False) escapes strings with


@cache
def _step_selections(family: str) -> tuple:
    """Per phase (prep, cook, finish), SELECTIONS pre-drawn ordered template subsets joined by NUL."""
    prng = Random(f"recipekit-demo-steps:{family}")
    out = []
    for phase, most in zip(load_vocabulary()["steps"][family], (3, 5, 2), strict=True):
        subs = []
        for _ in range(SELECTIONS):
            k = prng.randint(1, min(most, len(phase)))
            subs.append("\x00".join(phase[i] for i in sorted(prng.sample(range(len(phase)), k))))
        out.append(subs)
    return tuple(out)


class _Fill(dict):
    """The fields of one recipe's instruction templates; x/y, v/w, n and long are drawn per use."""
    __slots__ = ("nv", "nx", "r")

    def __missing__(self, key):
        if key == "x" or key == "y":
            return self.nx()
        if key == "v" or key == "w":
            return self.nv()
        return MINUTES[int(self.r() * len(MINUTES))] if key == "n" else LONG[int(self.r() * len(LONG))]


class DemoRecipe(NamedTuple):
    """One generated recipe: its layer1 record and what layer2, det_ingrs and images need."""
    id: str              # the recipe id (10 hex digits)
    partition: str       # "train", "val" or "test"
    layer1: str          # the layer1 record, as json.dumps(record, ensure_ascii=False) spells it
    images: tuple        # image ids ("<10 hex>.jpg"), empty when the recipe has no photo
    det: dict | None     # its det_ingrs entry, or None
    dish: int            # index into vocabulary()["dishes"]
    main: int            # index into vocabulary()["ingredients"]
    ingredients: tuple   # ingredient indices, in line order

    @property
    def record(self) -> dict:
        """The layer1 record (decoded from :attr:`layer1`)."""
        return json.loads(self.layer1)


@lru_cache(maxsize=1 << 16)
def _titlecase(s: str) -> str:
    return " ".join(w if i and w in SMALL_WORDS else "-".join(p[:1].upper() + p[1:] for p in w.split("-"))
                    for i, w in enumerate(s.split(" ")))


class _Model:
    """The vocabulary compiled into index tables for fast sampling."""

    def __init__(self):
        v = load_vocabulary()
        ings = v["ingredients"]
        idx = {i["name"]: k for k, i in enumerate(ings)}
        self.name = [i["name"] for i in ings]
        self.plural = [i.get("plural", i["name"]) for i in ings]
        self.title = [i.get("title", i["name"]) for i in ings]
        self.cat = [i["cat"] for i in ings]
        self.measure = [i["measure"] for i in ings]
        self.pre = [i.get("pre") for i in ings]
        self.preps, self.lines = v["preps"], v["lines"]
        by_cat: dict[str, list[int]] = {}
        for k, c in enumerate(self.cat):
            by_cat.setdefault(c, []).append(k)
        self.dishes = []
        for d in v["dishes"]:
            extras: list[int] = []
            for e in d["extras"]:
                for k in by_cat[e[1:]] if e.startswith("@") else [idx[e]]:
                    if k not in extras:
                        extras.append(k)
            mains = [idx[m] for m in d["mains"]]
            self.dishes.append({
                "name": d["name"], "mains": mains,
                "main_cum": list(accumulate(1.0 / (r + 1) ** 1.4 for r in range(len(mains)))),
                "staples": [idx[s] for s in d["staples"]], "extras": extras,
                "variants": [(t, [idx[x] for x in xs]) for t, xs in d.get("variants", ())],
                "steps": _step_selections(d["family"]), "plain": d.get("plain", 0.0), "prefix": d.get("prefix", False),
            })
        self.dish_cum = list(accumulate(d["weight"] for d in v["dishes"]))
        self.adjs = [a for a, _ in v["adjectives"]]
        self.adj_cum = list(accumulate(w for _, w in v["adjectives"]))
        self.headers = v["headers"]
        self.butter = idx["butter"]
        # Ingredient lines are drawn from fixed per-ingredient pools (fast, and realistically repetitive).
        self.pools = []
        for k in range(len(ings)):
            prng = Random(f"recipekit-demo-lines:{k}")
            self.pools.append([self.line(prng, k) for _ in range(POOL)])
        self.frag = {t: '{"text": ' + ESC(t) + "}" for pool in self.pools for t in pool}
        self.frag.update((t, '{"text": ' + ESC(t) + "}") for t in self.headers)

    # -- ingredient lines -------------------------------------------------------------
    def line(self, rng: Random, k: int) -> str:
        """One real-looking ingredient line for ingredient ``k`` ("2 cups finely chopped tomatoes")."""
        r, lines = rng.random, self.lines

        def pick(seq):
            return seq[int(r() * len(seq))]

        m, (pre, suf) = lines["measures"][pick(self.measure[k])], self.preps[self.cat[k]]
        pre = self.pre[k] or pre
        prefix = pick(pre) + " " if pre and r() < 0.25 else ""
        suffix = pick(suf) if suf and not prefix and r() < 0.35 else ""
        if r() < 0.04:
            suffix += pick(lines["tails"])
        q, many, unit = "", True, ""
        if "q" in m:
            ascii_q, unicode_q, many = pick(lines["quantities"][m["q"]])
            q = unicode_q if unicode_q and r() < 0.15 else ascii_q
            unit = pick(lines["units"][m["unit"]][many]) if "unit" in m else ""
        size = pick(lines["sizes"]) + " " if m.get("sizes") and r() < 0.3 else ""
        name, plural = self.name[k], self.plural[k]
        return pick(m["forms"]).format(q=q, unit=unit, size=size, prefix=prefix, suffix=suffix, name=name,
                                       plural=plural, noun=plural if many else name)

    # -- one recipe -------------------------------------------------------------------
    def recipe(self, rng: Random):
        """Return (dish, main, chosen ingredients, [(line, ingredient or None)], title, steps)."""
        r = rng.random

        def pick(seq):
            return seq[int(r() * len(seq))]

        di = bisect(self.dish_cum, r() * self.dish_cum[-1])
        dish = self.dishes[di]
        variant = pick(dish["variants"]) if dish["variants"] and r() < 0.25 else None
        main = dish["mains"][bisect(dish["main_cum"], r() * dish["main_cum"][-1])]
        n = 3 + bisect(N_INGR, r() * N_INGR[-1])
        chosen = []
        if variant:
            if r() < 0.7:
                main = variant[1][0]
            chosen += [k for k in variant[1] if k != main and k not in chosen and r() < 0.85]
        chosen += [k for k in dish["staples"] if k != main and k not in chosen and r() < 0.8]
        extras = dish["extras"]
        for _ in range(2 * n):
            if len(chosen) + 1 >= n:
                break
            k = extras[int(r() * len(extras))]
            if k != main and k not in chosen:
                chosen.append(k)
        for k in extras:  # at least three ingredients
            if len(chosen) >= 2:
                break
            if k != main and k not in chosen:
                chosen.append(k)
        chosen.insert(int(r() * min(3, len(chosen) + 1)), main)
        # Title.
        mt, dname = self.title[main], dish["name"]
        if variant:
            core = variant[0] if main == variant[1][0] else f"{mt} {variant[0]}"
        elif r() < dish["plain"]:
            core = dname
        elif dish["prefix"]:
            core = f"roast {mt}" if r() < 0.6 else f"{mt} roast"
        else:
            u = r()
            if u < 0.08:
                second = [self.title[k] for k in chosen if self.cat[k] in TITLED and self.title[k] != mt]
                core = f"{mt} and {pick(second)} {dname}" if second else f"{mt} {dname}"
            elif u < 0.13:
                core = f"{dname} with {mt}"
            else:
                core = f"{mt} {dname}"
        u = r()
        if u < 0.55:
            adjs, cum = self.adjs, self.adj_cum
            a = adjs[bisect(cum, r() * cum[-1])]
            if u < 0.1:
                b = adjs[bisect(cum, r() * cum[-1])]
                a = a if a == b else f"{b} {a}"
            core = f"{a} {core}"
        u = r()
        title = core + (" II" if u < 0.03 else " Recipe" if u < 0.05 else "")
        if r() < 0.88:
            title = _titlecase(title)
        # Ingredient lines (occasionally with a section header).
        pools = self.pools
        lines = [(pools[k][int(r() * POOL)], k) for k in chosen]
        if len(lines) > 4 and r() < 0.04:
            lines.insert(int(2 + r() * (len(lines) - 3)), (pick(self.headers), None))
        # Instructions: a few templates of each phase, filled with this recipe's ingredients.
        plural, cat = self.plural, self.cat
        names = [plural[k] for k in chosen if k != main] or [plural[main]]
        solid = [plural[k] for k in chosen if k != main and cat[k] in SOLID] or names
        p = int(r() * len(names))
        nx = cycle(names[p:] + names[:p]).__next__
        p = int(r() * len(solid))
        nv = cycle(solid[p:] + solid[:p]).__next__
        fat = next((self.name[k] for k in chosen if cat[k] == "oil" or k == self.butter), "oil")
        liquid = next((self.name[k] for k in chosen if cat[k] == "liquid"), "water")
        temp = pick(TEMPS)
        if r() < 0.1:
            temp = temp.replace("°", "&deg;")
        fill = _Fill(main=plural[main], dish=dname, fat=fat, liquid=liquid, temp=temp)
        fill.nx, fill.nv, fill.r = nx, nv, r
        prep, cook, finish = dish["steps"]
        sel = (prep[int(r() * SELECTIONS)], cook[int(r() * SELECTIONS)], finish[int(r() * SELECTIONS)])
        steps = "\x00".join(sel).format_map(fill).split("\x00")
        return di, main, chosen, lines, title, steps


@lru_cache(maxsize=1)
def _model() -> _Model:
    return _Model()


def _dirty(rng: Random, title: str, lines: list, steps: list) -> str:
    """Add one kind of the dirt scraped pages carry (entities, stray or doubled spaces); edits lists in place."""
    kind = rng.choice(("amp", "amp", "apos", "ws_title", "ws_line", "double", "ampamp"))
    if kind == "apos" and "'" in title:
        return title.replace("'", "&#39;")
    if kind in ("amp", "apos", "ampamp"):  # " and " -> " &amp; " (or a double escape) in the title or a line
        ent = " &amp;amp; " if kind == "ampamp" else " &amp; "
        if " and " in title:
            return title.replace(" and ", ent, 1)
        i = next((i for i, (text, _) in enumerate(lines) if " and " in text), None)
        if i is not None:
            lines[i] = (lines[i][0].replace(" and ", ent, 1), lines[i][1])
            return title
        kind = "double"
    if kind == "ws_title":
        return f" {title}  "
    i = int(rng.random() * len(lines if kind == "ws_line" else steps))
    if kind == "ws_line":
        lines[i] = (f"  {lines[i][0]} " if rng.random() < 0.5 else lines[i][0] + " ", lines[i][1])
        return title
    steps[i] = steps[i].replace(" ", "  ", 1) + (" " if rng.random() < 0.5 else "")
    return title


def _unique_id(key: str, taken: set) -> str:
    """10 hex digits of SHA-1(key), re-hashed on a collision (40 bits: about one per million ids)."""
    uid, a = hashlib.sha1(key.encode()).digest()[:5].hex(), 0
    while uid in taken:
        a += 1
        uid = hashlib.sha1(f"{key}:{a}".encode()).digest()[:5].hex()
    taken.add(uid)
    return uid


def iter_recipes(recipes: int, *, seed: int = 0, image_fraction: float = 0.5, det_fraction: float = 0.3,
                 max_images: int = 3) -> Iterator[DemoRecipe]:
    """Yield the demo corpus' recipes in order, without writing anything."""
    model = _model()
    frag = model.frag
    rng = Random()
    r = rng.random
    recipe_ids: set[str] = set()
    image_ids: set[str] = set()
    for i in range(recipes):
        rid = _unique_id(f"recipekit-demo:{seed}:{i}", recipe_ids)
        if i % BLOCK == 0:  # seeding costs microseconds: one stream per block of recipes
            block = hashlib.sha1(f"recipekit-demo-block:{seed}:{i // BLOCK}".encode()).digest()
            rng.seed(int.from_bytes(block[:8], "big"))
        di, main, chosen, lines, title, steps = model.recipe(rng)
        if r() < 0.06:
            title = _dirty(rng, title, lines, steps)
        images: tuple = ()
        if r() < image_fraction:
            n = 1
            while n < max_images and r() < 0.3:
                n += 1
            images = tuple(_unique_id(f"recipekit-demo-img:{seed}:{rid}:{k}", image_ids) + ".jpg" for k in range(n))
        # Like Recipe1M's layer1, every recipe (with photos or not) has a partition, ~70/15/15 by id.
        h = zlib.crc32(rid.encode()) % 100
        partition = "train" if h < 70 else "val" if h < 85 else "test"
        det = None
        if r() < det_fraction:
            texts, valid = [], []
            for text, k in lines:
                ok = k is not None and r() >= 0.02  # real det_ingrs misses some lines
                texts.append({"text": model.name[k] if ok else " ".join(text.split())})
                valid.append(ok)
            det = {"id": rid, "ingredients": texts, "valid": valid}
        url = f"{URL}/recipe/{rid}"
        ingr_json = ", ".join([frag.get(t) or '{"text": ' + ESC(t) + "}" for t, _ in lines])
        step_json = ", ".join(['{"text": ' + ESC(s) + "}" for s in steps])
        text = (f'{{"id": "{rid}", "title": {ESC(title)}, "ingredients": [{ingr_json}], '
                f'"instructions": [{step_json}], "partition": "{partition}", "url": "{url}"}}')
        yield DemoRecipe(rid, partition, text, images, det, di, main, tuple(chosen))


class _ArrayWriter:
    """Stream JSON-encoded elements into a top-level array, one element a line."""

    def __init__(self, path: Path):
        self.fh = open(path, "w", encoding="utf-8", newline="\n", buffering=1 << 20)  # noqa: SIM115
        self.n = 0

    def add(self, text: str) -> None:
        self.fh.write((",\n" if self.n else "[\n") + text)
        self.n += 1

    def close(self) -> None:
        self.fh.write("\n]\n" if self.n else "[]\n")
        self.fh.close()


def _check(name, value, lo, hi=None, kind=int):
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
        raise TypeError(f"{name} must be {'a number' if kind is float else 'an int'}, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        raise ValueError(f"{name} must be in [{lo}, {hi if hi is not None else 'inf'}], got {value!r}")


def write_demo_corpus(out, *, recipes: int = 1000, seed: int = 0, image_fraction: float = 0.5,
                      det_fraction: float = 0.3, image_size: int = 256, max_images: int = 3,
                      workers: int = 1, quiet: bool = True) -> dict:
    """Write a synthetic Recipe1M-layout corpus into ``out`` and return its counts.

    Returns ``{"recipes", "with_images", "images", "det_ingrs", "train", "val", "test"}``.
    Every JSON file and image is written to ``<name>.tmp-<pid>`` and renamed into place;
    the JSON files are renamed last, once every image is on disk.
    """
    _check("recipes", recipes, 0)
    _check("seed", seed, -(2**63))
    _check("image_fraction", image_fraction, 0, 1, float)
    _check("det_fraction", det_fraction, 0, 1, float)
    _check("image_size", image_size, 16, 4096)
    _check("max_images", max_images, 1)
    _check("workers", workers, 1)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = ("layer1.json", "layer2.json", "det_ingrs.json")
    tmps = [out / f"{n}.tmp-{os.getpid()}" for n in names]
    counts = dict.fromkeys(("recipes", "with_images", "images", "det_ingrs", "train", "val", "test"), 0)
    encode = json.JSONEncoder(ensure_ascii=False).encode
    writers: list[_ArrayWriter] = []
    renderer = None
    try:
        writers = [_ArrayWriter(t) for t in tmps]
        layer1, layer2, det_w = writers
        renderer = ImageWriter(str(out), seed, image_size, workers)
        step = max(1, min(100_000, recipes // 10))
        for i, rec in enumerate(iter_recipes(recipes, seed=seed, image_fraction=image_fraction,
                                             det_fraction=det_fraction, max_images=max_images)):
            layer1.add(rec.layer1)
            rid, partition = rec.id, rec.partition
            counts[partition] += 1
            if rec.images:
                layer2.add(encode({"id": rid, "images": [{"id": m, "url": f"{URL}/images/{m}"} for m in rec.images]}))
                counts["with_images"] += 1
                counts["images"] += len(rec.images)
                for m in rec.images:
                    renderer.add((image_rel_path(partition, m), m, rec.dish, rec.main, rec.ingredients))
            if rec.det is not None:
                det_w.add(encode(rec.det))
                counts["det_ingrs"] += 1
            if not quiet and (i + 1) % step == 0:
                log.info("demo-data: %d/%d recipes, %d images", i + 1, recipes, counts["images"])
        counts["recipes"] = recipes
        renderer.finish()
        for w in writers:
            w.close()
        for t, n in zip(tmps, names, strict=True):
            os.replace(t, out / n)
    except BaseException:
        if renderer is not None:
            renderer.abort()
        for w in writers:
            if not w.fh.closed:
                w.fh.close()
        for t in tmps:
            if t.exists():
                t.unlink()
        raise
    if not quiet:
        log.info("demo-data: wrote %s to %s", counts, out)
    return counts
