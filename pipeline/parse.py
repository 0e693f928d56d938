"""Stage `parse`: layer1/layer2/det_ingrs JSON to validated, cleaned Parquet.

Streams ``layer1.json`` (bounded memory, see :mod:`.jsonstream`), validates and
cleans every record (runs of records read in columns by Arrow in the stage's workers, see
:mod:`.columnar`, or decoded by orjson and validated one by one where Arrow cannot decide, see
:mod:`.jsonfast`; the tables are the same, byte for byte, as one process with the standard
library's decoder gives), and joins ``layer2.json`` (images) and ``det_ingrs.json``
(detected ingredients) by recipe id: their entries are checked in the workers too
(:func:`.records.check_layer2_run`, :func:`.records.check_det_run`) and looked up here.
Python's cyclic garbage collector is paused meanwhile (:func:`.jsonfast.cyclic_gc_paused`).
Every rejected record becomes a row of ``quarantine.parquet`` naming the file, byte offset, id
and reason; malformed JSON stops the stage with an error naming the byte offset.
"""

from __future__ import annotations

import os
import stat
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from recipekit.core.io import atomic_path, staged

from .columnar import validate_run_columnar
from .jsonfast import cyclic_gc_paused, map_array
from .progress import bar_disabled
from .quarantine import Rejection, replace_stage_rows
from .records import (BATCH, DET_SCHEMA, IMAGES_SCHEMA, PARTITIONS, RECIPES_SCHEMA, check_det_run, check_layer2_run,
                      hash_layer2_run, id_hash, image_relpath, validate_recipe, validate_run)
from .resplit import random_resplit
from .stagekit import Stage, StageContext, run_stage
from .stageparams import StageParams, require
from .textclean import STEPS

__all__ = [
    "PARTITIONS",
    "RECIPES_SCHEMA",
    "IMAGES_SCHEMA",
    "DET_SCHEMA",
    "STAGE",
    "ParseParams",
    "parse",
    "validate_recipe",
    "image_relpath",
]


@dataclass(frozen=True)
class ParseParams(StageParams):
    """The `parse` stage's settings (``prepare --set parse.KEY=VALUE``)."""

    split: str = "recipe1m"  # "recipe1m" (the corpus's partitions) | "random" (seeded re-split of the pairs)
    split_seed: int = 0  # split "random": seed of the shuffle
    split_ratios: tuple[float, float, float] = (0.6, 0.2, 0.2)  # split "random": train / val / test

    def __post_init__(self) -> None:
        require(self, "parse", self.split in ("recipe1m", "random"), "split", "'recipe1m' or 'random'")

    def manifest(self) -> dict[str, Any]:
        if self.split == "recipe1m":  # the split settings are recorded only when they are used
            return {}
        return {"split": "random", "split_seed": int(self.split_seed),
                "split_ratios": [float(r) for r in self.split_ratios]}

    @classmethod
    def from_manifest(cls, params: dict[str, Any]) -> ParseParams:
        return cls(**{k: tuple(v) if k == "split_ratios" else v for k, v in params.items()})


class _BatchWriter:
    """Tables in (each run's rows, in file order), Parquet row groups of ``BATCH`` rows out, to a
    temporary file."""

    def __init__(self, path: Path, schema: pa.Schema):
        self.writer = pq.ParquetWriter(path, schema, compression="zstd")
        self.count = 0
        self.tables: list[pa.Table] = []  # not written yet
        self.pending = 0

    def add_table(self, table: pa.Table) -> None:
        self.tables.append(table)
        self.pending += table.num_rows
        while self.pending >= BATCH:
            self._write_tables(BATCH)

    def _write_tables(self, n: int) -> None:
        table = pa.concat_tables(self.tables)
        self.writer.write_table(table.slice(0, n).combine_chunks())
        self.count += n
        rest = table.slice(n)
        self.tables, self.pending = ([rest] if rest.num_rows else []), rest.num_rows

    def close(self) -> None:
        if self.pending:
            self._write_tables(self.pending)
        self.writer.close()


def _is_present(images_dir: Path, rel: str) -> bool:
    """Whether ``images_dir/rel`` is a file as ``os.walk`` would list it (a symlink to a file,
    or a dangling one, counts; a folder does not). One ``lstat`` per image, no listing held
    in memory, however many photos."""
    path = os.path.join(images_dir, rel)
    try:
        st = os.lstat(path)
    except (OSError, ValueError):
        return False
    if stat.S_ISLNK(st.st_mode):
        return not os.path.isdir(path)
    return not stat.S_ISDIR(st.st_mode)



