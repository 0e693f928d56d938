"""Stage `ingredients`: one list of canonical ingredient names per recipe.

Where ``det_ingrs.json`` had an entry for a recipe its valid-flagged names are
used (as im2recipe did); every other recipe gets names extracted from its raw
lines by :mod:`.ingredient_names`. Lines repeat a great deal across a corpus
("1 cup sugar"), so the distinct lines are extracted once, in parallel (over
``workers`` processes, or Ray tasks: :mod:`.backends`), and joined back.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import polars as pl
import pyarrow.parquet as pq
from tqdm import tqdm

from recipekit.core.io import atomic_path

from .progress import bar_disabled
from .backends import Executor, PoolExecutor
from .ingredient_names import EXTRACTORS, IngredientExtractor
from .stagekit import Stage, StageContext, run_stage
from .stageparams import StageParams, require
from .tablestream import iter_aligned

__all__ = ["STAGE", "IngredientsParams", "ingredients", "canonical_lists", "assemble", "vocabulary"]

MIN_CHUNK, MAX_CHUNK = 500, 20_000
_WORKER_EXTRACTOR: IngredientExtractor | None = None


@dataclass(frozen=True)
class IngredientsParams(StageParams):
    """The `ingredients` stage's settings (``prepare --set ingredients.KEY=VALUE``)."""

    extractor: str = "rules"  # how names are extracted from raw lines: one of .ingredient_names.EXTRACTORS

    def __post_init__(self) -> None:
        require(self, "ingredients", self.extractor in EXTRACTORS, "extractor", f"one of {', '.join(EXTRACTORS)}")


def _init_worker(method: str) -> None:
    global _WORKER_EXTRACTOR
    _WORKER_EXTRACTOR = IngredientExtractor(method)


def _extract_chunk(lines: list[str]) -> list[str | None]:
    assert _WORKER_EXTRACTOR is not None
    return _WORKER_EXTRACTOR.extract_many(lines)


