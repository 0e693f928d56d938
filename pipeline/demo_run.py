"""The data half of `recipekit demo` (torch-free): generate the synthetic corpus into
``OUT/corpus`` and prepare it into ``OUT/prepared``. Training and evaluation follow in
:func:`recipekit.training.demo.run_full_demo`, which calls :func:`run_demo` first.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from .demo import write_demo_corpus
from .prepare import PrepareConfig, default_workers, prepare, summary_table
from .stagekit import StageReport

__all__ = ["DemoResult", "run_demo"]


@dataclass
class DemoResult:
    corpus: Path
    prepared: Path
    corpus_counts: dict
    reports: list[StageReport]
    report: str


def _example(prepared: Path) -> str:
    recipes = pl.read_parquet(prepared / "recipes.parquet", columns=["id", "title", "ingredients"])
    ingr = pl.read_parquet(prepared / "ingredients.parquet", columns=["id", "ingredients"]).rename(
        {"ingredients": "names"}
    )
    cls = pl.read_parquet(prepared / "recipe_classes.parquet", columns=["id", "class_name"])
    row = recipes.join(ingr, on="id").join(cls, on="id").filter(pl.col("class_name") != "background").row(0, named=True)
    return "\n".join([
        f"Example recipe {row['id']}: {row['title']!r} (class {row['class_name']!r})",
        f"  raw ingredient lines: {'; '.join(row['ingredients'][:5])}",
        f"  canonical names:      {', '.join(row['names'][:5])}",
    ])


def run_demo(out: str | os.PathLike, *, recipes: int = 2000, seed: int = 0, workers: int | None = None,
             quiet: bool = False) -> DemoResult:
    out = Path(out)
    workers = workers or default_workers()
    corpus, prepared = out / "corpus", out / "prepared"
    counts = write_demo_corpus(corpus, recipes=recipes, seed=seed, workers=workers, quiet=quiet)
    reports = prepare(corpus, prepared, config=PrepareConfig(), workers=workers, quiet=quiet)
    classes = json.loads((prepared / "classes.json").read_text(encoding="utf-8"))
    text = [
        f"Demo corpus: {counts['recipes']} recipes, {counts['images']} photos -> {corpus}",
        "",
        summary_table(reports, prepared),
        "",
        f"{len(classes) - 1} classes, e.g. {', '.join(list(classes.values())[1:8])}",
        _example(prepared),
        "",
        f"Prepared artefacts: {prepared} (docs/artefacts.md describes each file).",
    ]
    return DemoResult(corpus, prepared, counts, reports, "\n".join(text))
