"""Stage `ingredients`: one list of canonical ingredient names per recipe.

Where ``det_ingrs.json`` had an entry for a recipe its valid-flagged names are
used (as im2recipe did); every other recipe gets names extracted from its raw
lines by :mod:`.ingredient_names`. Lines repeat a great deal across a corpus
("1 cup sugar"), so the distinct lines are extracted once, in parallel over
``workers`` processes, and joined back.
"""

from __future__ import annotations

import os
from multiprocessing import get_context
from typing import Any

import polars as pl
from tqdm import tqdm

from .ingredient_names import EXTRACTORS, IngredientExtractor
from .stagekit import Stage, StageContext, atomic_path, run_stage

__all__ = ["STAGE", "ingredients", "canonical_lists"]

MIN_CHUNK, MAX_CHUNK = 500, 20_000
_WORKER_EXTRACTOR: IngredientExtractor | None = None


def _init_worker(method: str) -> None:
    global _WORKER_EXTRACTOR
    _WORKER_EXTRACTOR = IngredientExtractor(method)


def _extract_chunk(lines: list[str]) -> list[str | None]:
    assert _WORKER_EXTRACTOR is not None
    return _WORKER_EXTRACTOR.extract_many(lines)


def extract_distinct(lines: list[str], method: str, workers: int, quiet: bool = True) -> list[str | None]:
    """Names for ``lines`` (in order), computed over ``workers`` processes."""
    # Several chunks per worker balance the load; small inputs stay in this process.
    size = max(MIN_CHUNK, min(MAX_CHUNK, -(-len(lines) // (workers * 8))))
    chunks = [lines[i : i + size] for i in range(0, len(lines), size)]
    results: list[str | None] = []
    bar = tqdm(total=len(lines), unit="line", desc="ingredients", disable=quiet)
    if workers <= 1 or len(chunks) <= 1:
        _init_worker(method)
        for chunk in chunks:
            results.extend(_extract_chunk(chunk))
            bar.update(len(chunk))
    else:
        with get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(method,)) as pool:
            for names in pool.imap(_extract_chunk, chunks):
                results.extend(names)
                bar.update(len(names))
    bar.close()
    return results


def canonical_lists(recipes: pl.DataFrame, det: pl.DataFrame, method: str, workers: int, quiet: bool = True) -> pl.DataFrame:
    """``recipes`` (id, partition, ingredients: raw lines) and ``det`` (id, ingredients: names)
    to a frame (id, partition, ingredients: names, source)."""
    lines = (
        recipes.select(pl.col("ingredients").explode().alias("line"))
        .drop_nulls()
        .unique(maintain_order=True)
        .get_column("line")
        .to_list()
    )
    names = extract_distinct(lines, method, workers, quiet)
    mapping = pl.DataFrame({"line": lines, "name": names}, schema={"line": pl.String, "name": pl.String})
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


def _run(ctx: StageContext) -> dict[str, Any]:
    out = ctx.out
    method = ctx.params["extractor"]
    recipes = pl.read_parquet(out / "recipes.parquet", columns=["id", "partition", "ingredients"])
    det = pl.read_parquet(out / "det_ingrs.parquet")
    table = canonical_lists(recipes, det, method, ctx.workers, ctx.quiet)
    vocab = vocabulary(table)
    with atomic_path(out / "ingredients.parquet") as tmp:
        table.write_parquet(tmp, compression="zstd", statistics=False)
    with atomic_path(out / "ingredient_vocab.parquet") as tmp:
        vocab.write_parquet(tmp, compression="zstd", statistics=False)
    lengths = table.get_column("ingredients").list.len()
    return {
        "recipes": table.height,
        "from_det_ingrs": int((table.get_column("source") == "det_ingrs").sum()),
        "without_ingredients": int((lengths == 0).sum()),
        "distinct_lines": int(recipes.get_column("ingredients").explode().n_unique()),
        "vocabulary": vocab.height,
        "mean_per_recipe": round(float(lengths.mean() or 0.0), 2),
    }


STAGE = Stage(
    name="ingredients",
    run=_run,
    out_inputs=("recipes.parquet", "det_ingrs.parquet"),
    outputs=("ingredients.parquet", "ingredient_vocab.parquet"),
    description="canonical ingredient names per recipe + vocabulary",
)


def ingredients(
    out: str | os.PathLike, *, extractor: str = "rules", workers: int = 1, force: bool = False, quiet: bool = True
):
    """Run the `ingredients` stage on a prepared OUT (after `parse`)."""
    if extractor not in EXTRACTORS:
        raise ValueError(f"unknown ingredient extractor {extractor!r}; choose from {', '.join(EXTRACTORS)}")
    return run_stage(STAGE, src=None, out=out, params={"extractor": extractor}, workers=workers, force=force, quiet=quiet)
