"""`recipekit prepare SRC OUT`: the stages in order, each skipped when up to date."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import classes as _classes
from . import ingredients as _ingredients
from . import parse as _parse
from . import shard as _shard
from . import store as _store
from . import word2vec as _word2vec
from .backends import make_executor
from .stagekit import Stage, StageReport, run_stage

__all__ = ["STAGES", "PrepareConfig", "prepare", "default_workers", "summary_table"]

STAGES: dict[str, Stage] = {
    s.name: s
    for s in (_parse.STAGE, _ingredients.STAGE, _word2vec.STAGE, _classes.STAGE, _store.STAGE, _shard.STAGE)
}


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@dataclass(frozen=True)
class PrepareConfig:
    """Every setting of every stage (the CLI exposes each as an option)."""

    ingredient_extractor: str = "rules"
    word2vec: _word2vec.Word2VecParams = field(default_factory=_word2vec.Word2VecParams)
    class_top_bigrams: int = 2000
    class_max: int = 1000
    class_min_train: int | None = None  # None: scaled to the corpus size
    class_food101: bool = True
    shard: _shard.ShardParams = field(default_factory=_shard.ShardParams)
    store_max_ingredients: int = 20  # store: limits of the tokenised recipes in recipes.lmdb
    store_max_instructions: int = 20
    store_max_tokens: int = 15
    split: str = "recipe1m"  # parse: "recipe1m" (the corpus's partitions) | "random" (seeded re-split of the pairs)
    split_seed: int = 0  # parse, split "random": seed of the shuffle
    split_ratios: tuple[float, float, float] = (0.6, 0.2, 0.2)  # parse, split "random": train / val / test

    def params(self, stage: str) -> dict:
        if stage == "parse":
            if self.split == "recipe1m":
                return {}
            if self.split != "random":
                raise ValueError(f"split must be 'recipe1m' or 'random', got {self.split!r}")
            return {"split": "random", "split_seed": int(self.split_seed),
                    "split_ratios": [float(r) for r in self.split_ratios]}
        if stage == "ingredients":
            return {"extractor": self.ingredient_extractor}
        if stage == "word2vec":
            return asdict(self.word2vec)
        if stage == "classes":
            return {
                "top_bigrams": self.class_top_bigrams,
                "max_classes": self.class_max,
                "min_train": self.class_min_train,
                "food101": self.class_food101,
            }
        if stage == "shard":
            return asdict(self.shard)
        if stage == "store":
            return {
                "max_ingredients": self.store_max_ingredients,
                "max_instructions": self.store_max_instructions,
                "max_tokens": self.store_max_tokens,
            }
        raise KeyError(stage)


def prepare(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    stages: list[str] | None = None,
    config: PrepareConfig | None = None,
    workers: int | None = None,
    force: bool = False,
    quiet: bool = False,
    backend: str = "pool",
    ray_address: str | None = None,
) -> list[StageReport]:
    """Run the selected stages (default: all, in order) from SRC into OUT.

    A stage whose manifest matches its parameters, inputs and outputs is skipped
    unless ``force``. Returns one :class:`StageReport` per stage.

    ``backend`` says where the parallel parts of `ingredients`, `store` and `shard` run:
    ``"pool"`` (local processes) or ``"ray"`` (a local Ray, or the cluster at ``ray_address``;
    see :mod:`.backends`). The outputs are byte-identical either way, so the backend is not a
    stage parameter: a stage finished with one backend is skipped with the other.
    """
    config = config or PrepareConfig()
    names = list(STAGES) if not stages else stages
    unknown = [s for s in names if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {', '.join(unknown)}; stages are {', '.join(STAGES)}")
    src, out = Path(src), Path(out)
    if "parse" in names and not src.is_dir():
        raise FileNotFoundError(f"{src}: SRC is not a folder (it must hold layer1.json and layer2.json)")
    if "parse" in names:  # checked before OUT is created, so a wrong SRC leaves no empty OUT behind
        for required in ("layer1.json", "layer2.json"):
            if not (src / required).is_file():
                raise FileNotFoundError(f"{src / required}: required input missing (SRC must hold layer1.json and "
                                        "layer2.json, and images/{partition}/a/b/c/d/ID.jpg: see the README)")
    executor = make_executor(backend, workers, address=ray_address)  # Ray starts only if a stage needs it
    workers = workers or default_workers()  # processes for the pool, threads for word2vec (on this machine)
    with executor:
        return _run_stages(src, out, names, config, workers, force, quiet, executor)


def _run_stages(src: Path, out: Path, names: list[str], config: PrepareConfig, workers: int, force: bool,
                quiet: bool, executor) -> list[StageReport]:
    reports = []
    for name in (s for s in STAGES if s in names):  # always in pipeline order
        stage = STAGES[name]
        missing = [rel for rel in stage.out_inputs if not (out / rel).exists()]
        if missing:
            raise FileNotFoundError(
                f"stage {name!r} needs {', '.join(str(out / m) for m in missing)}: run the earlier stages first"
            )
        reports.append(
            run_stage(stage, src=src, out=out, params=config.params(name), workers=workers, force=force, quiet=quiet,
                      executor=executor)
        )
    return reports


def summary_table(reports: list[StageReport], out: str | os.PathLike | None = None) -> str:
    """A plain-text table: stage, status, wall time, key counts; with ``out``, one more row under a
    stage that quarantined records, counting the records each reason removed (OUT/quarantine.parquet)."""
    from .quarantine import reason_counts

    removed = reason_counts(out) if out is not None else {}
    rows = [("stage", "status", "wall s", "counts")]
    for r in reports:
        counts = ", ".join(f"{k}={v}" for k, v in r.counts.items())
        rows.append((r.name, r.status, f"{r.wall_s:.1f}", counts))
        if removed.get(r.name):
            rows.append(("", "", "", "removed: " + ", ".join(f"{n} {why}" for why, n in removed[r.name])))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = []
    for i, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths)) + "  " + row[3])
        if i == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 6)
    return "\n".join(lines)
