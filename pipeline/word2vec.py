"""Stage `word2vec`: gensim Word2Vec on the train partition's text.

The corpus, one sentence per line, is each train recipe's title, its ingredient
names (multi-word names joined with ``_``: ``olive_oil``) and each instruction
with those names joined the same way, tokenised by :mod:`.tokenize`. Defaults
follow im2recipe's word2vec run (skip-gram, hierarchical softmax without
negative sampling, window 10, 300 dimensions, min_count 10, 10 epochs). gensim
trains from a corpus file so that every worker thread is busy.

With more than one worker gensim's result depends on thread scheduling; use
``workers=1`` when you need bit-identical vectors.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import polars as pl
from tqdm import tqdm

from .stagekit import TMP_MARK, Stage, StageContext, atomic_dir, run_stage
from .tokenize import ingredient_token, tokenize, underscore_ingredients

__all__ = ["Word2VecParams", "STAGE", "word2vec", "write_corpus", "load_vectors", "load_vocab"]


@dataclass(frozen=True)
class Word2VecParams:
    vector_size: int = 300
    window: int = 10
    min_count: int = 10
    epochs: int = 10
    sg: int = 1  # skip-gram
    hs: int = 1  # hierarchical softmax
    negative: int = 0  # no negative sampling
    seed: int = 1234


def write_corpus(recipes: pl.DataFrame, ingredients: pl.DataFrame, path: Path, quiet: bool = True) -> dict[str, int]:
    """Write the train corpus (one tokenised sentence a line) to ``path``."""
    train = (
        recipes.filter(pl.col("partition") == "train")
        .select("id", "title", "instructions")
        .join(ingredients.select("id", pl.col("ingredients").alias("names")), on="id", how="left", maintain_order="left")
    )
    sentences = tokens = 0
    with open(path, "w", encoding="utf-8") as fh:
        for title, instructions, names in tqdm(
            train.select("title", "instructions", "names").iter_rows(), total=train.height, desc="word2vec corpus", disable=quiet
        ):
            names = names or []
            lines = [tokenize(title)]
            if names:
                lines.append([ingredient_token(n) for n in names])
            lines.extend(tokenize(underscore_ingredients(step, names)) for step in instructions)
            for toks in lines:
                if toks:
                    fh.write(" ".join(toks))
                    fh.write("\n")
                    sentences += 1
                    tokens += len(toks)
    return {"train_recipes": train.height, "sentences": sentences, "tokens": tokens}


def _run(ctx: StageContext) -> dict[str, Any]:
    from gensim.models import Word2Vec  # heavy import, only where needed

    out = ctx.out
    params = Word2VecParams(**ctx.params)
    recipes = pl.read_parquet(out / "recipes.parquet", columns=["id", "partition", "title", "instructions"])
    ingredients = pl.read_parquet(out / "ingredients.parquet", columns=["id", "ingredients"])
    corpus = out / f"word2vec-corpus.txt{TMP_MARK}{os.getpid()}"  # scratch; removed below or on re-run
    try:
        stats = write_corpus(recipes, ingredients, corpus, ctx.quiet)
        if stats["tokens"] == 0:
            raise ValueError(f"{out / 'recipes.parquet'}: no train recipes to train word2vec on")
        ctx.log(f"word2vec: {stats['tokens']:,} tokens in {stats['sentences']:,} sentences, {ctx.workers} workers")
        model = Word2Vec(corpus_file=str(corpus), workers=ctx.workers, **asdict(params))
    finally:
        corpus.unlink(missing_ok=True)
    kv = model.wv
    if len(kv.index_to_key) == 0:
        raise ValueError(f"word2vec: no word occurs min_count={params.min_count} times; lower --w2v-min-count")
    kv.lifecycle_events = None  # gensim would pickle save times and paths: keep the file reproducible
    with atomic_dir(out / "word2vec") as tmp:
        # separately=[]: one self-contained file, whatever the vocabulary size.
        kv.save(str(tmp / "word2vec.kv"), separately=[])
        (tmp / "vocab.txt").write_text("".join(w + "\n" for w in kv.index_to_key), encoding="utf-8")
    return {**stats, "vocabulary": len(kv.index_to_key), "vector_size": kv.vector_size}


STAGE = Stage(
    name="word2vec",
    run=_run,
    out_inputs=("recipes.parquet", "ingredients.parquet"),
    outputs=("word2vec/word2vec.kv", "word2vec/vocab.txt"),
    description="gensim word2vec on train titles, ingredients and instructions",
)


def word2vec(
    out: str | os.PathLike, *, params: Word2VecParams | None = None, workers: int = 1, force: bool = False, quiet: bool = True
):
    """Run the `word2vec` stage on a prepared OUT (after `ingredients`)."""
    params = params or Word2VecParams()
    return run_stage(STAGE, src=None, out=out, params=asdict(params), workers=workers, force=force, quiet=quiet)


def load_vectors(out: str | os.PathLike):
    """The trained gensim ``KeyedVectors``."""
    from gensim.models import KeyedVectors

    return KeyedVectors.load(str(Path(out) / "word2vec" / "word2vec.kv"))


def load_vocab(out: str | os.PathLike) -> list[str]:
    """Words in id order; token id = index + 2 (0 = padding, 1 = unknown word)."""
    return (Path(out) / "word2vec" / "vocab.txt").read_text(encoding="utf-8").splitlines()
