"""Stage `classes`: semantic class labels from titles, the way im2recipe built its 1,048.

1. Titles are tokenised and lower-cased, stop words (spaCy's English list) removed;
   bigrams of adjacent remaining tokens are counted over the *train* titles.
2. The ``top_bigrams`` most frequent are walked in order, skipping bigrams with
   punctuation, digits or banned non-food words (easy, best, quick, ...). Each
   takes the recipes whose title contains it and that have no class yet; it is
   kept as a class if more than ``min_train`` of those are in train and at least
   one is in val and one in test, else they return to the pool. At most
   ``max_classes`` bigram classes.
3. The Food-101 category names not yet classes go through the same rule.
4. Everything else is class 0, background.

Differences from im2recipe's script, on purpose: bigrams never span two titles
(its titles were concatenated before counting); matching is on whole tokens with
a trailing plural ``s`` ignored ("pie" no longer matches "pineapple pie" or
"pies" vs "pie" split a class); ``min_train`` scales with corpus size unless set.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

from array import array

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from recipekit.core.io import atomic_path

from ._spacy import import_spacy
from .parse import PARTITIONS
from .stagekit import Stage, StageContext, run_stage
from .stageparams import StageParams, positive_ints, require
from .tablestream import iter_aligned
from .tokenize import tokenize

__all__ = ["STAGE", "ClassesParams", "classes", "BANNED_WORDS", "food101_names", "title_keys", "assign_classes", "auto_min_train"]

# Words that describe how a dish is made or sold, not what it is (our own list).
BANNED_WORDS = frozenset(
    """easy easiest best ever quick quickest simple simply super perfect perfectly homemade home
    recipe recipes style classic favorite favourite famous amazing awesome delicious yummy tasty
    ultimate healthy healthier skinny lighter light low fat free slow fast minute minutes hour
    new old mom mom's moms grandma grandma's grandmas granny nana aunt aunt's uncle chef man men
    poor year weeknight make ahead copycat inspired version ii iii i n e de la le con lo ww
    world's worlds really good great fantastic fabulous wonderful killer crazy""".split()
)

_PUNCT_OR_DIGIT = re.compile(r"[^\w]|\d")
_CLASSES_SCHEMA = pa.schema([("id", pa.large_string()), ("partition", pa.large_string()), ("class_id", pa.int32()),
                             ("class_name", pa.large_string())])
_CJK_RE = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]")


@dataclass(frozen=True)
class ClassesParams(StageParams):
    """The `classes` stage's settings (``prepare --set classes.KEY=VALUE``)."""

    top_bigrams: int = 2000  # most frequent title bigrams considered
    max_classes: int = 1000  # classes kept, at most
    min_train: int | None = None  # train recipes a class needs; None: scaled to the corpus (auto_min_train)
    food101: bool = True  # add Food-101 category names as classes

    def __post_init__(self) -> None:
        positive_ints(self, "classes", "top_bigrams", "max_classes")
        if self.min_train is not None:
            positive_ints(self, "classes", "min_train", minimum=0)
        require(self, "classes", isinstance(self.food101, bool), "food101", "true or false")


def auto_min_train(n_train: int) -> int:
    """im2recipe kept classes with more than 20 train recipes out of ~280k; scale that,
    between 2 and 20, for smaller corpora."""
    return int(min(20, max(2, round(n_train * 20 / 280_000))))


def _norm(token: str) -> str:
    if len(token) > 3 and token.endswith("s") and not token.endswith(("ss", "us", "is")):
        return token[:-1]
    return token


def title_keys(title: str, stop_words: frozenset[str]) -> list[str]:
    """Normalised content tokens of a title (stop words out, trailing plural s dropped)."""
    return [_norm(t) for t in tokenize(title) if t not in stop_words]


def food101_names() -> list[str]:
    text = resources.files("recipekit.pipeline").joinpath("data/food101.txt").read_text(encoding="utf-8")
    return [line.strip().replace("_", " ") for line in text.splitlines() if line.strip()]


def _bigram_rows(keys: list[list[str]]) -> tuple[list[int], list[str]]:
    rows, grams = [], []
    for r, ks in enumerate(keys):
        for a, b in zip(ks, ks[1:]):
            if not (_PUNCT_OR_DIGIT.search(a) or _PUNCT_OR_DIGIT.search(b) or a in BANNED_WORDS or b in BANNED_WORDS):
                rows.append(r)
                grams.append(f"{a}{b}" if _CJK_RE.match(a[-1]) and _CJK_RE.match(b[0]) else f"{a} {b}")
    return rows, grams


