"""A seeded random re-split of a prepared folder's image-recipe pairs (``prepare --set
parse.split=random``), run by the `parse` stage on the tables it has just written (see :mod:`.parse`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from recipekit.core.io import atomic_path, staged

from .records import BATCH, IMAGES_SCHEMA, PARTITIONS, RECIPES_SCHEMA

__all__ = ["random_resplit"]


def random_resplit(out: Path, *, seed: int, ratios: tuple[float, float, float] = (0.6, 0.2, 0.2)):
    """Replace Recipe1M's partitions by a seeded random split of the image-recipe pairs.

    The recipes with at least one photo on disk (the pairs) are ordered by id, shuffled with
    ``numpy.random.default_rng(seed)`` and cut into train / val / test by ``ratios`` (the
    Recipe1M+ reproduction's 60/20/20); recipes without a photo go to train (they only serve
    the text-side stages and recipe-only batches). Rewrites the ``partition`` columns of
    ``recipes.parquet`` and ``images.parquet`` (image paths keep the source layout). Returns
    (recipes per partition, counts for the stage manifest)."""
    # polars is deferred: importing this module (PARTITIONS, from .store, which the loaders read) stays free of it
    import polars as pl

    if len(ratios) != 3 or any(r < 0 for r in ratios) or abs(sum(ratios) - 1.0) > 1e-6:
        raise ValueError(f"split ratios must be three non-negative fractions summing to 1, got {list(ratios)}")
    recipes = pl.read_parquet(staged(out / "recipes.parquet"))  # this stage's outputs, not yet committed
    images = pl.read_parquet(staged(out / "images.parquet"))
    paired = sorted(set(images.filter(pl.col("present"))["recipe_id"].to_list()))
    order = np.random.default_rng(seed).permutation(len(paired))
    n_train = int(round(ratios[0] * len(paired)))
    n_val = int(round(ratios[1] * len(paired)))
    new = {}
    for rank, i in enumerate(order):
        new[paired[i]] = "train" if rank < n_train else ("val" if rank < n_train + n_val else "test")
    mapping = pl.DataFrame({"id": list(new), "_part": list(new.values())}, schema={"id": pl.String, "_part": pl.String})

    def relabel(frame: pl.DataFrame, key: str) -> pl.DataFrame:
        joined = frame.join(mapping.rename({"id": key}), on=key, how="left", maintain_order="left")
        return joined.with_columns(pl.col("_part").fill_null("train").alias("partition")).drop("_part")

    recipes = relabel(recipes, "id")
    with atomic_path(out / "recipes.parquet") as tmp:
        pq.write_table(recipes.to_arrow().cast(RECIPES_SCHEMA), tmp, compression="zstd", row_group_size=BATCH)
    with atomic_path(out / "images.parquet") as tmp:
        pq.write_table(relabel(images, "recipe_id").to_arrow().cast(IMAGES_SCHEMA), tmp, compression="zstd",
                       row_group_size=BATCH)
    per_partition = {p: int((recipes["partition"] == p).sum()) for p in PARTITIONS}
    pairs = {p: sum(1 for v in new.values() if v == p) for p in PARTITIONS}
    return per_partition, {"split": "random", **{f"pairs_{p}": n for p, n in pairs.items()},
                           "text_only_to_train": recipes.height - len(paired)}
