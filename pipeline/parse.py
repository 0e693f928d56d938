"""Stage `parse`: layer1/layer2/det_ingrs JSON to validated, cleaned Parquet.

Streams ``layer1.json`` (bounded memory, see :mod:`.jsonstream`), validates and
cleans every record (runs of records decoded by orjson and validated in the stage's
workers, see :mod:`.jsonfast`; the tables are the same, byte for byte, as one process
with the standard library's decoder gives), and joins ``layer2.json`` (images) and ``det_ingrs.json``
(detected ingredients) by recipe id. Every rejected record becomes a row of
``quarantine.parquet`` naming the file, byte offset, id and reason; malformed
JSON stops the stage with an error naming the byte offset.
"""

from __future__ import annotations

import os
import re
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

from .jsonfast import iter_array_fast as iter_array
from .jsonfast import map_array
from .jsonstream import InvalidElement
from .progress import bar_disabled
from .quarantine import Rejection, replace_stage_rows
from .stagekit import Stage, StageContext, run_stage
from .stageparams import StageParams, require
from .textclean import clean_text

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

PARTITIONS = ("train", "val", "test")


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

_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_IMAGE_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}(\.[A-Za-z0-9]{1,5})?")
BATCH = 20_000
# A lone surrogate (JSON's "\ud800" escape without its pair) is valid JSON but not text: it
# cannot be written as UTF-8, so the record holding it is quarantined.
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def _not_text(value: str) -> bool:
    return not value.isascii() and _SURROGATE_RE.search(value) is not None

# Every string column of every Parquet file of a prepared folder is large_string (and every
# list a large_list): what polars writes for the other stages' tables, so the files agree
# (a reader concatenating or casting them sees one type), with 64-bit offsets.
RECIPES_SCHEMA = pa.schema(
    [
        ("id", pa.large_string()),
        ("partition", pa.large_string()),
        ("title", pa.large_string()),
        ("ingredients", pa.large_list(pa.large_string())),
        ("instructions", pa.large_list(pa.large_string())),
        ("url", pa.large_string()),
    ]
)
IMAGES_SCHEMA = pa.schema(
    [
        ("image_id", pa.large_string()),
        ("recipe_id", pa.large_string()),
        ("partition", pa.large_string()),
        ("position", pa.int16()),  # order of the image within its recipe (0 = first)
        ("path", pa.large_string()),  # relative to SRC/images
        ("present", pa.bool_()),
        ("url", pa.large_string()),
    ]
)
DET_SCHEMA = pa.schema([("id", pa.large_string()), ("ingredients", pa.large_list(pa.large_string()))])


def image_relpath(partition: str, image_id: str) -> str:
    """Recipe1M's image path: ``{partition}/a/b/c/d/{image_id}``."""
    return "/".join([partition, *image_id[:4], image_id])


def _text_items(rec: dict, field: str, stats: Counter | None = None) -> tuple[list[str] | None, str | None]:
    value = rec.get(field)
    if field not in rec:
        return None, f"missing field '{field}'"
    if not isinstance(value, list):
        return None, f"field '{field}' must be a list, got {type(value).__name__}"
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, dict) or not isinstance(item.get("text"), str):
            return None, f"field '{field}' item {i} must be an object with a string 'text'"
        if _not_text(item["text"]):
            return None, f"field '{field}' item {i}: lone surrogate escape (not valid Unicode text)"
        text = clean_text(item["text"], stats)
        if text:
            out.append(text)
    return out, None


def validate_recipe(rec: Any, stats: Counter | None = None) -> tuple[dict | None, str | None, str | None]:
    """Validate and clean one layer1 record: ``(row, None, id)`` or ``(None, reason, id)``.
    ``stats``: a Counter that :func:`~.textclean.clean_text` adds what cleaning changed to."""
    if isinstance(rec, InvalidElement):
        return None, rec.reason, rec.record_id
    if not isinstance(rec, dict):
        return None, f"record is not a JSON object but {type(rec).__name__}", None
    rid = rec.get("id")
    if "id" not in rec:
        return None, "missing field 'id'", None
    if not isinstance(rid, str):
        return None, f"field 'id' must be a string, got {type(rid).__name__}", None
    if not _ID_RE.fullmatch(rid):
        return None, f"invalid id {rid!r}: 1-64 letters, digits, '_' or '-'", rid
    for field in ("title", "partition"):
        if field not in rec:
            return None, f"missing field '{field}'", rid
        if not isinstance(rec[field], str):
            return None, f"field '{field}' must be a string, got {type(rec[field]).__name__}", rid
    if _not_text(rec["title"]):
        return None, "field 'title': lone surrogate escape (not valid Unicode text)", rid
    if rec["partition"] not in PARTITIONS:
        return None, f"unknown partition {rec['partition']!r} (expected train, val or test)", rid
    url = rec.get("url")
    if url is not None and not isinstance(url, str):
        return None, f"field 'url' must be a string, got {type(url).__name__}", rid
    if url is not None and _not_text(url):
        return None, "field 'url': lone surrogate escape (not valid Unicode text)", rid
    ingredients, why = _text_items(rec, "ingredients", stats)
    if why:
        return None, why, rid
    instructions, why = _text_items(rec, "instructions", stats)
    if why:
        return None, why, rid
    title = clean_text(rec["title"], stats)
    if not title:
        return None, "empty recipe: no title", rid
    if not ingredients:
        return None, "empty recipe: no ingredients", rid
    if not instructions:
        return None, "empty recipe: no instructions", rid
    row = {
        "id": rid,
        "partition": rec["partition"],
        "title": title,
        "ingredients": ingredients,
        "instructions": instructions,
        "url": url,
    }
    return row, None, rid


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


