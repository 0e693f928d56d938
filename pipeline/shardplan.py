"""The `shard` stage's plan without holding every recipe's text in memory.

The plan (which recipe goes to which shard, in which order) needs only each recipe's id,
partition and estimated size, so :func:`plan_shards` computes just those with polars'
streaming engine: a few dozen bytes a recipe. The text and photo paths of the samples are
read back by :func:`shard_rows` for a run of consecutive shards at a time (at most ``rows``
recipes): one streaming pass over each table first appends every planned recipe's rows to the
Arrow file of its run (a bucket, in a temporary folder under OUT, removed as it is read), then
each run joins its own bucket. Every table is read once, whatever the corpus size, and memory
holds one batch of a table or one run's rows. The shards are the same, byte for byte, as from
one in-memory join: their order depends only on the ids and the seed
(:func:`shard_order`); tests compare each run with the whole-table joins.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from recipekit.core.io import TMP_MARK

__all__ = ["ShardPlan", "plan_shards", "shard_rows", "estimate_image_bytes", "shard_order", "cut_shards",
           "TAR_OVERHEAD"]

TAR_OVERHEAD = 512  # one tar header block per member


def estimate_image_bytes(image_size: int, quality: int) -> int:
    """Planning estimate of one stored photo, tar header included: a 4:3 picture at 0.75
    bytes per pixel up to quality 90 (real photos at 256 px measured 0.33 on average, 0.66
    at most), growing by a fifth of that per quality step above 90."""
    per_pixel = 0.75 * (1 + 0.2 * max(0, quality - 90))
    return int(image_size * image_size * 4 / 3 * per_pixel) + TAR_OVERHEAD


def shard_order(ids: list[str], seed: int) -> list[int]:
    """Indices of ``ids`` in shard order: sorted by a keyed hash of (seed, id). It depends on
    nothing but the id and the seed, so adding a recipe does not reorder the others."""

    def key(i: int) -> bytes:
        return hashlib.blake2b(f"{seed}:{ids[i]}".encode(), digest_size=8).digest()

    return sorted(range(len(ids)), key=key)


def cut_shards(estimates: list[int], max_count: int, max_bytes: int) -> list[tuple[int, int]]:
    """``[start, end)`` bounds: at most ``max_count`` samples and ``max_bytes`` (estimated) per
    shard; a sample larger than ``max_bytes`` alone gets a shard of its own."""
    bounds, start, total = [], 0, 0
    for i, est in enumerate(estimates):
        if i > start and (i - start >= max_count or total + est > max_bytes):
            bounds.append((start, i))
            start, total = i, 0
        total += est
    if start < len(estimates):
        bounds.append((start, len(estimates)))
    return bounds


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
    counts = _photo_counts(out)
    # Each table reduced to a few numbers per recipe before the join (joining first would hold
    # every recipe's text lists in the join's hash table).
    names = (pl.scan_parquet(out / "ingredients.parquet")
             .select("id", _text_bytes("ingredients").alias("names")).collect(engine="streaming"))
    recipes = (pl.scan_parquet(out / "recipes.parquet")
               .select("id", "partition", (pl.col("title").str.len_bytes() + _text_bytes("ingredients")
                                           + _text_bytes("instructions")).alias("lines"))
               .collect(engine="streaming"))
    frame = recipes.join(names, on="id", how="left").select(
        "id", "partition", (pl.col("lines") + pl.col("names").fill_null(0)).alias("text"))
    per_image = estimate_image_bytes(params.image_size, params.quality) + 32  # + its id in the JSON
    frame = frame.join(counts, on="id", how="inner").with_columns(
        (3 * TAR_OVERHEAD + 1024 + pl.col("text")
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


_SOURCES = {  # table -> (file, columns, the column holding the recipe id)
    "recipes": ("recipes.parquet", ["id", "title", "ingredients", "instructions"], "id"),
    "names": ("ingredients.parquet", ["id", "ingredients"], "id"),
    "classes": ("recipe_classes.parquet", ["id", "class_id"], "id"),
    "images": ("images.parquet", ["image_id", "recipe_id", "position", "path"], "recipe_id"),
}
MAX_OPEN_BUCKETS = 256  # bucket files written at once (one per run of shards, or per group of runs)


def _scan(out: Path, table: str) -> pl.LazyFrame:
    name, columns, _ = _SOURCES[table]
    return pl.scan_parquet(out / name).select(columns)


def _read_rows(tables: dict[str, pl.LazyFrame], wanted: pl.DataFrame) -> pl.DataFrame:
    """The sample rows of the recipes in ``wanted`` (one column ``id``), in ``wanted`` order, from
    ``tables`` (the columns of :data:`_SOURCES`: whole tables, or one bucket of them)."""
    names = tables["names"].rename({"ingredients": "names"})
    classes = tables["classes"]
    lazy_wanted = wanted.lazy()
    recipes = tables["recipes"].rename({"ingredients": "lines"})
    found = (recipes.join(lazy_wanted, on="id", how="semi").join(names, on="id", how="left")
             .join(classes, on="id", how="left").collect(engine="streaming"))
    photos = (tables["images"].join(lazy_wanted.rename({"id": "recipe_id"}), on="recipe_id", how="semi")
              .collect(engine="streaming"))
    images = (photos.sort(["recipe_id", "position"]).group_by("recipe_id", maintain_order=True)
              .agg("image_id", "path").rename({"recipe_id": "id"}))
    frame = found.join(images, on="id", how="inner").with_columns(
        pl.col("names").fill_null([]), pl.col("class_id").fill_null(0))
    order = wanted.with_row_index("_order")
    return frame.join(order, on="id", how="inner").sort("_order").drop("_order")


def _runs(flat: list[tuple[str, str, list[str]]], rows: int) -> list[list[int]]:
    """Consecutive shards of ``flat`` grouped into runs of at most ``rows`` recipes (a larger shard
    is a run alone)."""
    runs: list[list[int]] = []
    size = 0
    for i, (_, _, ids) in enumerate(flat):
        if not runs or (runs[-1] and size + len(ids) > rows):
            runs.append([])
            size = 0
        runs[-1].append(i)
        size += len(ids)
    return runs


class _Buckets:
    """One streaming pass over each table: every row of a planned recipe is appended to the Arrow
    IPC file of its bucket (a run of shards, or ``group`` consecutive runs), under ``folder``."""

    def __init__(self, out: Path, folder: Path, bucket_of: pl.DataFrame, n_buckets: int):
        self.folder = folder
        for table, (name, columns, key) in _SOURCES.items():
            writers: dict[int, pa.ipc.RecordBatchStreamWriter] = {}
            try:
                for batch in pq.ParquetFile(out / name).iter_batches(batch_size=10_000, columns=columns):
                    frame = pl.from_arrow(batch)
                    frame = frame.join(bucket_of.rename({"id": key}), on=key, how="inner", maintain_order="left")
                    for (bucket,), part in frame.partition_by("_bucket", as_dict=True, maintain_order=True).items():
                        arrow = part.drop("_bucket").to_arrow()
                        writer = writers.get(bucket)
                        if writer is None:
                            writer = writers[bucket] = pa.ipc.new_stream(self.path(table, bucket), arrow.schema)
                        writer.write_table(arrow)
            finally:
                for writer in writers.values():
                    writer.close()
            # An empty bucket still needs its (empty) table with the right columns.
            empty = _scan(out, table).head(0).collect()
            for bucket in range(n_buckets):
                if bucket not in writers:
                    with pa.ipc.new_stream(self.path(table, bucket), empty.to_arrow().schema) as writer:
                        writer.write_table(empty.to_arrow())

    def path(self, table: str, bucket: int) -> str:
        return str(self.folder / f"{table}-{bucket:06d}.arrow")

    def read(self, bucket: int) -> dict[str, pl.LazyFrame]:
        tables = {}
        for table in _SOURCES:
            path = self.path(table, bucket)
            with pa.ipc.open_stream(path) as reader:
                tables[table] = pl.from_arrow(reader.read_all(), rechunk=False).lazy()
            os.unlink(path)  # read once; frees the disk as the stage goes
        return tables


def shard_rows(out: Path, flat: list[tuple[str, str, list[str]]], *, rows: int,
               scratch: Path | None = None) -> Iterator[tuple[int, list[dict]]]:
    """``(index in flat, the shard's rows in sample order)`` for every shard of ``flat``, read for runs
    of consecutive shards of at most ``rows`` recipes (a larger shard is a run alone). Each table is
    read once: its rows are first bucketed by run into temporary Arrow files under ``out``
    (:class:`_Buckets`) in a temporary folder under ``scratch`` (default ``out``), then each run's
    rows come from its bucket alone. Close the generator if you stop early: that removes the folder."""
    runs = _runs(flat, rows)
    if not runs:
        return
    group = -(-len(runs) // MAX_OPEN_BUCKETS)  # runs per bucket file
    ids, buckets = [], []
    for r, run in enumerate(runs):
        for i in run:
            ids.extend(flat[i][2])
            buckets.extend([r // group] * len(flat[i][2]))
    bucket_of = pl.DataFrame({"id": ids, "_bucket": buckets}, schema={"id": pl.Utf8, "_bucket": pl.Int32})
    bucket_of = bucket_of.unique("id", keep="first", maintain_order=True)
    del ids, buckets
    with tempfile.TemporaryDirectory(prefix=f"shard-buckets{TMP_MARK}", dir=scratch or out) as tmp:
        store = _Buckets(out, Path(tmp), bucket_of, -(-len(runs) // group))
        del bucket_of
        for b in range(0, len(runs), group):
            tables = store.read(b // group)
            for run in runs[b : b + group]:
                yield from _emit(out, tables, flat, run)


def _emit(out: Path, tables: dict[str, pl.LazyFrame], flat, run: list[int]) -> Iterator[tuple[int, list[dict]]]:
    ids = [rid for i in run for rid in flat[i][2]]
    frame = _read_rows(tables, pl.DataFrame({"id": ids}, schema={"id": pl.Utf8}))
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