def _parse_layer1(path: Path, writer: _BatchWriter, rejects: list, quiet: bool, executor: Any = None,
                  cleaned: Counter | None = None) -> dict[str, int]:
    """Returns {recipe id: byte offset * 4 + partition code} of the accepted recipes (one small
    int per recipe: the partition for layer2, the offset for duplicates). Runs of records are
    validated by ``executor``'s workers; duplicates are found here, in file order."""
    accepted: dict[str, int] = {}
    size = path.stat().st_size
    with tqdm(total=size, unit="B", unit_scale=True, desc="parse layer1", disable=bar_disabled(quiet)) as bar:
        last = 0
        for table, events in map_array(path, validate_run, executor=executor, columnar=validate_run_columnar):
            keep = None
            row = 0
            for offset, rid, why, code, changed in events:
                if why is None and rid in accepted:
                    why = f"duplicate id (first seen at byte offset {accepted[rid] >> 2})"
                    keep = keep or [True] * table.num_rows
                    keep[row] = False
                    row += 1
                elif why is None:
                    accepted[rid] = (offset << 2) | code
                    row += 1
                    if changed and cleaned is not None:
                        for step, n in changed.items():
                            cleaned[step] += n
                if why is not None:
                    rejects.append(Rejection("parse", path.name, offset, rid, why))
            writer.add_table(table.filter(pa.array(keep)) if keep else table)
            if events:
                bar.update(events[-1][0] - last)
                last = events[-1][0]
        bar.update(size - last)
    return accepted


def _repeated(values: np.ndarray) -> set[int]:
    v = np.sort(values)
    return set(v[1:][v[1:] == v[:-1]].tolist())


def _repeated_ids(path: Path, executor: Any = None) -> tuple[set[int], set[int]]:
    """:func:`.records.id_hash` of the recipe ids and of the image ids that occur more than once in layer2.

    A first pass keeps 8 bytes per id; the second then tracks only these candidates (hash
    collisions just add candidates), instead of a set of every photo id (~100 bytes each:
    more than a gigabyte for Recipe1M+'s 13M photos)."""
    recipes, images = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
    for r, i in map_array(path, hash_layer2_run, executor=executor):
        recipes.append(r)
        images.append(i)
    return _repeated(np.concatenate(recipes)), _repeated(np.concatenate(images))


def _parse_layer2(path: Path, accepted: dict[str, int], images_dir: Path, writer: _BatchWriter, rejects: list,
                  executor: Any = None) -> None:
    """layer2 entries checked in runs by ``executor``'s workers (:func:`.records.check_layer2_run`);
    here, in file order: their recipes looked up, duplicates found, paths made and checked."""
    repeated_recipes, repeated_images = _repeated_ids(path, executor)
    seen_recipes: set[str] = set()  # only ids that occur more than once
    seen_images: set[str] = set()
    for entries in map_array(path, check_layer2_run, executor=executor):
        columns: dict[str, list] = {name: [] for name in IMAGES_SCHEMA.names}
        for offset, rid, why, photos in entries:
            if why is None and repeated_recipes and id_hash(rid) in repeated_recipes:
                if rid in seen_recipes:
                    why = f"duplicate layer2 entry for recipe {rid!r}"
                else:
                    seen_recipes.add(rid)
            if why is not None:
                rejects.append(Rejection("parse", path.name, offset, rid, why))
                continue
            code = accepted.get(rid)
            partition = PARTITIONS[code & 3] if code is not None else None
            position = 0
            for i, iid, why, url, url_bad in photos:
                if why is not None:  # an invalid image id, whatever the recipe
                    rejects.append(Rejection("parse", path.name, offset, rid, why))
                    continue
                if partition is None:
                    why = f"image of unknown or rejected recipe {rid!r}"
                elif repeated_images and id_hash(iid) in repeated_images:
                    if iid in seen_images:
                        why = f"duplicate image id (recipe {rid!r})"
                    else:
                        seen_images.add(iid)
                if why is None and url_bad:
                    why = f"recipe {rid!r} image {i}: url has a lone surrogate escape (not valid Unicode text)"
                if why is not None:
                    rejects.append(Rejection("parse", path.name, offset, iid, why))
                    continue
                rel = image_relpath(partition, iid)
                for name, value in (("image_id", iid), ("recipe_id", rid), ("partition", partition),
                                    ("position", position), ("path", rel), ("present", _is_present(images_dir, rel)),
                                    ("url", url)):
                    columns[name].append(value)
                position += 1
        if columns["image_id"]:
            writer.add_table(pa.Table.from_pydict(columns, schema=IMAGES_SCHEMA))


_DET_SEEN = 1 << 62  # in an accepted recipe's value (offset * 4 + partition): its det_ingrs entry was kept