def _phrase_rows(keys: list[list[str]], index: dict[tuple, int], lengths: list[int]) -> tuple[list[int], list[int]]:
    """(recipe row, phrase index) for each title containing a phrase of ``index`` as consecutive keys."""
    rows, hits = [], []
    for r, ks in enumerate(keys):
        found = set()
        for n in lengths:
            for j in range(len(ks) - n + 1):
                i = index.get(tuple(ks[j : j + n]))
                if i is not None and i not in found:
                    found.add(i)
                    rows.append(r)
                    hits.append(i)
    return rows, hits


class _TitlePairs:
    """What the class rule needs of the titles, gathered chunk by chunk in compact arrays:
    (recipe row, bigram id) once per title and bigram, and (recipe row, extra-name index)
    for each extra name (Food-101) a title contains. Memory: the distinct bigrams plus a
    few bytes per recipe, whatever the corpus size."""

    def __init__(self, stop_words: frozenset[str], extra_names: list[str]):
        self.stop_words, self.extra_names = stop_words, list(extra_names)
        self.phrases = [title_keys(e, stop_words) for e in self.extra_names]
        # As im2recipe's rule did with one query per name: equal phrases hit the last of them.
        self.index = {tuple(p): i for i, p in enumerate(self.phrases)}
        self.lengths = sorted({len(p) for p in self.phrases})
        self.gram_ids: dict[str, int] = {}
        self.rows, self.grams = array("i"), array("i")
        self.prows, self.pidx = array("i"), array("i")
        self.n = 0

    def add(self, keys: list[list[str]]) -> None:
        rows, grams = _bigram_rows(keys)
        ids, last, seen = self.gram_ids, -1, set()
        for r, g in zip(rows, grams):
            if r != last:
                last, seen = r, set()
            i = ids.get(g)
            if i is None:
                i = ids[g] = len(ids)
            if i not in seen:  # a title counts a bigram once
                seen.add(i)
                self.rows.append(self.n + r)
                self.grams.append(i)
        prow, pidx = _phrase_rows(keys, self.index, self.lengths)
        self.prows.extend(self.n + r for r in prow)
        self.pidx.extend(pidx)
        self.n += len(keys)

    def assign(self, partitions: np.ndarray, *, top_bigrams: int, max_classes: int,
               min_train: int) -> tuple[np.ndarray, list[str]]:
        rows = np.frombuffer(self.rows, dtype=np.int32) if len(self.rows) else np.zeros(0, np.int32)
        grams = np.frombuffer(self.grams, dtype=np.int32) if len(self.grams) else np.zeros(0, np.int32)
        n_train = np.bincount(grams[partitions[rows] == 0], minlength=len(self.gram_ids))
        ranked = (
            pl.DataFrame({"gram": list(self.gram_ids), "n": n_train}, schema={"gram": pl.String, "n": pl.Int64})
            .with_row_index("gid")
            .filter(pl.col("n") > 0)
            .sort(["n", "gram"], descending=[True, False])
            .head(top_bigrams)
        )
        rank_of = np.full(len(self.gram_ids), -1, dtype=np.int64)
        rank_of[ranked.get_column("gid").to_numpy()] = np.arange(ranked.height)
        ranks = rank_of[grams]
        keep = ranks >= 0
        ranks, members_all = ranks[keep], rows[keep].astype(np.int64)
        order = np.lexsort((members_all, ranks))
        ranks, members_all = ranks[order], members_all[order]
        names = ["background"]
        labels = np.zeros(self.n, dtype=np.int32)

        def try_class(name: str, members: np.ndarray) -> None:
            members = members[labels[members] == 0]
            counts = np.bincount(partitions[members], minlength=3)
            if counts[0] > min_train and counts[1] > 0 and counts[2] > 0:
                names.append(name)
                labels[members] = len(names) - 1

        splits = np.flatnonzero(np.diff(ranks)) + 1
        grams_by_rank = ranked.get_column("gram").to_list()
        for rank_rows, first in zip(np.split(members_all, splits), np.concatenate([[0], splits]).astype(np.int64)):
            if len(names) > max_classes or not len(rank_rows):
                break
            try_class(grams_by_rank[ranks[first]], rank_rows)
        # Then the extra (Food-101) names that are not classes yet.
        taken = set(names)
        prow = np.frombuffer(self.prows, dtype=np.int32).astype(np.int64) if len(self.prows) else np.zeros(0, np.int64)
        pidx = np.frombuffer(self.pidx, dtype=np.int32) if len(self.pidx) else np.zeros(0, np.int32)
        for i, (name, phrase) in enumerate(zip(self.extra_names, self.phrases)):
            if " ".join(phrase) not in taken:
                try_class(name, prow[pidx == i])
        return labels, names


