"""Stage `store`: every recipe, tokenised, in one LMDB file for O(1) random access.

``OUT/recipes.lmdb/data.mdb`` maps each recipe id (UTF-8) to its token ids against
``word2vec/vocab.txt`` (:func:`recipekit.pipeline.vocab.tokenise_sample`: title, ingredient
lines, one canonical-name id per line, instructions), its class id and its partition. Every
recipe is stored, with or without photos (H-T trains its recipe loss on all of them).
Entries whose key starts with ``/`` (never part of an id) hold the metadata (``/meta``, JSON)
and the ids of each partition in ``recipes.parquet`` order (``/keys/{partition}``,
newline-separated), so loaders can enumerate recipe-only training sets.

Value encoding (``recipekit.recipes/1``; little-endian, no pickle): a 12-byte header
``b"RK"``, format version (1), integer width ``w`` (2 or 4 bytes), partition code (0 train,
1 val, 2 test), 3 zero bytes, class id (int32); then unsigned ``w``-byte integers
``[n_title, n_ingredients, n_instructions, ingredient lengths..., instruction lengths...,
ingredient-name ids..., title ids..., ingredient ids..., instruction ids...]``. ``w`` is 2
when every id fits (vocabularies up to 65,534 words), else 4. Decoding is one
``memoryview.cast(...).tolist()`` and list slicing (docs/benchmarks.md has the read speed).

:class:`RecipeStore` opens the file read-only without locks (``readonly=True,
lock=False``): the file never changes once renamed into place. The environment is opened
lazily in each process (and again after a fork), so a store can be handed to DataLoader
workers, forked or spawned.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from array import array
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lmdb
import numpy as np
from tqdm import tqdm

from recipekit.core.io import TMP_MARK, atomic_dir, staged
from recipekit.core.layout import Prepared
from recipekit.core.limits import DEFAULT_LIMITS

from .progress import bar_disabled
from .parse import PARTITIONS
from .stagekit import Stage, StageContext, run_stage
from .stageparams import StageParams, positive_ints
from .vocab import Vocabulary, tokenise_sample

__all__ = ["FORMAT", "STAGE", "StoreParams", "RecipeStore", "decode_record", "encode_record", "store"]

FORMAT = "recipekit.recipes/1"
_MAGIC = b"RK\x01"
_PARTS = {p: i for i, p in enumerate(PARTITIONS)}
_CODES = {2: "H", 4: "I"}
_LITTLE = sys.byteorder == "little"
CHUNK = 20_000  # recipes per write transaction
TASK = 5_000  # recipes per encoding task, at most CHUNK (two tasks per worker are in flight: memory)


@dataclass(frozen=True)
class StoreParams(StageParams):
    """The `store` stage's settings (``prepare --set store.KEY=VALUE``): limits of the tokenised recipes."""

    max_ingredients: int = DEFAULT_LIMITS.max_ingredients  # ingredient lines kept per recipe
    max_instructions: int = DEFAULT_LIMITS.max_instructions  # instructions kept per recipe
    max_tokens: int = DEFAULT_LIMITS.max_tokens  # tokens kept per title, ingredient line and instruction

    def __post_init__(self) -> None:
        positive_ints(self, "store", "max_ingredients", "max_instructions", "max_tokens")


def _ints(values: list[int], width: int) -> bytes:
    arr = array(_CODES[width], values)
    if not _LITTLE:
        arr.byteswap()
    return arr.tobytes()


def encode_record(tokens: dict[str, Any], class_id: int, partition: str, width: int = 2) -> bytes:
    """Bytes of one recipe (``tokens`` as returned by :func:`tokenise_sample`)."""
    ingredients, instructions = tokens["ingredients"], tokens["instructions"]
    names = list(tokens.get("ingredient_names") or [])[: len(ingredients)]
    names += [0] * (len(ingredients) - len(names))
    flat = [len(tokens["title"]), len(ingredients), len(instructions)]
    flat += [len(s) for s in ingredients] + [len(s) for s in instructions] + names + list(tokens["title"])
    for seq in ingredients:
        flat += seq
    for seq in instructions:
        flat += seq
    header = _MAGIC + bytes([width, _PARTS.get(partition, 255), 0, 0, 0]) + int(class_id).to_bytes(4, "little", signed=True)
    return header + _ints(flat, width)


