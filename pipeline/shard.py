"""Stage `shard`: recipes with photos to WebDataset tar shards, resumable shard by shard.

One sample per recipe that has photos (``layout="per-recipe"``, the default), or one per photo
(``layout="per-image"``): the tar layouts are described in :mod:`.shardlayout`. With per-image,
``sizes.json`` counts photos (the stock readers' samples) and ``recipes.json`` beside it counts
recipes (the samples of recipekit's loaders, which group a recipe's photos back).

Plan first, then encode. The recipes of each partition are put in a seeded order
(a keyed hash of the id, so shards mix dishes) and cut into shards by ``max_count``
samples and by ``max_bytes`` as *estimated* before encoding (see
:func:`.shardplan.estimate_image_bytes`), so the plan is known, and deterministic, before a
single image is read (:mod:`.shardplan` plans). Each shard is then written by one
worker (a spawned process, or a Ray task: :mod:`.backends`): its tar under a
temporary name, renamed into place, then ``{name}_stats.json`` last. The stats
file carries a digest of the parameters and of the shard's planned content
(recipe JSON, image paths, file sizes and times); a re-run reuses every shard whose
stats file has the same digest and whose tar has the recorded size, so a killed run
resumes where it stopped. Tar headers are fixed (mtime 0, uid/gid 0, no user or
group names, mode 0644) and images are encoded deterministically, so the same input
and seed give byte-identical tars whatever the number of workers.

Bad photos never stop the run: :mod:`.imageio` converts what it can (counted per
kind as ``converted_<kind>``) and every skipped photo, and every recipe left
without one, becomes a row of ``quarantine.parquet``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import PIL
from tqdm import tqdm

from recipekit.core.io import atomic_path, remove_stale_tmp, write_json_atomic

from .progress import bar_disabled
from .imageio import PIXEL_LIMIT, convert_image
from .parse import PARTITIONS
from .quarantine import Rejection, replace_stage_rows
# cut_shards, estimate_image_bytes and shard_order are re-exported here: the planning helpers live in .shardplan
from .shardplan import cut_shards, estimate_image_bytes, plan_shards, shard_order, shard_rows
from .shardlayout import LAYOUTS, write_sample
from .stagekit import Stage, StageContext, package_version, run_stage
from .stageparams import StageParams

__all__ = ["STAGE", "LAYOUTS", "ShardParams", "shard", "stage_params", "estimate_image_bytes", "shard_order",
           "cut_shards", "SHARDS_DIR"]

SHARDS_DIR = "shards"
MAX_BYTES = 1_000_000_000
FORMAT_VERSION = 1  # bump when the bytes written for the same input change
INPUTS = ("recipes.parquet", "images.parquet", "ingredients.parquet", "recipe_classes.parquet")
PLAN_ROWS = 10_000  # recipes whose samples are read back at once (.shardplan.shard_rows)


@dataclass(frozen=True)
class ShardParams(StageParams):
    """The `shard` stage's settings (``prepare --set shard.KEY=VALUE``; also ``--shard-...`` options)."""

    image_size: int = 256  # shorter side of the stored images, in pixels (never upscaled)
    quality: int = 90  # JPEG quality
    max_images: int = 5  # photos per sample, at most
    max_count: int = 1000  # samples per shard, at most
    max_bytes: int = MAX_BYTES  # estimated bytes per shard, at most (see .shardplan.estimate_image_bytes)
    seed: int = 0  # order of the recipes within a partition
    pixel_limit: int = PIXEL_LIMIT  # a photo with more pixels is refused as a decompression bomb
    # A photo reached through a symlink that leaves SRC/images is quarantined unless this is true.
    allow_external_links: bool = False
    # "per-recipe": one sample per recipe ({id}.k.jpg); "per-image": one per photo ({id}_{k}.jpg)
    layout: str = "per-recipe"

    def __post_init__(self) -> None:
        for name in ("image_size", "max_images", "max_count", "max_bytes", "pixel_limit"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"shard parameter {name} must be a positive integer, got {getattr(self, name)!r}")
        if not isinstance(self.quality, int) or not 1 <= self.quality <= 100:
            raise ValueError(f"shard parameter quality must be an integer in 1..100, got {self.quality!r}")
        if not isinstance(self.seed, int):
            raise ValueError(f"shard parameter seed must be an integer, got {self.seed!r}")
        if not isinstance(self.allow_external_links, bool):
            raise ValueError(f"shard parameter allow_external_links must be true or false, got {self.allow_external_links!r}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"shard parameter layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")

    def manifest(self) -> dict[str, Any]:
        return stage_params(self)


def stage_params(params: ShardParams) -> dict[str, Any]:
    """The stage's parameters as recorded in its manifest: the default layout is left out, so
    folders prepared before the layout existed stay up to date."""
    d = asdict(params)
    if d["layout"] == "per-recipe":
        del d["layout"]
    return d


def _digest_params(params: ShardParams) -> dict[str, Any]:
    """The parameters a shard's digest covers; the default link policy is left out so that
    shards written before it existed (which it does not change) are reused."""
    d = stage_params(params)
    if not d["allow_external_links"]:
        del d["allow_external_links"]
    return d


def outside_link(images_dir: str | os.PathLike, rel: str) -> str | None:
    """Where ``images_dir/rel`` really is when a symlink (of the file or of a folder on the way)
    takes it out of ``images_dir``; None when it stays inside (or does not exist)."""
    root = os.path.realpath(images_dir)
    real = os.path.realpath(os.path.join(images_dir, rel))
    if real == root or real.startswith(root.rstrip(os.sep) + os.sep):
        return None
    return real


def _recipe_prefix(row: dict) -> str:
    """The sample JSON without its closing ``"images"`` member and brace."""
    body = {
        "id": row["id"],
        "title": row["title"],
        "ingredients": list(row["names"] or []),
        "ingredient_lines": list(row["lines"] or []),
        "instructions": list(row["instructions"] or []),
        "class_id": int(row["class_id"]),
    }
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))[:-1]


