"""Recipe1M records: the prepared tables' schemas and the validation and cleaning of layer1 records,
layer2 entries and det_ingrs entries, run by the `parse` stage's workers (see :mod:`.parse`)."""

from __future__ import annotations

import re
import zlib
from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa

from .jsonstream import InvalidElement
from .textclean import clean_text

__all__ = [
    "PARTITIONS",
    "RECIPES_SCHEMA",
    "IMAGES_SCHEMA",
    "DET_SCHEMA",
    "BATCH",
    "IMAGE_ID_RE",
    "not_text",
    "image_relpath",
    "validate_recipe",
    "validate_run",
    "check_det_entry",
    "check_det_run",
    "check_layer2_entry",
    "check_layer2_run",
    "hash_layer2_run",
    "id_hash",
]

PARTITIONS = ("train", "val", "test")

_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
IMAGE_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}(\.[A-Za-z0-9]{1,5})?")
BATCH = 20_000  # rows per Parquet row group of the parse stage's tables
# A lone surrogate (JSON's "\ud800" escape without its pair) is valid JSON but not text: it
# cannot be written as UTF-8, so the record holding it is quarantined.
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def not_text(value: str) -> bool:
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
        if not_text(item["text"]):
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
    if not_text(rec["title"]):
        return None, "field 'title': lone surrogate escape (not valid Unicode text)", rid
    if rec["partition"] not in PARTITIONS:
        return None, f"unknown partition {rec['partition']!r} (expected train, val or test)", rid
    url = rec.get("url")
    if url is not None and not isinstance(url, str):
        return None, f"field 'url' must be a string, got {type(url).__name__}", rid
    if url is not None and not_text(url):
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


_PART_CODE = {p: i for i, p in enumerate(PARTITIONS)}


def validate_run(elements: list[tuple[int, Any]]) -> tuple[pa.Table, list[tuple]]:
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


def check_det_entry(entry: Any) -> tuple[str | None, str | None, list[str] | None, Counter]:
    """The checks of one det_ingrs entry that need nothing but the entry: ``(id, reason, names,
    changed)``. ``reason``: why the entry is refused before its recipe is looked up (None: it is
    not); ``names``: the cleaned, lower-cased texts of its valid items, or None when an item is
    not ``{"text": str}`` with a boolean flag (refused after the lookup); ``changed``: what
    cleaning changed."""
    changed: Counter = Counter()
    if isinstance(entry, InvalidElement):
        return entry.record_id, entry.reason, None, changed
    rid = entry.get("id") if isinstance(entry, dict) else None
    if not isinstance(rid, str):
        return None, "det_ingrs entry without a string 'id'", None, changed
    ingredients, valid = entry.get("ingredients"), entry.get("valid")
    if not isinstance(ingredients, list) or not isinstance(valid, list) or len(ingredients) != len(valid):
        return rid, "det_ingrs entry needs lists 'ingredients' and 'valid' of equal length", None, changed
    names: list[str] = []
    for item, ok in zip(ingredients, valid):
        if (not isinstance(item, dict) or not isinstance(item.get("text"), str) or not isinstance(ok, bool)
                or not_text(item["text"])):
            return rid, None, None, changed
        if ok:
            text = clean_text(item["text"], changed).lower()
            if text:
                names.append(text)
    return rid, None, names, changed


def check_det_run(elements: list[tuple[int, Any]]) -> tuple[pa.Table, list[tuple]]:
    """:func:`check_det_entry` over a run of det_ingrs entries (in a worker): a table of the entries
    with names (``DET_SCHEMA``), and per entry ``(offset, id, reason, has names, what cleaning
    changed or None)`` in file order; the `parse` stage then looks their recipes up."""
    rows, events = [], []
    for offset, entry in elements:
        rid, why, names, changed = check_det_entry(entry)
        if why is None and names is not None:
            rows.append({"id": rid, "ingredients": names})
        events.append((offset, rid, why, names is not None, dict(changed) or None))
    return pa.Table.from_pylist(rows, schema=DET_SCHEMA), events


def id_hash(value: str) -> int:
    """A 64-bit hash of an id that every process agrees on (Python's ``hash`` of a str is salted
    per process): CRC-32 and Adler-32 of its UTF-8 bytes side by side, as a signed int64."""
    data = value.encode("utf-8", "surrogatepass")
    h = zlib.crc32(data) << 32 | zlib.adler32(data)
    return h - (1 << 64) if h >= 1 << 63 else h


def hash_layer2_run(elements: list[tuple[int, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`id_hash` of every string recipe id and image id in a run of layer2 entries (in a
    worker): the `parse` stage's first pass, which finds the ids that may occur twice."""
    recipes, images = [], []
    for _offset, entry in elements:
        if not isinstance(entry, dict):
            continue
        rid = entry.get("id")
        if isinstance(rid, str):
            recipes.append(id_hash(rid))
        imgs = entry.get("images")
        if isinstance(imgs, list):
            for img in imgs:
                iid = img.get("id") if isinstance(img, dict) else None
                if isinstance(iid, str):
                    images.append(id_hash(iid))
    return np.array(recipes, dtype=np.int64), np.array(images, dtype=np.int64)


def check_layer2_entry(entry: Any) -> tuple[str | None, str | None, list[tuple]]:
    """The checks of one layer2 entry that need nothing but the entry: ``(id, reason, photos)``.
    ``reason``: why the whole entry is refused (None: it is not); ``photos``: per photo ``(index,
    id, reason, url, url is not text)``, the reason (an invalid id) holding whatever its recipe,
    the id None then."""
    if isinstance(entry, InvalidElement):
        return entry.record_id, entry.reason, []
    rid = entry.get("id") if isinstance(entry, dict) else None
    if not isinstance(rid, str):
        return None, "layer2 entry without a string 'id'", []
    images = entry.get("images")
    if not isinstance(images, list):
        return rid, "layer2 field 'images' must be a list", []
    photos = []
    for i, img in enumerate(images):
        iid = img.get("id") if isinstance(img, dict) else None
        if not isinstance(iid, str) or not IMAGE_ID_RE.fullmatch(iid):
            photos.append((i, None, f"recipe {rid!r} image {i}: invalid image id {iid!r}", None, False))
            continue
        url = img.get("url")
        url = url if isinstance(url, str) else None
        photos.append((i, iid, None, url, url is not None and not_text(url)))
    return rid, None, photos


def check_layer2_run(elements: list[tuple[int, Any]]) -> list[tuple]:
    """:func:`check_layer2_entry` over a run of layer2 entries (in a worker): per entry ``(offset,
    id, reason, photos)`` in file order; the `parse` stage then looks their recipes up."""
    return [(offset, *check_layer2_entry(entry)) for offset, entry in elements]