def decode_record(buf: bytes | memoryview) -> dict[str, Any]:
    """The dict :func:`encode_record` stored: ``title``, ``ingredients``, ``ingredient_names``,
    ``instructions`` (lists of ids, ready for ``collate_recipes``), ``class_id``, ``partition``."""
    mv = memoryview(buf)
    if bytes(mv[:3]) != _MAGIC:
        raise ValueError(f"not a {FORMAT} record")
    width, part = mv[3], mv[4]
    if _LITTLE:
        v = mv[12:].cast(_CODES[width]).tolist()
    else:  # pragma: no cover - big-endian hosts
        arr = array(_CODES[width], bytes(mv[12:]))
        arr.byteswap()
        v = arr.tolist()
    nt, ni, ns = v[0], v[1], v[2]
    p = 3 + ni + ns
    ing_lens, ins_lens = v[3 : 3 + ni], v[3 + ni : p]
    names = v[p : p + ni]
    p += ni
    title = v[p : p + nt]
    p += nt
    ingredients = []
    for n in ing_lens:
        ingredients.append(v[p : p + n])
        p += n
    instructions = []
    for n in ins_lens:
        instructions.append(v[p : p + n])
        p += n
    return {
        "title": title,
        "ingredients": ingredients,
        "ingredient_names": names,
        "instructions": instructions,
        "class_id": int.from_bytes(mv[8:12], "little", signed=True),
        "partition": PARTITIONS[part] if part < len(PARTITIONS) else "unknown",
    }


# One read-only environment per data file and process, shared by every RecipeStore on it:
# LMDB (and py-lmdb) refuse to open the same file twice in a process.
_ENVS: dict[tuple[int, int], list] = {}  # (st_dev, st_ino) of data.mdb -> [Environment, users]
_ENVS_LOCK = threading.Lock()


def _forget_parent_envs() -> None:
    """In a forked child: close the inherited handles (LMDB handles must not cross a fork;
    with ``lock=False`` closing touches no lock file) so the child can open its own."""
    global _ENVS_LOCK
    _ENVS_LOCK = threading.Lock()
    for env, _ in _ENVS.values():
        try:
            env.close()
        except Exception:
            pass
    _ENVS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_parent_envs)


def _acquire_env(path: Path, readahead: bool):
    st = os.stat(path / "data.mdb")
    key = (st.st_dev, st.st_ino)
    with _ENVS_LOCK:
        entry = _ENVS.get(key)
        if entry is None:
            env = lmdb.open(str(path), readonly=True, lock=False, readahead=readahead, subdir=True)
            entry = _ENVS[key] = [env, 0]
        entry[1] += 1
        return key, entry[0]


def _release_env(key: tuple[int, int]) -> None:
    with _ENVS_LOCK:
        entry = _ENVS.get(key)
        if entry is not None:
            entry[1] -= 1
            if entry[1] <= 0:
                entry[0].close()
                del _ENVS[key]