def assign_classes(
    keys: list[list[str]],
    partitions: np.ndarray,
    *,
    stop_words: frozenset[str],
    top_bigrams: int = 2000,
    max_classes: int = 1000,
    min_train: int = 20,
    extra_names: list[str] = (),
) -> tuple[np.ndarray, list[str]]:
    """Class id per recipe (0 = background) and class names (index 0 = ``background``).

    ``keys``: :func:`title_keys` of each title; ``partitions``: 0/1/2 for train/val/test.
    """
    pairs = _TitlePairs(stop_words, list(extra_names))
    pairs.add(keys)
    return pairs.assign(np.asarray(partitions), top_bigrams=top_bigrams, max_classes=max_classes, min_train=min_train)


def _run(ctx: StageContext) -> dict[str, Any]:
    """Two passes over recipes.parquet in chunks: the titles' bigrams and extra names, then the
    labels written beside each chunk's ids (memory: see :class:`_TitlePairs`)."""
    import_spacy()  # deferred: spaCy is heavy, and imported with torch hidden (._spacy)
    from spacy.lang.en.stop_words import STOP_WORDS

    out = ctx.out
    p = ClassesParams.from_manifest(ctx.params)
    part_code = {name: i for i, name in enumerate(PARTITIONS)}
    stop_words = frozenset(STOP_WORDS)
    pairs = _TitlePairs(stop_words, food101_names() if p.food101 else [])
    parts = []
    for (chunk,) in iter_aligned([(out / "recipes.parquet", ["partition", "title"])]):
        parts.append(chunk.get_column("partition").replace_strict(part_code, return_dtype=pl.Int8).to_numpy())
        pairs.add([title_keys(t, stop_words) for t in chunk.get_column("title").to_list()])
    partitions = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int8)
    n_train = int((partitions == 0).sum())
    min_train = p.min_train if p.min_train is not None else auto_min_train(n_train)
    labels, names = pairs.assign(partitions, top_bigrams=p.top_bigrams, max_classes=p.max_classes, min_train=min_train)
    del pairs
    with atomic_path(out / "recipe_classes.parquet") as tmp:
        done = 0
        with pq.ParquetWriter(tmp, _CLASSES_SCHEMA, compression="zstd", write_statistics=False) as writer:
            for (chunk,) in iter_aligned([(out / "recipes.parquet", ["id", "partition"])]):
                got = labels[done : done + chunk.height]
                done += chunk.height
                writer.write_table(chunk.with_columns(
                    pl.Series("class_id", got, dtype=pl.Int32),
                    pl.Series("class_name", [names[i] for i in got], dtype=pl.String),
                ).to_arrow().cast(_CLASSES_SCHEMA))
    with atomic_path(out / "classes.json") as tmp:
        tmp.write_text(json.dumps({str(i): n for i, n in enumerate(names)}, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    coverage = {
        f"coverage_{name}": round(float((labels[partitions == code] > 0).mean()) if (partitions == code).any() else 0.0, 4)
        for name, code in part_code.items()
    }
    return {"classes": len(names) - 1, "min_train": min_train, "labelled": int((labels > 0).sum()), **coverage}


STAGE = Stage(
    name="classes",
    run=_run,
    out_inputs=("recipes.parquet",),
    outputs=("classes.json", "recipe_classes.parquet"),
    description="class labels from frequent title bigrams and Food-101 names",
    params=ClassesParams,
)


def classes(
    out: str | os.PathLike,
    *,
    params: ClassesParams | None = None,
    force: bool = False,
    quiet: bool = True,
):
    """Run the `classes` stage on a prepared OUT (after `parse`)."""
    params = params or ClassesParams()
    return run_stage(STAGE, src=None, out=out, params=params.manifest(), force=force, quiet=quiet)
