"""Stage `word2vec`: gensim Word2Vec on the train partition's text.

The corpus, one sentence per line, is each train recipe's title, its ingredient
names (multi-word names joined with ``_``: ``olive_oil``) and each instruction
with those names joined the same way, tokenised by :mod:`.tokenize`. Defaults
follow im2recipe's word2vec run (skip-gram, hierarchical softmax without
negative sampling, window 10, 300 dimensions, min_count 10, 10 epochs); the ``fast``
preset (:data:`PRESETS`) trains CBOW with negative sampling for 5 epochs instead, several
times faster (docs/benchmarks.md measures both, how far apart their neighbours are, and
what the preset costs a retrieval model trained on it: about 7-8 points of R@10).
The corpus file is tokenised by the stage's workers (runs of recipes in parallel, written
in order: the same bytes as one process), then gensim trains from it so that every worker
thread is busy.

With more than one worker gensim's result depends on thread scheduling; use
``workers=1`` when you need bit-identical vectors.

Storage: ``word2vec/vectors.npy`` (float32 ``[words, dim]``, a plain NumPy array read with
``allow_pickle=False``) and ``word2vec/vocab.txt`` (the words in row order). Neither can run
code when loaded, so a prepared folder from someone else is safe to train on. Folders of older
versions hold ``word2vec/word2vec.kv``, a gensim pickle: :func:`load_vectors` reads it only
with ``allow_pickle=True`` (for a folder you made yourself), else it says to re-run prepare.
"""

from __future__ import annotations

import io
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from tqdm import tqdm

from recipekit.core.io import TMP_MARK, atomic_dir, atomic_path

from .progress import bar_disabled
from .stagekit import Stage, StageContext, run_stage
from .stageparams import StageParams, positive_ints, require
from .tablestream import iter_aligned, num_rows
from .tokenize import ingredient_token, tokenize, underscore_ingredients

__all__ = ["PRESETS", "Word2VecParams", "STAGE", "VECTORS_FILE", "VOCAB_FILE", "PICKLE_FILE", "word2vec", "write_corpus",
           "write_corpus_files", "load_vectors", "load_vocab", "save_vectors", "UnsafeArtefactError"]

VECTORS_FILE = "vectors.npy"
VOCAB_FILE = "vocab.txt"
PICKLE_FILE = "word2vec.kv"  # older versions' gensim pickle: read only with allow_pickle=True


class UnsafeArtefactError(ValueError):
    """An artefact in a format that can run code when loaded, refused without an explicit opt-in."""


@dataclass(frozen=True)
class Word2VecParams(StageParams):
    """The `word2vec` stage's settings (``prepare --set word2vec.KEY=VALUE``): gensim's arguments."""

    vector_size: int = 300
    window: int = 10
    min_count: int = 10
    epochs: int = 10
    sg: int = 1  # skip-gram
    hs: int = 1  # hierarchical softmax
    negative: int = 0  # no negative sampling
    seed: int = 1234

    def __post_init__(self) -> None:
        positive_ints(self, "word2vec", "vector_size", "window", "min_count", "epochs")
        positive_ints(self, "word2vec", "negative", minimum=0)
        for key in ("sg", "hs"):
            require(self, "word2vec", getattr(self, key) in (0, 1) and not isinstance(getattr(self, key), bool),
                    key, "0 or 1")
        require(self, "word2vec", isinstance(self.seed, int) and not isinstance(self.seed, bool), "seed", "an integer")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> Word2VecParams:
        """The settings of preset ``name`` (:data:`PRESETS`), with ``overrides`` (None values ignored)."""
        if name not in PRESETS:
            raise ValueError(f"unknown word2vec preset {name!r} (expected one of {', '.join(PRESETS)})")
        return cls(**{**PRESETS[name], **{k: v for k, v in overrides.items() if v is not None}})


# `im2recipe`: the original word2vec run's settings (the default). `fast`: CBOW with 5 negative
# samples and 5 epochs; docs/benchmarks.md ("word2vec at scale") has its speed and how close
# its nearest ingredients are to im2recipe's.
PRESETS: dict[str, dict[str, int]] = {
    "im2recipe": {},
    "fast": {"sg": 0, "hs": 0, "negative": 5, "epochs": 5},
}