def _parse_det(path: Path, accepted: dict[str, int], writer: _BatchWriter, rejects: list,
               cleaned: Counter | None = None, executor: Any = None) -> None:
    """det_ingrs entries checked in runs by ``executor``'s workers (:func:`.records.check_det_run`);
    their recipes are looked up, and duplicates found, here in file order."""
    for table, events in map_array(path, check_det_run, executor=executor):
        keep = []  # per row of ``table`` (the entries with names)
        for offset, rid, why, has_names, changed in events:
            if why is None:
                code = accepted.get(rid)
                if code is None:
                    why = f"det_ingrs entry for unknown or rejected recipe {rid!r}"
                elif code & _DET_SEEN:
                    why = "duplicate det_ingrs entry"
                elif not has_names:
                    why = "det_ingrs items must be {'text': str} (valid Unicode text) with boolean 'valid' flags"
                if has_names:
                    keep.append(why is None)
            if why is not None:
                rejects.append(Rejection("parse", path.name, offset, rid, why))
                continue
            accepted[rid] = code | _DET_SEEN  # a flag, not a set of a million more ids
            if changed and cleaned is not None:
                cleaned.update(changed)
        if keep:
            writer.add_table(table if all(keep) else table.filter(pa.array(keep)))


def _run(ctx: StageContext) -> dict[str, Any]:
    src, out = ctx.src, ctx.out
    for required in ("layer1.json", "layer2.json"):
        if not (src / required).is_file():
            raise FileNotFoundError(f"{src / required}: required input missing (SRC must hold layer1.json and layer2.json)")
    with cyclic_gc_paused():  # millions of decoded records, no cycles among them (see jsonfast)
        return _parse_all(ctx, src, out)


def _parse_all(ctx: StageContext, src: Path, out: Path) -> dict[str, Any]:
    rejects: list[Rejection] = []
    cleaned: Counter = Counter()  # texts of kept records that each cleaning step changed
    with atomic_path(out / "recipes.parquet") as tmp:
        writer = _BatchWriter(tmp, RECIPES_SCHEMA)
        try:
            accepted = _parse_layer1(src / "layer1.json", writer, rejects, ctx.quiet, ctx.executor, cleaned)
        finally:
            writer.close()
    rejected_recipes = len(rejects)
    with atomic_path(out / "images.parquet") as tmp:
        writer = _BatchWriter(tmp, IMAGES_SCHEMA)
        try:
            _parse_layer2(src / "layer2.json", accepted, src / "images", writer, rejects, ctx.executor)
        finally:
            writer.close()
        n_images = writer.count
    rejected_images = len(rejects) - rejected_recipes
    det_path = src / "det_ingrs.json"
    with atomic_path(out / "det_ingrs.parquet") as tmp:
        writer = _BatchWriter(tmp, DET_SCHEMA)
        try:
            if det_path.is_file():
                _parse_det(det_path, accepted, writer, rejects, cleaned, ctx.executor)
        finally:
            writer.close()
        n_det = writer.count
    replace_stage_rows(out, "parse", rejects)
    images = pq.read_table(staged(out / "images.parquet"), columns=["present"])["present"]
    n_present = int(pc.sum(images).as_py() or 0)
    per_partition = {p: 0 for p in PARTITIONS}
    for code in accepted.values():
        per_partition[PARTITIONS[code & 3]] += 1
    resplit = {}
    params = ParseParams.from_manifest(ctx.params)
    if params.split == "random":
        per_partition, resplit = random_resplit(out, seed=params.split_seed, ratios=params.split_ratios)
    return {
        "recipes": len(accepted),
        **{f"recipes_{p}": n for p, n in per_partition.items()},
        **resplit,
        "recipes_rejected": rejected_recipes,
        "images": n_images,
        "images_present": n_present,
        "images_missing": n_images - n_present,
        "images_rejected": rejected_images,
        "det_ingrs": n_det,
        "det_ingrs_rejected": len(rejects) - rejected_recipes - rejected_images,
        "quarantined": len(rejects),
        # texts (titles, ingredient lines, instructions, detected ingredients) cleaning changed
        **{f"text_{step}": cleaned[step] for step in STEPS},
    }


STAGE = Stage(
    name="parse",
    run=_run,
    src_inputs=("layer1.json", "layer2.json", "det_ingrs.json", "images"),
    outputs=("recipes.parquet", "images.parquet", "det_ingrs.parquet"),
    description="layer1/layer2/det_ingrs JSON -> validated Parquet",
    params=ParseParams,
)


def parse(src: str | os.PathLike, out: str | os.PathLike, *, params: ParseParams | None = None, force: bool = False,
          quiet: bool = True, workers: int = 1):
    """Run the `parse` stage (skipped when up to date); returns its :class:`StageReport`. With
    ``workers`` > 1, runs of layer1 records are decoded and validated in that many processes."""
    params = params or ParseParams()
    return run_stage(STAGE, src=src, out=out, params=params.manifest(), force=force, quiet=quiet, workers=workers)
