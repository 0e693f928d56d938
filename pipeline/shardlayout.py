"""The two sample layouts of the `shard` stage's tars (:mod:`.shard` plans and writes them).

``per-recipe`` (the default): one sample per recipe, keyed by the recipe id::

    {id}.json   {"id", "title", "ingredients", "ingredient_lines", "instructions", "class_id", "images"}
    {id}.cls    the class id, ASCII decimal
    {id}.0.jpg  ... {id}.4.jpg: up to ``max_images`` photos, in images.parquet position order

``per-image``: one sample per stored photo, keyed ``{id}_{k}``, the convention of the tools
paired with WebDataset (open_clip, img2dataset outputs, HF ``datasets``, wids)::

    {id}_{k}.jpg   photo k of the recipe (a recipe's photos are consecutive samples, k = 0, 1, ...)
    {id}_{k}.json  the recipe JSON above without "images", plus "recipe_id", "partition",
                   "photo_index" (k) and "image_id"
    {id}_{k}.cls   the class id, ASCII decimal

Tar headers are fixed (mtime 0, uid/gid 0, no user or group names, mode 0644), so the same
samples give the same bytes.
"""

from __future__ import annotations

import io
import json
import tarfile

__all__ = ["LAYOUTS", "member", "write_sample"]

LAYOUTS = ("per-recipe", "per-image")


def member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.type = len(data), 0, 0o644, tarfile.REGTYPE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def write_sample(tar: tarfile.TarFile, layout: str, rid: str, class_id: int, prefix: str, partition: str,
                 kept: list[tuple[str, bytes]]) -> int:
    """Write one recipe's ``kept`` (image id, JPEG) photos; ``prefix`` is its JSON without the
    closing ``"images"`` member and brace. Returns the number of tar samples written."""
    if layout == "per-image":
        for k, (iid, data) in enumerate(kept):
            extra = {"recipe_id": rid, "partition": partition, "photo_index": k, "image_id": iid}
            text = prefix + "," + json.dumps(extra, ensure_ascii=False, separators=(",", ":"))[1:]
            member(tar, f"{rid}_{k}.jpg", data)
            member(tar, f"{rid}_{k}.json", text.encode("utf-8"))
            member(tar, f"{rid}_{k}.cls", str(class_id).encode("ascii"))
        return len(kept)
    text = prefix + ',"images":' + json.dumps([iid for iid, _ in kept]) + "}"
    member(tar, f"{rid}.json", text.encode("utf-8"))
    member(tar, f"{rid}.cls", str(class_id).encode("ascii"))
    for j, (_, data) in enumerate(kept):
        member(tar, f"{rid}.{j}.jpg", data)
    return 1
