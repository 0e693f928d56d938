"""What an index covers, read from a prepared folder (torch-free).

* :func:`recipe_table`: every recipe of ``recipes.parquet`` (all partitions, photos or not), with
  its canonical ingredient names (``ingredients.parquet``), class (``recipe_classes.parquet``)
  and the layer2 paths of the photos stored in the shards.
* :func:`image_table`: every photo stored in the shards of every partition listed in
  ``shards/index.json``, with the byte range of its JPEG inside its tar, so that one photo is
  read back with one ``pread`` (:func:`read_member`) without scanning the shard.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow.parquet as pq

from recipekit.core.layout import Prepared

from .errors import SearchError

__all__ = ["image_table", "read_member", "recipe_table", "class_names"]


def _read(prepared: Path, name: str, columns: list[str]) -> dict[str, list]:
    path = prepared / name
    if not path.is_file():
        raise SearchError(f"{path}: missing (run `recipekit prepare` on the corpus first)")
    table = pq.read_table(path, columns=columns)
    return {c: table.column(c).to_pylist() for c in columns}


def class_names(prepared: Path) -> dict[int, str]:
    """``classes.json`` as {class id: name} (0 = background)."""
    path = Prepared(prepared).classes
    if not path.is_file():
        raise SearchError(f"{path}: missing (run `recipekit prepare` with the classes stage)")
    return {int(k): str(v) for k, v in json.loads(path.read_text(encoding="utf-8")).items()}


class _Counting:
    """A binary stream that remembers where each ``read`` started."""

    def __init__(self, stream: BinaryIO):
        self.stream, self.pos, self.starts = stream, 0, []

    def read(self, n: int) -> bytes:
        self.starts.append(self.pos)
        data = self.stream.read(n)
        self.pos += len(data)
        return data


def _members(path: Path):
    """(name, data, offset of the data) of every regular member of the tar at ``path``."""
    from recipekit.loaders.tario import iter_members

    with open(path, "rb", buffering=1 << 20) as fh:
        counting = _Counting(fh)
        for name, data in iter_members(counting, str(path)):
            # iter_members reads the header, the data, then the padding when there is any.
            start = counting.starts[-2] if len(data) % 512 else counting.starts[-1]
            yield name, data, start


def image_table(prepared: Path) -> list[dict[str, Any]]:
    """One row per photo in ``PREPARED/shards``: ``recipe_id``, ``position`` (``k`` of
    ``{id}.k.jpg``, or of ``{id}_{k}.jpg`` in the per-image layout), ``image_id``, ``partition``, ``shard`` (relative to PREPARED), ``offset``
    and ``size`` of the JPEG bytes in the tar; in shard order."""
    from recipekit.loaders.tario import split_key

    index_path = Prepared(prepared).shard_index
    if not index_path.is_file():
        raise SearchError(f"{index_path}: missing (run `recipekit prepare` with the shard stage)")
    index = json.loads(index_path.read_text(encoding="utf-8"))
    rows: list[dict[str, Any]] = []
    for partition, entry in index.items():
        per_image = entry.get("layout") == "per-image"
        for shard in entry.get("shards", []):
            rel = f"shards/{partition}/{shard}"
            pending: dict[str, list[dict[str, Any]]] = {}
            image_ids: dict[str, list[str]] = {}
            for name, data, offset in _members(prepared / rel):
                key, ext = split_key(name)
                if key is None:
                    continue
                if per_image:  # {id}_{k}.jpg / .json: the photo's own JSON names its image id
                    _per_image_member(key, ext, data, offset, partition, rel, pending, image_ids)
                elif ext == "json":
                    image_ids[key] = list(json.loads(data.decode("utf-8")).get("images") or [])
                elif ext.endswith(".jpg") and ext[:-4].isdigit():
                    pending.setdefault(key, []).append({
                        "recipe_id": key, "position": int(ext[:-4]), "partition": partition, "shard": rel,
                        "offset": offset, "size": len(data),
                    })
            for key, items in pending.items():
                ids = image_ids.get(key, [])
                for item in sorted(items, key=lambda r: r["position"]):
                    item["image_id"] = ids[item["position"]] if item["position"] < len(ids) else None
                    rows.append(item)
    return rows


def _per_image_member(key: str, ext: str, data: bytes, offset: int, partition: str, rel: str,
                      pending: dict[str, list[dict[str, Any]]], image_ids: dict[str, list[str]]) -> None:
    from recipekit.loaders.tario import photo_key

    recipe, k = photo_key({"__key__": key, "__url__": rel})
    if ext == "json":
        ids = image_ids.setdefault(recipe, [])
        ids.extend([None] * (k + 1 - len(ids)))
        ids[k] = json.loads(data.decode("utf-8")).get("image_id")
    elif ext == "jpg":
        pending.setdefault(recipe, []).append({
            "recipe_id": recipe, "position": k, "partition": partition, "shard": rel, "offset": offset,
            "size": len(data),
        })


def recipe_table(prepared: Path, images: list[dict[str, Any]]) -> dict[str, list]:
    """Columns ``recipe_id, partition, title, ingredients (canonical names), class_id,
    class_name, image_paths`` for every recipe of ``recipes.parquet``, in its order, plus the
    prepared text (``ingredient_lines``, ``instructions``) for tokenising."""
    rec = _read(prepared, "recipes.parquet", ["id", "partition", "title", "ingredients", "instructions"])
    ingr = _read(prepared, "ingredients.parquet", ["id", "ingredients"])
    cls = _read(prepared, "recipe_classes.parquet", ["id", "class_id", "class_name"])
    names = dict(zip(ingr["id"], ingr["ingredients"]))
    classes = {i: (c, n) for i, c, n in zip(cls["id"], cls["class_id"], cls["class_name"])}
    paths_by_image: dict[str, str] = {}
    img_path = prepared / "images.parquet"
    if img_path.is_file():
        meta = _read(prepared, "images.parquet", ["image_id", "path"])
        paths_by_image = dict(zip(meta["image_id"], meta["path"]))
    photos: dict[str, list[str]] = {}
    for row in images:
        photos.setdefault(row["recipe_id"], []).append(paths_by_image.get(row["image_id"], row["image_id"] or ""))
    ids = rec["id"]
    return {
        "recipe_id": ids,
        "partition": rec["partition"],
        "title": rec["title"],
        "ingredients": [list(names.get(i) or []) for i in ids],
        "class_id": [int(classes.get(i, (0, ""))[0]) for i in ids],
        "class_name": [str(classes.get(i, (0, "background"))[1]) for i in ids],
        "image_paths": [photos.get(i, []) for i in ids],
        "ingredient_lines": rec["ingredients"],
        "instructions": rec["instructions"],
    }


def read_member(prepared: Path, shard: str, offset: int, size: int) -> bytes:
    """The ``size`` bytes at ``offset`` of ``PREPARED/{shard}`` (one photo's JPEG)."""
    path = prepared / shard
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise SearchError(f"{path}: cannot read the shard ({exc.strerror}); was the prepared folder moved?") from exc
    try:
        data = os.pread(fd, size, offset)
    finally:
        os.close(fd)
    if len(data) != size:
        raise SearchError(f"{path}: shorter than the index says (rebuild it with `recipekit index`)")
    return data
