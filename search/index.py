"""`recipekit index`: embed every recipe and every photo of a prepared folder with a trained model.

:func:`build_index` writes ``RUN/index/`` (docs/search.md has the layout): the vectors
(``recipes.npy``, ``images.npy``, float32, L2-normalised), their rows (``recipes.parquet``,
``images.parquet``), the ingredient names a query may use (``ingredients.parquet``), the train
means of the recipe tower's components (``components.npz``), an approximate FAISS index per
kind when it holds more than ``approximate_above`` vectors (``*.ivf.faiss``; smaller kinds are
searched exactly, ``IndexFlatIP`` over the .npy) and ``meta.json``, written last. The folder is
built under a temporary name and renamed into place, so an interrupted build leaves the
previous index (or none), never half of one.
"""

from __future__ import annotations

import math
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from recipekit.core.layout import Run

from .corpus import image_table, recipe_table
from .errors import SearchError

__all__ = ["APPROXIMATE_ABOVE", "DEFAULT_NPROBE", "FORMAT", "INDEX_DIR", "RECALL_TARGET", "build_index",
           "faiss_index", "read_meta", "resolve_run", "tune_nprobe"]

FORMAT = "recipekit.index/1"
INDEX_DIR = Run.INDEX
# From benchmarks/search.py (docs/benchmarks.md, "Search index"): past this many vectors of a kind an
# exact query costs more than ~20 ms of one core at 1024 dimensions, so an IVF index is built.
APPROXIMATE_ABOVE = 80_000
DEFAULT_NPROBE = None  # IVF cells visited per query: None = tuned at build time (tune_nprobe)
RECALL_TARGET = 0.95  # recall@10 against the exact search that the tuned nprobe must reach
KINDS = ("recipes", "images")


def _faiss():
    try:
        import faiss
    except ImportError as exc:
        raise SearchError("recipekit index/search need FAISS: pip install 'recipekit[search]'") from exc
    return faiss


def resolve_run(run: str | os.PathLike) -> tuple[Path, Path]:
    """(checkpoint, default index folder) of a run folder (``RUN/best.pt``, ``RUN/index``) or of
    an embedder file or model folder (``FILE``, ``FOLDER/index`` beside it)."""
    try:
        found = Run.resolve(run)
    except FileNotFoundError as exc:
        raise SearchError(str(exc)) from None
    return found.checkpoint, found.index_dir


