"""The `shard` stage's plan without holding every recipe's text in memory.

The plan (which recipe goes to which shard, in which order) needs only each recipe's id,
partition and estimated size, so :func:`plan_shards` computes just those with polars'
streaming engine: a few dozen bytes a recipe. The text and photo paths of the samples are
read back by :func:`shard_rows` for a run of consecutive shards at a time (at most ``rows``
recipes; a streaming semi-join of each table with the run's ids). Each run scans the tables
again, so that reading grows as recipes^2 / rows (100 scans of each table at Recipe1M+'s 1M
recipes with ``shard.PLAN_ROWS``; at 100k recipes the stage's CPU time did not grow against the
one-frame plan, docs/benchmarks.md); one bucketing pass would remove it. The shards are the same,
byte for byte, as from one in-memory join: their order depends only on the ids and the seed
(:func:`~.shard.shard_order`). `benchmarks/scale.py` (docs/benchmarks.md, 2026-11-30): the
stage's peak RSS grew 414 -> 477 MB from 10k to 100k photos, 392 -> 532 MB with the one frame.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl

__all__ = ["ShardPlan", "plan_shards", "shard_rows"]


class ShardPlan:
    """Per partition, its shards in order: ``(name, [recipe ids in sample order])``."""

    def __init__(self, shards: dict[str, list[tuple[str, list[str]]]], recipes_with_photos: int):
        self.shards, self.recipes_with_photos = shards, recipes_with_photos

    def flat(self) -> list[tuple[str, str, list[str]]]:
        """``(partition, name, ids)`` for every shard, partitions in plan order."""
        return [(partition, name, ids) for partition, shards in self.shards.items() for name, ids in shards]


def _photo_counts(out: Path) -> pl.DataFrame:
    return (pl.scan_parquet(out / "images.parquet").group_by("recipe_id").agg(pl.len().cast(pl.Int64).alias("photos"))
            .rename({"recipe_id": "id"}).collect(engine="streaming"))


def _text_bytes(col: str) -> pl.Expr:
    return pl.col(col).list.eval(pl.element().str.len_bytes() + 4).list.sum().fill_null(0)


def plan_shards(out: Path, params: Any, partitions: list[str]) -> ShardPlan:
    """Which recipes (those with at least one image row) go to which shard, in what order."""
    from .shard import _TAR_OVERHEAD, cut_shards, estimate_image_bytes, shard_order

    counts = _photo_counts(out)
    names = pl.scan_parquet(out / "ingredients.parquet").select("id", pl.col("ingredients").alias("names"))
    recipes = pl.scan_parquet(out / "recipes.parquet").select(
        "id", "partition", "title", pl.col("ingredients").alias("lines"), "instructions")
    frame = (recipes.join(names, on="id", how="left")
             .select("id", "partition", (pl.col("title").str.len_bytes() + _text_bytes("lines")
                                         + _text_bytes("instructions") + _text_bytes("names")).alias("text"))
             .collect(engine="streaming"))
    per_image = estimate_image_bytes(params.image_size, params.quality) + 32  # + its id in the JSON
    frame = frame.join(counts, on="id", how="inner").with_columns(
        (3 * _TAR_OVERHEAD + 1024 + pl.col("text")
         + pl.col("photos").clip(upper_bound=params.max_images) * per_image).cast(pl.Int64).alias("estimate"))
    shards: dict[str, list[tuple[str, list[str]]]] = {}
    for partition in partitions:
        part = frame.filter(pl.col("partition") == partition)
        ids, estimates = part["id"].to_list(), part["estimate"].to_list()
        order = shard_order(ids, params.seed)
        ids, estimates = [ids[i] for i in order], [estimates[i] for i in order]
        bounds = cut_shards(estimates, params.max_count, params.max_bytes)
        shards[partition] = [(f"{partition}-{i:06d}", ids[a:b]) for i, (a, b) in enumerate(bounds)]
    return ShardPlan(shards, frame.height)


def _read_rows(out: Path, wanted: pl.DataFrame) -> pl.DataFrame:
    """The sample rows of the recipes in ``wanted`` (one column ``id``), in ``wanted`` order."""
    names = pl.scan_parquet(out / "ingredients.parquet").select("id", pl.col("ingredients").alias("names"))
    classes = pl.scan_parquet(out / "recipe_classes.parquet").select("id", "class_id")
    lazy_wanted = wanted.lazy()
    recipes = pl.scan_parquet(out / "recipes.parquet").select(
        "id", "title", pl.col("ingredients").alias("lines"), "instructions")
    found = (recipes.join(lazy_wanted, on="id", how="semi").join(names, on="id", how="left")
             .join(classes, on="id", how="left").collect(engine="streaming"))
    photos = (pl.scan_parquet(out / "images.parquet").select("image_id", "recipe_id", "position", "path")
              .join(lazy_wanted.rename({"id": "recipe_id"}), on="recipe_id", how="semi").collect(engine="streaming"))
    images = (photos.sort(["recipe_id", "position"]).group_by("recipe_id", maintain_order=True)
              .agg("image_id", "path").rename({"recipe_id": "id"}))
    frame = found.join(images, on="id", how="inner").with_columns(
        pl.col("names").fill_null([]), pl.col("class_id").fill_null(0))
    order = wanted.with_row_index("_order")
    return frame.join(order, on="id", how="inner").sort("_order").drop("_order")


def shard_rows(out: Path, flat: list[tuple[str, str, list[str]]], *, rows: int) -> Iterator[tuple[int, list[dict]]]:
    """``(index in flat, the shard's rows in sample order)`` for every shard of ``flat``, read
    for runs of consecutive shards of at most ``rows`` recipes (a larger shard is a run alone)."""
    run: list[int] = []
    size = 0

    def emit(run: list[int]) -> Iterator[tuple[int, list[dict]]]:
        ids = [rid for i in run for rid in flat[i][2]]
        frame = _read_rows(out, pl.DataFrame({"id": ids}, schema={"id": pl.Utf8}))
        if frame.height != len(ids):
            missing = sorted(set(ids) - set(frame["id"].to_list()))
            raise ValueError(f"{out}: {len(missing)} planned recipe(s) with photos not found when read back from "
                             f"recipes.parquet / images.parquet, e.g. {', '.join(map(repr, missing[:3]))} (did the "
                             "tables change while the stage ran?)")
        start = 0
        for i in run:
            n = len(flat[i][2])
            yield i, frame.slice(start, n).to_dicts()
            start += n

    for i, (_, _, ids) in enumerate(flat):
        if run and size + len(ids) > rows:
            yield from emit(run)
            run, size = [], 0
        run.append(i)
        size += len(ids)
    if run:
        yield from emit(run)