_PART_CODE = {p: i for i, p in enumerate(PARTITIONS)}


def _validate_run(elements: list[tuple[int, Any]]) -> tuple[pa.Table, list[tuple]]:
    """Validate and clean a run of layer1 records (in a worker): the accepted rows as one table, and
    per record ``(offset, id, reason or None, partition code, what cleaning changed or None)`` in
    file order."""
    rows, events = [], []
    for offset, rec in elements:
        changed: Counter = Counter()
        row, why, rid = validate_recipe(rec, changed)
        if row is None:
            events.append((offset, rid, why, -1, None))
        else:
            rows.append(row)
            events.append((offset, rid, None, _PART_CODE[row["partition"]], dict(changed) or None))
    return pa.Table.from_pylist(rows, schema=RECIPES_SCHEMA), events


def _parse_layer1(path: Path, writer: _BatchWriter, rejects: list, quiet: bool, executor: Any = None,
                  cleaned: Counter | None = None) -> dict[str, int]:
    """Returns {recipe id: byte offset * 4 + partition code} of the accepted recipes (one small
    int per recipe: the partition for layer2, the offset for duplicates). Runs of records are
    validated by ``executor``'s workers; duplicates are found here, in file order."""
    accepted: dict[str, int] = {}
    size = path.stat().st_size
    with tqdm(total=size, unit="B", unit_scale=True, desc="parse layer1", disable=bar_disabled(quiet)) as bar:
        last = 0
        for table, events in map_array(path, _validate_run, executor=executor):
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
                        cleaned.update(changed)
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
            if not isinstance(iid, str) or not _IMAGE_ID_RE.fullmatch(iid):
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
            if isinstance(url, str) and _not_text(url):
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
               cleaned: Counter | None = None) -> None:
    seen: set[str] = set()
    for offset, entry in iter_array(path):
        rid = entry.get("id") if isinstance(entry, dict) else None
        rid = rid if isinstance(rid, str) else None

        def reject(why: str, record_id: str | None = rid) -> None:
            rejects.append(Rejection("parse", path.name, offset, record_id, why))

        if isinstance(entry, InvalidElement):
            reject(entry.reason, entry.record_id)
            continue
        if rid is None:
            reject("det_ingrs entry without a string 'id'")
            continue
        ingredients, valid = entry.get("ingredients"), entry.get("valid")
        if not isinstance(ingredients, list) or not isinstance(valid, list) or len(ingredients) != len(valid):
            reject("det_ingrs entry needs lists 'ingredients' and 'valid' of equal length")
            continue
        if rid not in accepted:
            reject(f"det_ingrs entry for unknown or rejected recipe {rid!r}")
            continue
        if rid in seen:
            reject("duplicate det_ingrs entry")
            continue
        names = []
        changed: Counter = Counter()
        for item, ok in zip(ingredients, valid):
            if (not isinstance(item, dict) or not isinstance(item.get("text"), str) or not isinstance(ok, bool)
                    or _not_text(item["text"])):
                names = None
                break
            if ok:
                text = clean_text(item["text"], changed).lower()
                if text:
                    names.append(text)
        if names is None:
            reject("det_ingrs items must be {'text': str} (valid Unicode text) with boolean 'valid' flags")
            continue
        seen.add(rid)
        writer.add({"id": rid, "ingredients": names})
        if changed and cleaned is not None:
            cleaned.update(changed)


def _run(ctx: StageContext) -> dict[str, Any]:
    src, out = ctx.src, ctx.out
    for required in ("layer1.json", "layer2.json"):
        if not (src / required).is_file():
            raise FileNotFoundError(f"{src / required}: required input missing (SRC must hold layer1.json and layer2.json)")
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
                _parse_det(det_path, accepted, writer, rejects, cleaned)
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
        **{f"text_{step}": cleaned[step] for step in ("markup_removed", "entities_decoded", "unicode_folded")},
    }


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
