"""The sample-stream stages of the WebDataset pipeline: shard lists, splitting, epochs, shuffling.

Every stage is a callable ``stage(iterator) -> iterator`` (the first one takes no input), so a
pipeline is a plain list of them (see :func:`recipekit.loaders.wds.pipeline_stages`).
Randomness never comes from global state: each stage draws from a ``random.Random`` seeded
with ``(seed, epoch, rank, worker, stage name)``, so a run is reproducible from its seed.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "ShardList",
    "ShardSpec",
    "SharedEpoch",
    "default_rank_world",
    "resolve_shards",
    "shuffle_buffer",
    "split_by_node",
    "split_by_worker",
    "stage_rng",
    "take",
    "worker_info",
]


class SharedEpoch:
    """The epoch number, shared with DataLoader worker processes (forked or spawned).

    The loader sets it before each epoch; a worker reads it when it starts iterating, so the
    shard order, the shuffle buffer and the augmentations change every epoch even when the
    workers persist between epochs."""

    def __init__(self, epoch: int = 0):
        self._value = mp.Value("q", int(epoch), lock=False)  # one writer: the main process

    def set(self, epoch: int) -> None:
        self._value.value = int(epoch)

    def get(self) -> int:
        return int(self._value.value)


@dataclass(frozen=True)
class ShardSpec:
    """Resolved shard list: tar paths in order, and per-shard sample counts when known."""

    urls: tuple[str, ...]
    sizes: tuple[int, ...] | None  # from sizes.json next to the shards, when every shard is listed

    @property
    def total(self) -> int | None:
        return sum(self.sizes) if self.sizes is not None else None


def _expand(pattern: str) -> list[str]:
    import braceexpand  # a webdataset dependency

    return list(braceexpand.braceexpand(pattern))


def resolve_shards(shards: str | os.PathLike | Iterable[str | os.PathLike]) -> ShardSpec:
    """Shard URLs from a shard folder (``OUT/shards/train``: its ``sizes.json`` lists the shards),
    a brace pattern (``.../train-{000000..000009}.tar``), one path, or a list of those.
    Each may be a local path, a ``file://`` URL, a ``pipe:`` command or any URL fsspec reads
    (``https://``, ``s3://``...; a remote folder is read through its ``sizes.json``:
    :mod:`recipekit.loaders.remote`). Sample counts come from the ``sizes.json`` beside the
    shards when it lists every one (none for ``pipe:``); shards it counts as empty are left out.
    They count recipes, the loaders' samples: in the per-image layout (``recipes.json`` beside
    ``sizes.json``, which counts photos there) they come from ``recipes.json``."""
    from .remote import is_remote, join_url, local_path, names_shards, read_json

    items = [shards] if isinstance(shards, (str, os.PathLike)) else list(shards)
    urls: list[str] = []
    for item in items:
        item = os.fspath(item)
        path = local_path(item)
        if path is not None and Path(path).is_dir():
            sizes_file = Path(path) / "sizes.json"
            if sizes_file.exists():
                names = sorted(json.loads(sizes_file.read_text(encoding="utf-8")))
            else:
                names = sorted(p.name for p in Path(path).glob("*.tar"))
            urls.extend(str(Path(path) / n) for n in names)
        elif path is None and not names_shards(item):  # a remote split folder: its sizes.json lists the tars
            listed = read_json(join_url(item, "sizes.json"), missing_ok=False)
            urls.extend(join_url(item, n) for n in sorted(listed))
        else:
            urls.extend(_expand(item if path is None else path))  # file:// URLs become local paths
    if not urls:
        raise ValueError(f"no shards found in {shards!r}")
    sizes: list[int] | None = []
    cache: dict[str, dict[str, int]] = {}
    for url in urls:
        if url.startswith("pipe:"):  # a command: no sizes.json to read
            sizes = None
            break
        folder, _, name = url.rpartition("/") if is_remote(url) else (str(Path(url).parent), "", Path(url).name)
        if folder not in cache:
            cache[folder] = _recipe_counts(folder, join_url)
        n = cache[folder].get(name)
        if n is None:
            sizes = None
            break
        sizes.append(int(n))
    if sizes is not None:  # shards without samples add nothing (and could starve a reader)
        urls = [u for u, n in zip(urls, sizes) if n > 0]
        sizes = [n for n in sizes if n > 0]
        if not urls:
            raise ValueError(f"the shards of {shards!r} hold no samples (sizes.json)")
    return ShardSpec(tuple(urls), tuple(sizes) if sizes is not None else None)


def _recipe_counts(folder: str, join_url) -> dict[str, int]:
    """Recipes per shard of a shard folder: ``recipes.json`` (per-image layout), else ``sizes.json``."""
    from .remote import read_json

    return read_json(join_url(folder, "recipes.json")) or read_json(join_url(folder, "sizes.json")) or {}


def default_rank_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """``rank``/``world_size`` as given; missing ones from torch.distributed when it is
    initialised, else 0 and 1 (nothing is read from environment variables)."""
    if rank is None or world_size is None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            rank = dist.get_rank() if rank is None else rank
            world_size = dist.get_world_size() if world_size is None else world_size
    rank, world_size = int(rank or 0), int(world_size or 1)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
    return rank, world_size


def worker_info() -> tuple[int, int]:
    """(worker id, number of workers) of the current DataLoader worker; (0, 1) outside one."""
    from torch.utils.data import get_worker_info

    info = get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


def stage_rng(seed: int, epoch: int, rank: int, name: str) -> random.Random:
    """A generator for one stage of one worker in one epoch."""
    worker, _ = worker_info()
    key = f"{seed}/{epoch}/{rank}/{worker}/{name}".encode()
    return random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "little"))


class ShardList:
    """First stage: ``{"url": path}`` for each shard. With ``shuffle``, the order is a
    permutation drawn from ``(seed, epoch, pass)`` (the same in every worker and rank, so the
    split stages that follow hand each shard to exactly one of them). With ``repeat`` the
    list is passed over again and again (each pass reshuffled): the stream is endless and a
    later ``take`` stage ends the epoch."""

    def __init__(self, urls: Iterable[str], *, seed: int, epoch: SharedEpoch, shuffle: bool, repeat: bool):
        self.urls = list(urls)
        self.seed, self.epoch, self.shuffle, self.repeat = seed, epoch, shuffle, repeat

    def __call__(self) -> Iterator[dict[str, Any]]:
        epoch = self.epoch.get()
        passes = 0
        while True:
            order = list(self.urls)
            if self.shuffle:
                key = f"{self.seed}/{epoch}/{passes}/shards".encode()
                random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "little")).shuffle(order)
            for url in order:
                yield {"url": url}
            passes += 1
            if not self.repeat:
                return


class split_by_node:
    """Keep every ``world_size``-th shard, starting at ``rank``."""

    def __init__(self, rank: int, world_size: int):
        self.rank, self.world_size = rank, world_size

    def __call__(self, src: Iterator[Any]) -> Iterator[Any]:
        for i, item in enumerate(src):
            if i % self.world_size == self.rank:
                yield item


def split_by_worker(src: Iterator[Any]) -> Iterator[Any]:
    """Keep every ``num_workers``-th item, starting at this DataLoader worker's id."""
    worker, workers = worker_info()
    for i, item in enumerate(src):
        if i % workers == worker:
            yield item


class take:
    """End the stream after ``n`` items (the fixed epoch length of one worker)."""

    def __init__(self, n: int):
        self.n = n

    def __call__(self, src: Iterator[Any]) -> Iterator[Any]:
        if self.n <= 0:
            return
        for i, item in enumerate(src, 1):
            yield item
            if i >= self.n:
                return


class shuffle_buffer:
    """Shuffle with a buffer of ``size`` items: once it has filled, each incoming item
    replaces a random buffered one, which is emitted; at the end the rest are emitted in
    random order. Nothing is dropped: the output is a permutation of the input."""

    def __init__(self, size: int, *, seed: int, epoch: SharedEpoch, rank: int):
        self.size, self.seed, self.epoch, self.rank = max(1, int(size)), seed, epoch, rank

    def __call__(self, src: Iterator[Any]) -> Iterator[Any]:
        rng = stage_rng(self.seed, self.epoch.get(), self.rank, "shuffle")
        buf: list[Any] = []
        for item in src:
            if len(buf) < self.size:
                buf.append(item)
                continue
            k = rng.randrange(len(buf))
            buf[k], item = item, buf[k]
            yield item
        rng.shuffle(buf)
        yield from buf