def _stat(path: Path) -> str:
    try:
        st = path.stat()
    except OSError:
        return "-"
    return f"{st.st_size}:{st.st_mtime_ns}"


def _task(index: int, name: str, partition: str, rows: list[dict], pdir: Path, images_dir: Path,
          params: ShardParams) -> dict[str, Any]:
    h = hashlib.sha256(json.dumps([FORMAT_VERSION, PIL.__version__, _digest_params(params)]).encode())
    samples = []
    for row in rows:
        prefix = _recipe_prefix(row)
        photos = list(zip(row["image_id"], row["path"]))
        h.update(prefix.encode())
        for iid, rel in photos:
            h.update(f"\0{iid}\0{rel}\0{_stat(images_dir / rel)}".encode())
        h.update(b"\n")
        samples.append((row["id"], int(row["class_id"]), prefix, photos))
    return {"index": index, "name": name, "partition": partition, "tar": str(pdir / f"{name}.tar"),
            "stats": str(pdir / f"{name}_stats.json"), "images_dir": str(images_dir), "params": stage_params(params),
            "digest": h.hexdigest(), "samples": samples}


def write_shard(task: dict[str, Any]) -> dict[str, Any]:
    """Encode one planned shard: the tar (atomically), then its stats file. Returns the stats."""
    t0 = time.perf_counter()
    p = ShardParams(**task["params"])
    images_dir = Path(task["images_dir"])
    kinds: Counter = Counter()
    quarantine: list[dict[str, str]] = []
    n_samples = n_recipes = n_images = unused = below = dropped = 0
    with atomic_path(task["tar"]) as tmp:
        with open(tmp, "wb") as fh, tarfile.open(fileobj=fh, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for rid, class_id, prefix, photos in task["samples"]:
                kept: list[tuple[str, bytes]] = []
                for k, (iid, rel) in enumerate(photos):
                    if len(kept) >= p.max_images:
                        unused += len(photos) - k
                        break
                    outside = None if p.allow_external_links else outside_link(images_dir, rel)
                    if outside is not None:
                        quarantine.append({"source": rel, "record_id": iid, "reason": (
                            f"symlink leaves the corpus (to {outside}); allow with --shard-allow-external-links")})
                        continue
                    res = convert_image(images_dir / rel, image_size=p.image_size, quality=p.quality,
                                        pixel_limit=p.pixel_limit)
                    if res.data is None:
                        quarantine.append({"source": rel, "record_id": iid, "reason": res.reason})
                        continue
                    kinds.update(res.conversions)
                    below += not res.resized
                    kept.append((iid, res.data))
                if not kept:
                    dropped += 1
                    quarantine.append({"source": rid, "record_id": rid,
                                       "reason": f"recipe dropped: none of its {len(photos)} photos could be read"})
                    continue
                n_samples += write_sample(tar, p.layout, rid, class_id, prefix, task["partition"], kept)
                n_recipes += 1
                n_images += len(kept)
    sha = hashlib.sha256()
    with open(task["tar"], "rb") as fh:
        for block in iter(lambda: fh.read(4 << 20), b""):
            sha.update(block)
    stats = {
        "shard": f"{task['name']}.tar", "partition": task["partition"], "samples": n_samples, "recipes": n_recipes,
        "images": n_images, "bytes": os.path.getsize(task["tar"]), "sha256": sha.hexdigest(),
        "recipes_dropped": dropped,
        "images_skipped": len(quarantine) - dropped, "images_unused": unused, "images_below_size": below,
        "conversions": dict(sorted(kinds.items())), "quarantine": quarantine,
        "wall_s": round(time.perf_counter() - t0, 3), "params_digest": task["digest"], "params": task["params"],
        "recipekit_version": package_version(),
    }
    write_json_atomic(task["stats"], stats)  # last: its presence marks the shard done
    return stats


def _reusable(task: dict[str, Any]) -> dict[str, Any] | None:
    try:
        stats = json.loads(Path(task["stats"]).read_text(encoding="utf-8"))
        if stats.get("params_digest") == task["digest"] and os.path.getsize(task["tar"]) == stats.get("bytes"):
            return stats
    except (OSError, ValueError):
        pass
    return None


def _execute(tasks: Iterator[dict[str, Any]], executor, limit: int, done) -> None:
    """Run ``write_shard`` over ``tasks`` with ``executor`` (:mod:`.backends`: at most two tasks per
    worker in flight, so memory stays bounded); ``done`` gets the stats in task order."""
    submitted: deque[int] = deque()

    def submit() -> Iterator[dict[str, Any]]:
        for task in tasks:
            submitted.append(task["index"])
            yield task

    for stats in executor.imap(write_shard, submit(), limit=limit, describe=_describe):
        done(submitted.popleft(), stats, False)


def _describe(task: dict[str, Any]) -> str:
    return f"shard {task['partition']}/{task['name']}.tar ({len(task['samples'])} recipes)"


def _run(ctx: StageContext) -> dict[str, Any]:
    out, params = ctx.out, ShardParams.from_manifest(ctx.params)
    missing = [name for name in INPUTS if not (out / name).exists()]
    if missing:
        raise FileNotFoundError(f"stage 'shard' needs {', '.join(str(out / m) for m in missing)}: "
                                "run the earlier stages first")
    if ctx.src is None:
        raise ValueError("stage 'shard' needs SRC (the photos are read from SRC/images)")
    images_dir, root = ctx.src / "images", out / SHARDS_DIR
    shard_plan = plan_shards(out, params, list(PARTITIONS))
    plan = shard_plan.shards  # partition -> [(name, ids)]
    # Leave only what this plan will write: stale tmp files, other shards and folders go.
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_tmp(root)
    for entry in root.iterdir():
        if entry.is_dir() and entry.name not in plan:
            shutil.rmtree(entry)
    for partition, shards in plan.items():
        pdir = root / partition
        pdir.mkdir(exist_ok=True)
        remove_stale_tmp(pdir)
        keep = {"sizes.json"} | {f"{n}.tar" for n, _ in shards} | {f"{n}_stats.json" for n, _ in shards}
        if params.layout == "per-image":
            keep.add("recipes.json")
        for entry in pdir.iterdir():
            if entry.name not in keep:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()

    flat = shard_plan.flat()
    results: list[dict | None] = [None] * len(flat)
    reused = 0
    bar = tqdm(total=len(flat), unit="shard", desc="shard", disable=bar_disabled(ctx.quiet))

    def done(index: int, stats: dict, was_reused: bool) -> None:
        nonlocal reused
        results[index] = stats
        reused += was_reused
        bar.update(1)

    # The samples' rows, bucketed into a scratch folder under shards/ (removed when the generator
    # ends or is closed; a killed run's is removed as stale by the next).
    samples = shard_rows(out, flat, rows=PLAN_ROWS, scratch=root)

    def tasks() -> Iterator[dict[str, Any]]:
        for index, rows in samples:
            partition, name, _ = flat[index]
            task = _task(index, name, partition, rows, root / partition, images_dir, params)
            stats = _reusable(task)
            if stats is not None:
                done(index, stats, True)
            else:
                Path(task["stats"]).unlink(missing_ok=True)
                yield task

    try:
        _execute(tasks(), ctx.executor, len(flat), done)
    finally:
        samples.close()
    bar.close()

    index, rejections, kinds = {}, [], Counter()
    totals = Counter()
    for partition, shards in plan.items():
        stats = [results[i] for i, (p, _, _) in enumerate(flat) if p == partition]
        sizes = {s["shard"]: s["samples"] for s in stats}
        write_json_atomic(root / partition / "sizes.json", sizes)
        index[partition] = {"shards": list(sizes), "samples": sum(sizes.values()),
                            "images": sum(s["images"] for s in stats)}
        if params.layout == "per-image":  # the loaders' samples: recipes (absent: per-recipe, samples are recipes)
            recipes = {s["shard"]: s.get("recipes", s["samples"]) for s in stats}
            write_json_atomic(root / partition / "recipes.json", recipes)
            index[partition].update(layout=params.layout, recipes=sum(recipes.values()))
        totals[f"samples_{partition}"] = index[partition]["samples"]
        for s in stats:
            for key in ("samples", "images", "bytes", "recipes_dropped", "images_skipped", "images_unused",
                        "images_below_size"):
                totals[key] += s[key]
            kinds.update(s["conversions"])
            rejections += [Rejection("shard", q["source"], None, q["record_id"], q["reason"]) for q in s["quarantine"]]
    write_json_atomic(root / "index.json", index)
    replace_stage_rows(out, "shard", rejections)
    return {
        "recipes_with_photos": shard_plan.recipes_with_photos,
        "samples": totals["samples"],
        **{f"samples_{p}": totals[f"samples_{p}"] for p in plan},
        "recipes_dropped": totals["recipes_dropped"],
        "images_in_shards": totals["images"],
        "images_quarantined": totals["images_skipped"],
        "images_unused": totals["images_unused"],
        "images_below_size": totals["images_below_size"],
        **{f"converted_{k}": n for k, n in sorted(kinds.items())},
        "quarantined": len(rejections),
        "shards": len(flat),
        "shards_reused": reused,
        "shard_bytes": totals["bytes"],
    }


STAGE = Stage(
    name="shard",
    run=_run,
    src_inputs=("images",),
    out_inputs=INPUTS,
    outputs=(f"{SHARDS_DIR}/index.json",),
    description="photos + recipes -> WebDataset tar shards",
    params=ShardParams,
)


def shard(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    params: ShardParams | None = None,
    workers: int = 1,
    force: bool = False,
    quiet: bool = True,
):
    """Run the `shard` stage (skipped when up to date); returns its :class:`StageReport`.

    Finished shards (stats file with the same digest, tar of the recorded size) are reused
    even with ``force``; their bytes would be the same. Delete ``OUT/shards`` to re-encode.
    """
    params = params or ShardParams()
    return run_stage(STAGE, src=src, out=out, params=params.manifest(), workers=workers, force=force, quiet=quiet)