class RecipeStore:
    """Read-only access to ``recipes.lmdb`` (the folder, or a prepared OUT that holds it).

    ``store[id]`` -> dict (:func:`decode_record` plus ``id``); ``len(store)``;
    ``store.keys(partition=None)`` -> ids (of one partition, or of all in partition order);
    ``store.get_many(ids)``; ``id in store``; ``store.meta``; ``close()``. Safe to pickle and
    to use from several processes: each opens its own read-only, lock-free handle on first use.
    """

    def __init__(self, path: str | os.PathLike, *, readahead: bool = False):
        path = Path(path)
        if not (path / "data.mdb").exists() and Prepared(path).has_store:
            path = Prepared(path).store
        if not (path / "data.mdb").exists():
            raise FileNotFoundError(f"{path}: no LMDB recipe store here (run `recipekit prepare ... --stages store`)")
        self.path = path
        self.readahead = readahead
        self._env = None
        self._key: tuple[int, int] | None = None
        self._pid: int | None = None
        self._local = threading.local()
        self._meta: dict[str, Any] | None = None
        self._keys: dict[str, list[str]] = {}

    # -- per-process handle ------------------------------------------------------------
    def _txn(self):
        if self._env is None or self._pid != os.getpid():
            # First use in this process (a handle inherited through fork is never used).
            self._key, self._env = _acquire_env(self.path, self.readahead)
            self._pid = os.getpid()
            self._local = threading.local()
        txn = getattr(self._local, "txn", None)
        if txn is None:
            # The file never changes, so one read transaction per thread serves every lookup.
            txn = self._local.txn = self._env.begin(buffers=True)
        return txn

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "readahead": self.readahead}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], readahead=state["readahead"])

    def _raw(self, key: str) -> memoryview | None:
        return self._txn().get(key.encode("utf-8"))

    # -- public API ----------------------------------------------------------------------
    @property
    def meta(self) -> dict[str, Any]:
        if self._meta is None:
            raw = self._raw("/meta")
            if raw is None:
                raise ValueError(f"{self.path}: no /meta entry: not a recipekit recipe store")
            self._meta = json.loads(bytes(raw).decode("utf-8"))
        return self._meta

    def __len__(self) -> int:
        return int(self.meta["count"])

    def __contains__(self, recipe_id: object) -> bool:
        return isinstance(recipe_id, str) and not recipe_id.startswith("/") and self._raw(recipe_id) is not None

    def __getitem__(self, recipe_id: str) -> dict[str, Any]:
        raw = self._raw(recipe_id) if not recipe_id.startswith("/") else None
        if raw is None:
            raise KeyError(recipe_id)
        rec = decode_record(raw)
        rec["id"] = recipe_id
        return rec

    def get_many(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        return [self[i] for i in ids]

    def keys(self, partition: str | None = None) -> list[str]:
        """Ids of ``partition`` in recipes.parquet order (all partitions, in order, if None)."""
        parts = list(self.meta["partitions"]) if partition is None else [partition]
        out: list[str] = []
        for part in parts:
            if part not in self._keys:
                if part not in self.meta["partitions"]:
                    raise KeyError(f"no partition {part!r}; the store has {', '.join(self.meta['partitions'])}")
                raw = self._raw(f"/keys/{part}")
                text = bytes(raw).decode("utf-8") if raw is not None else ""
                self._keys[part] = text.split("\n") if text else []
            out.extend(self._keys[part])
        return out

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def close(self) -> None:
        """Let go of the LMDB handle (closed when no other store in this process uses it)."""
        txn = getattr(self._local, "txn", None) if self._pid == os.getpid() else None
        if txn is not None:
            txn.abort()
        if self._env is not None and self._pid == os.getpid():
            _release_env(self._key)
        self._env = None
        self._local = threading.local()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self) -> RecipeStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RecipeStore({str(self.path)!r})"


# -- the stage -----------------------------------------------------------------------------
_W: dict[str, Any] = {}


def _init_worker(vocab_path: str, limits: tuple[int, int, int], width: int) -> None:
    _W.update(vocab=Vocabulary.from_file(vocab_path), limits=limits, width=width)


def _encode_chunk(rows: list[tuple]) -> list[bytes]:
    vocab, (mi, ms, mt), width = _W["vocab"], _W["limits"], _W["width"]
    out = []
    for _id, partition, title, lines, steps, names, class_id in rows:
        sample = {"title": title, "ingredient_lines": lines or [], "ingredients": names or [], "instructions": steps or []}
        out.append(encode_record(tokenise_sample(sample, vocab, mi, ms, mt), class_id or 0, partition, width))
    return out