def _write_sentences(fh, rows, counts: dict[str, int]) -> None:
    """Write the sentences of ``(title, instructions, names)`` rows; add to ``counts``."""
    for title, instructions, names in rows:
        names = names or []
        lines = [tokenize(title)]
        if names:
            lines.append([ingredient_token(n) for n in names])
        lines.extend(tokenize(underscore_ingredients(step, names)) for step in instructions)
        for toks in lines:
            if toks:
                fh.write(" ".join(toks))
                fh.write("\n")
                counts["sentences"] += 1
                counts["tokens"] += len(toks)


def write_corpus(recipes: pl.DataFrame, ingredients: pl.DataFrame, path: Path, quiet: bool = True) -> dict[str, int]:
    """Write the train corpus (one tokenised sentence a line) to ``path``, from whole frames."""
    train = (
        recipes.filter(pl.col("partition") == "train")
        .select("id", "title", "instructions")
        .join(ingredients.select("id", pl.col("ingredients").alias("names")), on="id", how="left", maintain_order="left")
    )
    counts = {"train_recipes": train.height, "sentences": 0, "tokens": 0}
    with open(path, "w", encoding="utf-8") as fh:
        rows = train.select("title", "instructions", "names").iter_rows()
        _write_sentences(fh, tqdm(rows, total=train.height, desc="word2vec corpus", disable=bar_disabled(quiet)), counts)
    return counts


TOKENISE_ROWS = 5_000  # recipes per tokenising task


def _sentences(rows: list[tuple]) -> tuple[str, int, int]:
    """A worker's task: the corpus lines of ``rows``, with their sentence and token counts."""
    buf = io.StringIO()
    counts = {"sentences": 0, "tokens": 0}
    _write_sentences(buf, rows, counts)
    return buf.getvalue(), counts["sentences"], counts["tokens"]


def write_corpus_files(
    out: Path, path: Path, quiet: bool = True, rows: int | None = None, executor: Any = None
) -> dict[str, int]:
    """:func:`write_corpus` from ``out/recipes.parquet`` and ``out/ingredients.parquet``, read in
    step ``rows`` recipes at a time (default ``tablestream.CHUNK_ROWS``): the same file, in
    bounded memory. With an ``executor`` (:mod:`.backends`), runs of :data:`TOKENISE_ROWS` recipes
    are tokenised by its workers and written here in order: the same bytes."""
    counts = {"train_recipes": 0, "sentences": 0, "tokens": 0}
    specs = [(out / "recipes.parquet", ["partition", "title", "instructions"]),
             (out / "ingredients.parquet", ["ingredients"])]

    def runs():
        for recipes, names in iter_aligned(specs, rows):
            train = pl.concat([recipes, names], how="horizontal").filter(pl.col("partition") == "train")
            counts["train_recipes"] += train.height
            for start in range(0, train.height, TOKENISE_ROWS):
                part = train.slice(start, TOKENISE_ROWS)
                yield part.select("title", "instructions", "ingredients").rows()
            bar.update(recipes.height)

    with open(path, "w", encoding="utf-8") as fh, tqdm(total=num_rows(specs[0][0]), desc="word2vec corpus",
                                                       disable=bar_disabled(quiet)) as bar:
        blocks = executor.imap(_sentences, runs(), describe=lambda r: f"{len(r)} recipes") if executor else map(
            _sentences, runs())
        for text, sentences, tokens in blocks:
            fh.write(text)
            counts["sentences"] += sentences
            counts["tokens"] += tokens
    return counts


def _run(ctx: StageContext) -> dict[str, Any]:
    from gensim.models import Word2Vec  # heavy import, only where needed

    out = ctx.out
    params = Word2VecParams.from_manifest(ctx.params)
    corpus = out / f"word2vec-corpus.txt{TMP_MARK}{os.getpid()}"  # scratch; removed below or on re-run
    try:
        stats = write_corpus_files(out, corpus, ctx.quiet, executor=ctx.executor)
        if stats["tokens"] == 0:
            raise ValueError(f"{out / 'recipes.parquet'}: no train recipes to train word2vec on")
        ctx.log(f"word2vec: {stats['tokens']:,} tokens in {stats['sentences']:,} sentences, {ctx.workers} workers")
        model = Word2Vec(corpus_file=str(corpus), workers=ctx.workers, **asdict(params))
    finally:
        corpus.unlink(missing_ok=True)
    kv = model.wv
    if len(kv.index_to_key) == 0:
        raise ValueError(f"word2vec: no word occurs min_count={params.min_count} times; lower --w2v-min-count")
    with atomic_dir(out / "word2vec") as tmp:
        save_vectors(tmp, kv.index_to_key, kv.vectors)
    return {**stats, "vocabulary": len(kv.index_to_key), "vector_size": kv.vector_size}


