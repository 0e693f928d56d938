"""Stage `parse`: layer1/layer2/det_ingrs JSON to validated, cleaned Parquet.

Streams ``layer1.json`` (bounded memory, see :mod:`.jsonstream`), validates and
cleans every record (runs of records read in columns by Arrow in the stage's workers, see
:mod:`.columnar`, or decoded by orjson and validated one by one where Arrow cannot decide, see
:mod:`.jsonfast`; the tables are the same, byte for byte, as one process with the standard
library's decoder gives), and joins ``layer2.json`` (images) and ``det_ingrs.json``
(detected ingredients) by recipe id: det_ingrs entries are checked in the workers too
(:func:`.records.check_det_run`), and looked up here. Python's cyclic garbage collector is
paused meanwhile (:func:`.jsonfast.cyclic_gc_paused`). Every rejected record becomes a row of
``quarantine.parquet`` naming the file, byte offset, id and reason; malformed
JSON stops the stage with an error naming the byte offset.
"""

from __future__ import annotations

import os
import stat
from array import array
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
from .jsonfast import iter_array_fast as iter_array
from .jsonfast import cyclic_gc_paused, map_array
from .jsonstream import InvalidElement
from .progress import bar_disabled
from .quarantine import Rejection, replace_stage_rows
from .records import (BATCH, DET_SCHEMA, IMAGE_ID_RE, IMAGES_SCHEMA, PARTITIONS, RECIPES_SCHEMA, check_det_run,
                      image_relpath, not_text, validate_recipe, validate_run)
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
    """Rows in, Parquet row groups of ``BATCH`` rows out, to a temporary file."""

    def __init__(self, path: Path, schema: pa.Schema):
        self.schema = schema
        self.writer = pq.ParquetWriter(path, schema, compression="zstd")
        self.rows: list[dict] = []
        self.count = 0
        self.tables: list[pa.Table] = []  # rows added as tables, not written yet
        self.pending = 0

    def add(self, row: dict) -> None:
        self.rows.append(row)
        if len(self.rows) >= BATCH:
            self.flush()

    def add_table(self, table: pa.Table) -> None:
        """Rows already converted (by a worker); written in the same row groups as row by row."""
        if self.rows:  # keep the order when both ways are mixed
            self.flush()
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

    def flush(self) -> None:
        if self.pending:
            self._write_tables(self.pending)
        if self.rows:
            self.writer.write_table(pa.Table.from_pylist(self.rows, schema=self.schema))
            self.count += len(self.rows)
            self.rows = []

    def close(self) -> None:
        self.flush()
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


def _repeated(values: array) -> set[int]:
    v = np.sort(np.frombuffer(values, dtype=np.int64)) if len(values) else np.zeros(0, dtype=np.int64)
    return set(v[1:][v[1:] == v[:-1]].tolist())


def _repeated_ids(path: Path) -> tuple[set[int], set[int]]:
    """Hashes of the recipe ids and of the image ids that occur more than once in layer2.

    A first pass keeps 8 bytes per id; the second then tracks only these candidates (hash
    collisions just add candidates), instead of a set of every photo id (~100 bytes each:
    more than a gigabyte for Recipe1M+'s 13M photos)."""
    recipes, images = array("q"), array("q")
    for _offset, entry in iter_array(path):
        if not isinstance(entry, dict):
            continue
        rid = entry.get("id")
        if isinstance(rid, str):
            recipes.append(hash(rid))
        imgs = entry.get("images")
        if isinstance(imgs, list):
            for img in imgs:
                iid = img.get("id") if isinstance(img, dict) else None
                if isinstance(iid, str):
                    images.append(hash(iid))
    return _repeated(recipes), _repeated(images)


def _parse_layer2(path: Path, accepted: dict[str, int], images_dir: Path, writer: _BatchWriter, rejects: list):
    repeated_recipes, repeated_images = _repeated_ids(path)
    seen_recipes: set[str] = set()  # only ids that occur more than once
    seen_images: set[str] = set()
    for offset, entry in iter_array(path):
        rid = entry.get("id") if isinstance(entry, dict) else None
        rid = rid if isinstance(rid, str) else None

        def reject(why: str, record_id: str | None = rid) -> None:
            rejects.append(Rejection("parse", path.name, offset, record_id, why))

        if isinstance(entry, InvalidElement):
            reject(entry.reason, entry.record_id)
            continue
        if rid is None:
            reject("layer2 entry without a string 'id'")
            continue
        images = entry.get("images")
        if not isinstance(images, list):
            reject("layer2 field 'images' must be a list")
            continue
        if hash(rid) in repeated_recipes:
            if rid in seen_recipes:
                reject(f"duplicate layer2 entry for recipe {rid!r}")
                continue
            seen_recipes.add(rid)
        code = accepted.get(rid)
        partition = PARTITIONS[code & 3] if code is not None else None
        position = 0
        for i, img in enumerate(images):
            iid = img.get("id") if isinstance(img, dict) else None
            if not isinstance(iid, str) or not IMAGE_ID_RE.fullmatch(iid):
                reject(f"recipe {rid!r} image {i}: invalid image id {iid!r}")
                continue
            if partition is None:
                reject(f"image of unknown or rejected recipe {rid!r}", iid)
                continue
            if hash(iid) in repeated_images:
                if iid in seen_images:
                    reject(f"duplicate image id (recipe {rid!r})", iid)
                    continue
                seen_images.add(iid)
            url = img.get("url")
            if isinstance(url, str) and not_text(url):
                reject(f"recipe {rid!r} image {i}: url has a lone surrogate escape (not valid Unicode text)", iid)
                continue
            rel = image_relpath(partition, iid)
            writer.add(
                {
                    "image_id": iid,
                    "recipe_id": rid,
                    "partition": partition,
                    "position": position,
                    "path": rel,
                    "present": _is_present(images_dir, rel),
                    "url": url if isinstance(url, str) else None,
                }
            )
            position += 1


def _parse_det(path: Path, accepted: dict[str, int], writer: _BatchWriter, rejects: list,
               cleaned: Counter | None = None, executor: Any = None) -> None:
    """det_ingrs entries checked in runs by ``executor``'s workers (:func:`.records.check_det_run`);
    their recipes are looked up, and duplicates found, here in file order."""
    seen: set[str] = set()
    for table, events in map_array(path, check_det_run, executor=executor):
        keep, row = [], 0
        for offset, rid, why, has_names, changed in events:
            if why is None:
                if rid not in accepted:
                    why = f"det_ingrs entry for unknown or rejected recipe {rid!r}"
                elif rid in seen:
                    why = "duplicate det_ingrs entry"
                elif not has_names:
                    why = "det_ingrs items must be {'text': str} (valid Unicode text) with boolean 'valid' flags"
                if has_names:
                    keep.append(why is None)
                    row += 1
            if why is not None:
                rejects.append(Rejection("parse", path.name, offset, rid, why))
                continue
            seen.add(rid)
            if changed and cleaned is not None:
                cleaned.update(changed)
        if row:
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
            _parse_layer2(src / "layer2.json", accepted, src / "images", writer, rejects)
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