def extract_distinct(lines: list[str], method: str, workers: int, quiet: bool = True,
                     executor: Executor | None = None) -> list[str | None]:
    """Names for ``lines`` (in order), computed by ``executor`` (default: ``workers`` processes)."""
    executor = executor or PoolExecutor(workers)
    # Several chunks per worker balance the load. Chunk bounds never change the names.
    size = max(MIN_CHUNK, min(MAX_CHUNK, -(-len(lines) // (executor.workers * 8))))
    chunks = [lines[i : i + size] for i in range(0, len(lines), size)]
    results: list[str | None] = []
    bar = tqdm(total=len(lines), unit="line", desc="ingredients", disable=bar_disabled(quiet))
    for names in executor.imap(_extract_chunk, chunks, initializer=_init_worker, initargs=(method,),
                               limit=len(chunks), describe=_describe):
        results.extend(names)
        bar.update(len(names))
    bar.close()
    return results


def _describe(chunk: list[str]) -> str:
    return f"chunk of {len(chunk)} ingredient lines starting {chunk[0]!r}" if chunk else "empty chunk"


def canonical_lists(recipes: pl.DataFrame, det: pl.DataFrame, method: str, workers: int, quiet: bool = True,
                    executor: Executor | None = None) -> pl.DataFrame:
    """``recipes`` (id, partition, ingredients: raw lines) and ``det`` (id, ingredients: names)
    to a frame (id, partition, ingredients: names, source)."""
    lines = _distinct_lines(recipes)
    names = extract_distinct(lines, method, workers, quiet, executor)
    return assemble(recipes, det, _mapping(lines, names))


def _distinct_lines(recipes: pl.DataFrame) -> list[str]:
    return (
        recipes.select(pl.col("ingredients").explode().alias("line"))
        .drop_nulls()
        .unique(maintain_order=True)
        .get_column("line")
        .to_list()
    )


def _mapping(lines: list[str], names: list[str | None]) -> pl.DataFrame:
    return pl.DataFrame({"line": lines, "name": names}, schema={"line": pl.String, "name": pl.String})


def assemble(recipes: pl.DataFrame, det: pl.DataFrame, mapping: pl.DataFrame) -> pl.DataFrame:
    """``recipes`` (id, partition, ingredients: raw lines), ``det`` (id, ingredients: names) and
    ``mapping`` (line, name) to a frame (id, partition, ingredients: names, source)."""
    exploded = (
        recipes.select("id", pl.col("ingredients").alias("line"))
        .with_row_index("_r")
        .explode("line")
        .with_row_index("_pos")
        .join(mapping, on="line", how="left")
        .filter(pl.col("name").is_not_null() & (pl.col("name") != ""))
        .sort("_pos")
        # One recipe lists an ingredient once, at its first mention.
        .unique(subset=["_r", "name"], keep="first", maintain_order=True)
        .group_by("_r", maintain_order=True)
        .agg(pl.col("name").alias("extracted"))
    )
    base = recipes.select("id", "partition").with_row_index("_r")
    det_names = det.rename({"ingredients": "det"}).with_columns(
        pl.col("det").list.eval(pl.element().filter(pl.element() != "")).list.unique(maintain_order=True)
    )
    return (
        base.join(exploded, on="_r", how="left")
        .join(det_names, on="id", how="left")
        .sort("_r")
        .select(
            "id",
            "partition",
            pl.when(pl.col("det").is_not_null())
            .then(pl.col("det"))
            .otherwise(pl.col("extracted").fill_null(pl.lit([], dtype=pl.List(pl.String))))
            .alias("ingredients"),
            pl.when(pl.col("det").is_not_null()).then(pl.lit("det_ingrs")).otherwise(pl.lit("extracted")).alias("source"),
        )
    )


def vocabulary(table: pl.DataFrame) -> pl.DataFrame:
    """Ingredient vocabulary: name, recipes containing it, and how many of those are in train."""
    return (
        table.select("partition", pl.col("ingredients").alias("name"))
        .explode("name")
        .drop_nulls("name")
        .group_by("name")
        .agg(pl.len().alias("count"), (pl.col("partition") == "train").sum().alias("train_count"))
        .with_columns(pl.col("count").cast(pl.Int64), pl.col("train_count").cast(pl.Int64))
        .sort(["count", "name"], descending=[True, False])
    )


def _det_rows(out) -> pl.DataFrame:
    """det_ingrs entries with ``_r``, the row of their recipe in recipes.parquet, sorted by it."""
    ids = pl.read_parquet(out / "recipes.parquet", columns=["id"]).with_row_index("_r")
    return ids.join(pl.read_parquet(out / "det_ingrs.parquet"), on="id", how="inner").sort("_r")


def _run(ctx: StageContext) -> dict[str, Any]:
    """Two passes over recipes.parquet in chunks of rows: the distinct lines (extracted once),
    then each chunk's lists, written as they come. Memory: the distinct lines and their names,
    the det_ingrs entries and one chunk, whatever the number of recipes."""
    out = ctx.out
    method = IngredientsParams.from_manifest(ctx.params).extractor
    seen: dict[str, None] = {}  # distinct lines, in order of first appearance
    has_null = False
    for (chunk,) in iter_aligned([(out / "recipes.parquet", ["ingredients"])]):
        seen.update(dict.fromkeys(_distinct_lines(chunk)))
        has_null = has_null or chunk.get_column("ingredients").explode().null_count() > 0
    lines = list(seen)
    del seen
    mapping = _mapping(lines, extract_distinct(lines, method, ctx.workers, ctx.quiet, ctx.executor))
    det = _det_rows(out)
    det_r = det.get_column("_r")
    n = from_det = without = total_len = 0
    vocab = None
    with atomic_path(out / "ingredients.parquet") as tmp:
        writer = None
        try:
            for (chunk,) in iter_aligned([(out / "recipes.parquet", ["id", "partition", "ingredients"])]):
                a, b = det_r.search_sorted(n, side="left"), det_r.search_sorted(n + chunk.height, side="left")
                table = assemble(chunk, det.slice(a, b - a).select("id", "ingredients"), mapping)
                n += table.height
                lengths = table.get_column("ingredients").list.len()
                from_det += int((table.get_column("source") == "det_ingrs").sum())
                without += int((lengths == 0).sum())
                total_len += int(lengths.sum() or 0)
                part = vocabulary(table).select("name", "count", "train_count")
                vocab = part if vocab is None else pl.concat([vocab, part]).group_by("name").agg(pl.sum("count", "train_count"))
                arrow = table.to_arrow()
                if writer is None:
                    schema = arrow.schema
                    writer = pq.ParquetWriter(tmp, schema, compression="zstd", write_statistics=False)
                writer.write_table(arrow if arrow.schema == schema else arrow.cast(schema))
        finally:
            if writer is not None:
                writer.close()
        if writer is None:  # no recipes at all
            assemble(pl.read_parquet(out / "recipes.parquet", columns=["id", "partition", "ingredients"]),
                     det.select("id", "ingredients"), mapping).write_parquet(tmp, compression="zstd", statistics=False)
    vocab = (vocab if vocab is not None else pl.DataFrame(schema={"name": pl.String, "count": pl.Int64,
                                                                   "train_count": pl.Int64}))
    vocab = vocab.with_columns(pl.col("count").cast(pl.Int64), pl.col("train_count").cast(pl.Int64)).sort(
        ["count", "name"], descending=[True, False])
    with atomic_path(out / "ingredient_vocab.parquet") as tmp:
        vocab.write_parquet(tmp, compression="zstd", statistics=False)
    return {
        "recipes": n,
        "from_det_ingrs": from_det,
        "without_ingredients": without,
        "distinct_lines": len(lines) + int(has_null),
        "vocabulary": vocab.height,
        "mean_per_recipe": round(total_len / n, 2) if n else 0.0,
    }


STAGE = Stage(
    name="ingredients",
    run=_run,
    out_inputs=("recipes.parquet", "det_ingrs.parquet"),
    outputs=("ingredients.parquet", "ingredient_vocab.parquet"),
    description="canonical ingredient names per recipe + vocabulary",
    params=IngredientsParams,
)


def ingredients(
    out: str | os.PathLike, *, params: IngredientsParams | None = None, workers: int = 1, force: bool = False,
    quiet: bool = True
):
    """Run the `ingredients` stage on a prepared OUT (after `parse`)."""
    params = params or IngredientsParams()
    return run_stage(STAGE, src=None, out=out, params=params.manifest(), workers=workers, force=force, quiet=quiet)