STAGE = Stage(
    name="word2vec",
    run=_run,
    out_inputs=("recipes.parquet", "ingredients.parquet"),
    outputs=(f"word2vec/{VECTORS_FILE}", f"word2vec/{VOCAB_FILE}"),
    description="gensim word2vec on train titles, ingredients and instructions",
    params=Word2VecParams,
)


def word2vec(
    out: str | os.PathLike, *, params: Word2VecParams | None = None, workers: int = 1, force: bool = False, quiet: bool = True
):
    """Run the `word2vec` stage on a prepared OUT (after `ingredients`)."""
    params = params or Word2VecParams()
    return run_stage(STAGE, src=None, out=out, params=params.manifest(), workers=workers, force=force, quiet=quiet)


def save_vectors(folder: str | os.PathLike, words: list[str], vectors: np.ndarray) -> None:
    """Write ``folder/vectors.npy`` and ``folder/vocab.txt`` (atomically each)."""
    folder = Path(folder)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != len(words):
        raise ValueError(f"{folder}: {len(words)} words but vectors of shape {vectors.shape}")
    with atomic_path(folder / VECTORS_FILE) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, vectors, allow_pickle=False)
    with atomic_path(folder / VOCAB_FILE) as tmp:
        tmp.write_text("".join(w + "\n" for w in words), encoding="utf-8")


def _vectors_folder(path: Path) -> Path:
    """``path`` is OUT, OUT/word2vec, or a file in OUT/word2vec: the word2vec folder."""
    if path.is_file() or path.suffix in (".npy", ".kv"):
        return path.parent
    return path / "word2vec" if (path / "word2vec").is_dir() else path


def load_vectors(out: str | os.PathLike, *, allow_pickle: bool = False):
    """The trained vectors as gensim ``KeyedVectors``, from ``vectors.npy`` and ``vocab.txt``.

    ``out``: a prepared folder, its ``word2vec`` folder or a file in it. A folder of an older
    version (only ``word2vec.kv``, a pickle that can run code) is read only with
    ``allow_pickle=True``; otherwise :class:`UnsafeArtefactError` says what to do."""
    from gensim.models import KeyedVectors  # deferred: heavy, and only for the older pickle format

    folder = _vectors_folder(Path(out))
    npy, legacy = folder / VECTORS_FILE, folder / PICKLE_FILE
    if npy.is_file():
        try:
            vectors = np.load(npy, allow_pickle=False)
        except ValueError as exc:
            raise ValueError(f"{npy}: not a plain array of word vectors ({exc})") from None
        words = load_vocab(folder)
        if vectors.ndim != 2 or vectors.shape[0] != len(words):
            raise ValueError(f"{npy}: vectors of shape {vectors.shape} do not match the {len(words)} words of "
                             f"{folder / VOCAB_FILE}")
        kv = KeyedVectors(vector_size=int(vectors.shape[1]), dtype=np.float32)
        kv.add_vectors(words, vectors.astype(np.float32, copy=False))
        return kv
    if legacy.is_file():
        if not allow_pickle:
            raise UnsafeArtefactError(
                f"{legacy}: a gensim pickle, which can run code when loaded; re-run `recipekit prepare` on this "
                f"folder to store the vectors as {VECTORS_FILE}, or, only for a folder you made yourself, allow it "
                "(allow_pickle=True; data.allow_pickle = true in a training config)")
        return KeyedVectors.load(str(legacy))
    raise FileNotFoundError(f"{npy}: missing (the word2vec stage of `recipekit prepare` writes it)")


def load_vocab(out: str | os.PathLike) -> list[str]:
    """Words in id order; token id = index + 2 (0 = padding, 1 = unknown word)."""
    return (_vectors_folder(Path(out)) / VOCAB_FILE).read_text(encoding="utf-8").splitlines()
