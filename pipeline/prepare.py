"""`recipekit prepare SRC OUT`: the stages in order, each skipped when up to date."""

from __future__ import annotations

import os
import typing
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from . import classes as _classes
from . import ingredients as _ingredients
from . import parse as _parse
from . import shard as _shard
from . import store as _store
from . import word2vec as _word2vec
from .backends import make_executor
from recipekit.core.overrides import ConfigError, check_type, did_you_mean, parse_override
from .stagekit import Stage, StageReport, run_stage
from .stageparams import StageParams

__all__ = ["STAGES", "PrepareConfig", "prepare", "default_workers", "setting_keys", "summary_table"]

STAGES: dict[str, Stage] = {
    s.name: s
    for s in (_parse.STAGE, _ingredients.STAGE, _word2vec.STAGE, _classes.STAGE, _store.STAGE, _shard.STAGE)
}


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@dataclass(frozen=True)
class PrepareConfig(Mapping[str, StageParams]):
    """Every setting of every stage: a mapping of stage name to that stage's ``Params`` dataclass
    (``config["shard"] is config.shard``), in pipeline order. :meth:`with_overrides` applies
    ``STAGE.KEY=VALUE`` overrides (``recipekit prepare --set``)."""

    parse: _parse.ParseParams = field(default_factory=_parse.ParseParams)
    ingredients: _ingredients.IngredientsParams = field(default_factory=_ingredients.IngredientsParams)
    word2vec: _word2vec.Word2VecParams = field(default_factory=_word2vec.Word2VecParams)
    classes: _classes.ClassesParams = field(default_factory=_classes.ClassesParams)
    store: _store.StoreParams = field(default_factory=_store.StoreParams)
    shard: _shard.ShardParams = field(default_factory=_shard.ShardParams)

    def __post_init__(self) -> None:
        for name, stage in STAGES.items():
            if not isinstance(getattr(self, name), stage.params):
                raise TypeError(f"PrepareConfig.{name} must be a {stage.params.__name__}, "
                                f"got {type(getattr(self, name)).__name__}")

    def __getitem__(self, stage: str) -> StageParams:
        if stage not in STAGES:
            raise KeyError(stage)
        return getattr(self, stage)

    def __iter__(self) -> Iterator[str]:
        return iter(STAGES)

    def __len__(self) -> int:
        return len(STAGES)

    def params(self, stage: str) -> dict:
        """The parameters ``stage`` records in its manifest."""
        return self[stage].manifest()

    def with_overrides(self, overrides: Iterable[str | tuple[str, Any]] | Mapping[str, Any]) -> PrepareConfig:
        """A copy with ``overrides`` applied in order: ``"shard.max_images=64"`` strings (the value
        read as TOML, as by ``train --set``), ``(key, value)`` pairs or a ``{key: value}`` dict."""
        items = overrides.items() if isinstance(overrides, Mapping) else overrides
        changes: dict[str, dict[str, Any]] = {}
        for item in items:
            path, value = parse_override(item) if isinstance(item, str) else (item[0].split("."), item[1])
            stage, key = _check_key(path)
            hint = typing.get_type_hints(STAGES[stage].params)[key]
            changes.setdefault(stage, {})[key] = check_type(value, hint, f"prepare override {'.'.join(path)!r}")
        return replace(self, **{stage: replace(self[stage], **kw) for stage, kw in changes.items()})


def setting_keys() -> list[str]:
    """Every ``STAGE.KEY`` that ``prepare --set`` takes, in pipeline order."""
    return [f"{name}.{f.name}" for name, stage in STAGES.items() for f in fields(stage.params)]


def _check_key(path: list[str]) -> tuple[str, str]:
    text = ".".join(path)
    known = setting_keys()
    if text not in known:
        stage_keys = [k for k in known if k.split(".")[0] == path[0]]
        if len(path) == 1 and stage_keys:
            raise ConfigError(f"prepare override {text!r}: expected STAGE.KEY (keys: {', '.join(stage_keys)})")
        hint = did_you_mean(text, known) or (f" (keys: {', '.join(stage_keys)})" if stage_keys else
                                             f" (stages: {', '.join(STAGES)})")
        raise ConfigError(f"prepare override {text!r}: unknown key{hint}")
    return path[0], path[1]


def prepare(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    stages: list[str] | None = None,
    config: PrepareConfig | None = None,
    overrides: Iterable[str | tuple[str, Any]] | Mapping[str, Any] = (),
    workers: int | None = None,
    force: bool = False,
    quiet: bool = False,
    backend: str = "pool",
    ray_address: str | None = None,
) -> list[StageReport]:
    """Run the selected stages (default: all, in order) from SRC into OUT.

    A stage whose manifest matches its parameters, inputs and outputs is skipped
    unless ``force``. Returns one :class:`StageReport` per stage. ``overrides`` are applied to
    ``config`` (default: every stage's defaults) by :meth:`PrepareConfig.with_overrides`:
    ``["shard.max_images=64", "word2vec.epochs=5"]``.

    ``backend`` says where the parallel parts of `ingredients`, `store` and `shard` run:
    ``"pool"`` (local processes) or ``"ray"`` (a local Ray, or the cluster at ``ray_address``;
    see :mod:`.backends`). The outputs are byte-identical either way, so the backend is not a
    stage parameter: a stage finished with one backend is skipped with the other.
    """
    config = (config or PrepareConfig()).with_overrides(overrides)
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