def _write_parquet(path: Path, columns: dict[str, list]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    def large(t):  # string and list columns as large_string / large_list, like the prepared folder's
        if pa.types.is_string(t):
            return pa.large_string()
        if pa.types.is_list(t) or pa.types.is_large_list(t):
            return pa.large_list(large(t.value_type))
        return t

    table = pa.table(columns)
    table = table.cast(pa.schema([pa.field(f.name, large(f.type), f.nullable) for f in table.schema]))
    pq.write_table(table, path, compression="zstd")


def faiss_index(vectors: np.ndarray, kind: str, *, nprobe: int = 8, seed: int = 0):
    """An inner-product FAISS index over ``vectors``: ``"exact"`` (IndexFlatIP) or ``"ivf"``
    (IVF with round(sqrt(N)) cells, at most N/39, k-means on at most 64 vectors a cell, ``nprobe``
    cells a query)."""
    faiss = _faiss()
    dim = int(vectors.shape[1])
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if kind == "exact":
        index = faiss.IndexFlatIP(dim)
    elif kind == "ivf":
        # about sqrt(N) cells, and at least the 39 training points a cell that FAISS's k-means asks for
        nlist = max(1, min(int(round(math.sqrt(len(vectors)))), len(vectors) // 39))
        index = faiss.index_factory(dim, f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        sample = vectors[np.sort(rng.choice(len(vectors), min(len(vectors), 64 * nlist), replace=False))]
        index.train(sample)
        index.nprobe = int(nprobe)
    else:
        raise ValueError(f"unknown index kind {kind!r}; choose exact or ivf")
    index.add(vectors)
    return index


def tune_nprobe(index, vectors: np.ndarray, queries: np.ndarray, *, fixed: int | None = None,
                target: float = RECALL_TARGET, n_queries: int = 200, seed: int = 0) -> dict[str, Any]:
    """Set ``index.nprobe``: ``fixed``, or the smallest of 8, 16, 32, ... (at most nlist) whose
    recall@10 against an exact search reaches ``target`` on up to ``n_queries`` of ``queries``
    (the other modality's vectors: the searches the index will serve). Returns what was chosen
    and the recall measured with it."""
    faiss = _faiss()
    rng = np.random.default_rng(seed)
    q = np.ascontiguousarray(queries[np.sort(rng.choice(len(queries), min(len(queries), n_queries), replace=False))],
                             dtype=np.float32)
    k = min(10, len(vectors))
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(np.ascontiguousarray(vectors, dtype=np.float32))
    _, truth = exact.search(q, k)
    del exact
    nlist = int(index.nlist)
    candidates = [fixed] if fixed else sorted({min(nlist, 8 << i) for i in range(max(1, nlist.bit_length()))})
    for nprobe in candidates:
        index.nprobe = int(nprobe)
        _, found = index.search(q, k)
        recall = float(np.mean([len(set(f) & set(t)) / k for f, t in zip(found, truth)]))
        if recall >= target:
            break
    return {"nprobe": int(index.nprobe), "recall_at_10": round(recall, 4), "recall_queries": len(q),
            "nprobe_rule": "fixed" if fixed else f"smallest power of two >= 8 with recall@10 >= {target}"}


def read_meta(index_dir: Path) -> dict[str, Any]:
    import json

    path = Path(index_dir) / "meta.json"
    if not path.is_file():
        raise SearchError(f"{path}: missing; no finished index in {index_dir} (run `recipekit index RUN`)")
    meta = json.loads(path.read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT:
        raise SearchError(f"{path}: not a {FORMAT} index (format {meta.get('format')!r}); rebuild it")
    return meta


class _Progress:
    def __init__(self, enabled: bool, total: int, desc: str):
        self.bar = None
        if enabled and total:
            from tqdm import tqdm

            from recipekit.pipeline.progress import bar_disabled

            self.bar = tqdm(total=total, desc=desc, unit="item", disable=bar_disabled())

    def __call__(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def build_index(
    run: str | os.PathLike,
    data: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    *,
    device: Any = "auto",
    batch_size: int = 64,
    num_workers: int = 0,
    approximate_above: int = APPROXIMATE_ABOVE,
    nprobe: int | None = DEFAULT_NPROBE,
    progress: bool = False,
) -> Path:
    """Embed every recipe (all partitions, with or without photos) and every stored photo (all
    shard partitions) of ``data`` (default: the run's ``data.prepared``) with the model of
    ``run`` (a run folder or an embedder file); write the index folder ``out`` (default
    ``RUN/index``) and return it. A kind with more than ``approximate_above`` vectors also
    gets an IVF index searched with ``nprobe`` cells (None: the fewest that reach
    recall@10 >= 0.95 against the exact search on the other modality's vectors, :func:`tune_nprobe`)."""
    from recipekit.embedders import load_embedder
    from recipekit.core.device import resolve_device
    from recipekit.core.io import atomic_dir, file_sha256, write_json_atomic
    from recipekit.pipeline.stagekit import package_version

    from .embedding import embed_images, embed_recipes

    _faiss()
    checkpoint, default_out = resolve_run(run)
    try:
        prepared = Run.resolve(run).prepared(data).resolve()
    except (FileNotFoundError, ValueError) as exc:
        raise SearchError(str(exc)) from exc
    out = Path(out) if out is not None else default_out
    try:
        model = load_embedder(checkpoint)
    except ValueError as exc:  # one line naming the file (see load_weights_file)
        raise SearchError(str(exc)) from None
    dev = resolve_device(device)
    model.to(dev).eval()
    started = time.perf_counter()
    images = image_table(prepared)
    table = recipe_table(prepared, images)
    if not table["recipe_id"]:
        raise SearchError(f"{prepared / 'recipes.parquet'}: no recipes to index")
    row_of = {rid: i for i, rid in enumerate(table["recipe_id"])}
    missing = sorted({r["recipe_id"] for r in images if r["recipe_id"] not in row_of})
    if missing:
        raise SearchError(f"{prepared / 'shards'}: photos of recipes not in recipes.parquet ({', '.join(missing[:5])})")
    bar = _Progress(progress, len(table["recipe_id"]), "recipes")
    recipe_vecs, means, n_train = embed_recipes(model, prepared, table, device=dev, batch_size=batch_size, progress=bar)
    bar.close()
    bar = _Progress(progress, len(images), "images")
    image_vecs = embed_images(model, prepared, images, device=dev, batch_size=batch_size, num_workers=num_workers,
                              progress=bar)
    bar.close()
    embed_s = time.perf_counter() - started
    vocab = _read_vocab(prepared)
    faiss = _faiss()
    with atomic_dir(out) as tmp:
        np.save(tmp / "recipes.npy", recipe_vecs)
        np.save(tmp / "images.npy", image_vecs)
        _write_parquet(tmp / "recipes.parquet", {k: table[k] for k in (
            "recipe_id", "partition", "title", "ingredients", "class_id", "class_name", "image_paths")})
        _write_parquet(tmp / "images.parquet", {
            "recipe_id": [r["recipe_id"] for r in images],
            "recipe_row": [row_of[r["recipe_id"]] for r in images],
            "position": [r["position"] for r in images],
            "image_id": [r["image_id"] for r in images],
            "path": [table["image_paths"][row_of[r["recipe_id"]]][j] for r, j in zip(images, _positions(images))],
            "partition": [r["partition"] for r in images],
            "shard": [r["shard"] for r in images],
            "offset": [r["offset"] for r in images],
            "size": [r["size"] for r in images],
        })
        _write_parquet(tmp / "ingredients.parquet", vocab)
        np.savez(tmp / "components.npz", **means)
        indexes: dict[str, Any] = {}
        for kind, vecs in (("recipes", recipe_vecs), ("images", image_vecs)):
            approximate = len(vecs) > approximate_above
            entry: dict[str, Any] = {"count": len(vecs), "kind": "ivf" if approximate else "exact", "file": None}
            if approximate:
                t0 = time.perf_counter()
                index = faiss_index(vecs, "ivf", nprobe=nprobe or 8)
                other = image_vecs if kind == "recipes" else recipe_vecs
                tuned = tune_nprobe(index, vecs, other if len(other) else vecs, fixed=nprobe or None)
                faiss.write_index(index, str(tmp / f"{kind}.ivf.faiss"))
                entry.update(file=f"{kind}.ivf.faiss", nlist=int(index.nlist), **tuned,
                             build_s=round(time.perf_counter() - t0, 3))
            indexes[kind] = entry
        meta = {
            "format": FORMAT,
            "recipekit_version": package_version(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "checkpoint": {"path": str(checkpoint.resolve()), "sha256": file_sha256(checkpoint),
                           "embedder": model.config.get("name"), "recipe_tower": model.config["recipe"]["tower"]},
            "prepared": str(prepared),
            "image_size": _shard_image_size(prepared),
            "dim": int(model.embed_dim),
            "counts": {"recipes": len(recipe_vecs), "images": len(image_vecs),
                       "recipes_with_images": sum(1 for p in table["image_paths"] if p),
                       "train_recipes_in_means": n_train, "ingredient_names": len(vocab["name"])},
            "index": indexes,
            "approximate_above": int(approximate_above),
            "components": sorted(means),
            "timing": {"device": str(dev), "embed_s": round(embed_s, 3)},
        }
        write_json_atomic(tmp / "meta.json", meta)  # last: its presence marks a finished index
    return out


def _shard_image_size(prepared: Path) -> int:
    """Shorter side of the shard photos (a query photo is brought to the same size)."""
    from recipekit.pipeline.stagekit import read_manifest

    manifest = read_manifest(prepared, "shard") or {}
    return int((manifest.get("params") or {}).get("image_size") or 256)


def _positions(images: list[dict[str, Any]]):
    """For each image row, its index among its recipe's stored photos (shard order = position order)."""
    seen: dict[str, int] = {}
    for r in images:
        j = seen.get(r["recipe_id"], 0)
        seen[r["recipe_id"]] = j + 1
        yield j


def _read_vocab(prepared: Path) -> dict[str, list]:
    import pyarrow.parquet as pq

    path = prepared / "ingredient_vocab.parquet"
    if not path.is_file():
        raise SearchError(f"{path}: missing (run `recipekit prepare` with the ingredients stage)")
    t = pq.read_table(path, columns=["name", "count"])
    return {"name": t.column("name").to_pylist(), "count": t.column("count").to_pylist()}