def _encoded_chunks(ctx: StageContext, out: Path, vocab_path: Path, limits, width) -> Iterator[tuple[list, list, list]]:
    """(ids, partitions, encoded values) per task of ``min(TASK, CHUNK)`` recipes in recipes.parquet order,
    read in step from the row-aligned stage outputs and encoded by ``ctx.executor``."""
    from .tablestream import iter_aligned, num_rows  # deferred: it imports polars (see _run)

    specs = [(out / "recipes.parquet", ["id", "partition", "title", "ingredients", "instructions"]),
             (out / "ingredients.parquet", ["ingredients"]), (out / "recipe_classes.parquet", ["class_id"])]
    heads: deque = deque()
    rows_per_task = min(TASK, CHUNK)

    def rows() -> Iterator[list[tuple]]:
        for recipes, names, classes in iter_aligned(specs, rows=rows_per_task):
            heads.append((recipes.get_column("id").to_list(), recipes.get_column("partition").to_list()))
            yield [(*r, n, c) for r, n, c in zip(recipes.rows(), names.get_column("ingredients").to_list(),
                                                  classes.get_column("class_id").to_list())]

    n_chunks = -(-num_rows(specs[0][0]) // rows_per_task)
    for values in ctx.executor.imap(_encode_chunk, rows(), initializer=_init_worker,
                                    initargs=(str(vocab_path), limits, width), limit=max(1, n_chunks),
                                    describe=_describe):
        ids, partitions = heads.popleft()
        yield ids, partitions, values


def _describe(rows: list[tuple]) -> str:
    return f"recipes {rows[0][0]} .. {rows[-1][0]} ({len(rows)} in the chunk)" if rows else "empty chunk"


def _run(ctx: StageContext) -> dict[str, Any]:
    # polars is deferred (the heavy dependency of the stage only): readers (RecipeStore, the loaders) need lmdb alone
    import polars as pl

    out, p = ctx.out, StoreParams.from_manifest(ctx.params)
    limits = (p.max_ingredients, p.max_instructions, p.max_tokens)
    vocab_path = out / "word2vec" / "vocab.txt"
    vocab = Vocabulary.from_file(vocab_path)
    width = 2 if max(len(vocab), *limits) < 2**16 else 4
    # LMDB is written in key order (append-only: densely packed pages). Only the ids are sorted
    # here; the values are encoded in file order, in chunks, to a scratch file and read back
    # in key order, so memory holds a few bytes per recipe plus one chunk, not the corpus.
    ids = pl.read_parquet(out / "recipes.parquet", columns=["id"]).get_column("id")
    order = ids.arg_sort().to_numpy()
    count = len(ids)
    offsets = np.zeros(count + 1, dtype=np.int64)
    keys: dict[str, list[str]] = {q: [] for q in PARTITIONS}  # "\n"-joined ids per chunk
    scratch = out / f"{Prepared.STORE}-values{TMP_MARK}{os.getpid()}"
    n_bytes, row = 0, 0
    try:
        with open(scratch, "wb") as fh:
            for chunk_ids, chunk_parts, values in _encoded_chunks(ctx, out, vocab_path, limits, width):
                for value in values:
                    fh.write(value)
                    n_bytes += len(value)
                    row += 1
                    offsets[row] = n_bytes
                for q in PARTITIONS:
                    mine = [i for i, part in zip(chunk_ids, chunk_parts) if part == q]
                    if mine:
                        keys[q].append("\n".join(mine))
        if row != count:
            raise ValueError(f"{out / 'recipes.parquet'}: read {row:,} recipes of {count:,}")
        partitions = [q for q in PARTITIONS if keys[q]]
        per_part = {q: sum(part.count("\n") + 1 for part in keys[q]) for q in partitions}
        with atomic_dir(Prepared(out).store) as tmp, open(scratch, "rb") as src:
            # The map is a bound on the file size, not an allocation (the file grows as written).
            env = lmdb.open(str(tmp), map_size=(1 << 30) + count * 16384, lock=False, subdir=True,
                            sync=False, metasync=False, meminit=True)
            try:
                bar = tqdm(total=count, unit="recipe", desc="store", disable=bar_disabled(ctx.quiet))
                fd = src.fileno()
                for start in range(0, count, CHUNK):
                    block = order[start : start + CHUNK]
                    starts, ends = offsets[block].tolist(), offsets[block + 1].tolist()
                    with env.begin(write=True) as txn:
                        for rid, a, b in zip(ids.gather(block).to_list(), starts, ends):
                            txn.put(rid.encode("utf-8"), os.pread(fd, b - a, a), append=True)
                    bar.update(len(block))
                bar.close()
                meta = {
                    "format": FORMAT, "count": count, "partitions": per_part,
                    "vocab_size": len(vocab), "vocab_sha256": vocab.digest(), "width": width,
                    "max_ingredients": limits[0], "max_instructions": limits[1], "max_tokens": limits[2],
                }
                with env.begin(write=True) as txn:
                    txn.put(b"/meta", json.dumps(meta, sort_keys=True).encode("utf-8"))
                    for q in partitions:
                        txn.put(f"/keys/{q}".encode(), "\n".join(keys[q]).encode("utf-8"))
                env.sync(True)
            finally:
                env.close()
    finally:
        scratch.unlink(missing_ok=True)
    size = (staged(Prepared(out).store) / "data.mdb").stat().st_size  # committed when the stage ends
    return {"recipes": count, **per_part, "value_bytes": n_bytes,
            "file_bytes": size, "width": width}


STAGE = Stage(
    name="store",
    run=_run,
    out_inputs=("recipes.parquet", "ingredients.parquet", "recipe_classes.parquet", "word2vec/vocab.txt"),
    outputs=(f"{Prepared.STORE}/data.mdb",),
    description="every recipe tokenised in an LMDB file, keyed by id",
    params=StoreParams,
)


def store(
    out: str | os.PathLike,
    *,
    params: StoreParams | None = None,
    workers: int = 1,
    force: bool = False,
    quiet: bool = True,
):
    """Run the `store` stage on a prepared OUT (after `word2vec` and `classes`)."""
    params = params or StoreParams()
    return run_stage(STAGE, src=None, out=out, params=params.manifest(), workers=workers, force=force, quiet=quiet)
