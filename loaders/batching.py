"""Sample- and batch-level stages: pick an image, group into batches (plain or class-aware),
decode + tokenise + collate.

A raw sample from a shard is a dict of bytes keyed by extension (``json``, ``cls``,
``0.jpg``, ...). :class:`pick_image` reduces it to ``{"id", "json", "class_id", "image",
"image_index"}`` (one image, so buffers hold one photo per recipe); the grouping stages yield
lists of those; :class:`decode_batch` turns a list into the training batch::

    {"images": float32 [B, 3, S, S] (normalised; uint8 with normalize=False),
     "recipes": collate_recipes(...) (dict of LongTensors, see recipekit.embedders.text),
     "class_ids": int64 [B], "image_index": int64 [B] (which photo of the recipe), "ids": [str],
     "balanced": bool (class-aware batches only: the composition was met)}
"""

from __future__ import annotations

import hashlib
import json
from collections import deque
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from recipekit.core.limits import DEFAULT_LIMITS
from recipekit.pipeline.vocab import tokenise_sample

from .buffers import SLOT_KEY, BatchBuffers, shared_empty
from .images import IMAGENET_MEAN, IMAGENET_STD, ImageDecoder
from .shards import SharedEpoch, stage_rng
from .tario import photo_key

__all__ = ["as_torch", "batches", "class_aware_batches", "decode_batch", "empty_batch", "group_photos", "image_keys",
           "pick_image"]


def image_keys(sample: dict[str, Any]) -> list[str]:
    """The photo members of a raw sample (``0.jpg``, ``1.jpg``, ...), in index order."""
    keys = [k for k in sample if k.endswith(".jpg") and k[:-4].isdigit()]
    return sorted(keys, key=lambda k: int(k[:-4]))


class group_photos:
    """Stage: the per-image layout back to per-recipe samples. A run of samples ``{id}_{k}`` with
    a ``jpg`` (one photo each, consecutive in their shard) becomes ``{"__key__": id, "json",
    "cls", "0.jpg", "1.jpg", ...}`` (the first photo's JSON and class; ``k`` kept as the photo
    index); samples of the per-recipe layout pass through unchanged, so either layout reads
    the same way downstream."""

    def __call__(self, src: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        group: dict[str, Any] | None = None
        for sample in src:
            if "jpg" not in sample:
                if group is not None:
                    yield group
                    group = None
                yield sample
                continue
            recipe, k = photo_key(sample)
            if group is None or group["__key__"] != recipe or group["__url__"] != sample.get("__url__"):
                if group is not None:
                    yield group
                group = {"__key__": recipe, "__url__": sample.get("__url__")}
                for ext in ("json", "cls"):
                    if ext in sample:
                        group[ext] = sample[ext]
            group[f"{k}.jpg"] = sample["jpg"]
        if group is not None:
            yield group


def keyed_index(seed: int, key: str, n: int) -> int:
    """A seeded choice among ``n`` that depends only on (seed, sample key): the same photo
    whatever the worker count or the order the samples arrive in."""
    digest = hashlib.sha256(f"{seed}/pick/{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % n


class pick_image:
    """One photo per recipe: a random one (train) or the first (eval).

    ``mode`` overrides that default: ``"first"``, or ``"random"`` (train: a new draw every
    epoch; eval: a fixed, seeded draw per recipe, :func:`keyed_index`)."""

    def __init__(self, *, train: bool, seed: int, epoch: SharedEpoch, rank: int, mode: str | None = None):
        if mode not in (None, "first", "random"):
            raise ValueError(f"image pick must be 'first' or 'random', not {mode!r}")
        self.train, self.seed, self.epoch, self.rank = train, seed, epoch, rank
        self.mode = mode or ("random" if train else "first")

    def __call__(self, src: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        per_epoch = self.mode == "random" and self.train
        rng = stage_rng(self.seed, self.epoch.get(), self.rank, "pick") if per_epoch else None
        keyed = self.mode == "random" and not self.train
        for sample in src:
            keys = image_keys(sample)
            if not keys or "json" not in sample:
                raise ValueError(
                    f"{sample.get('__url__')}: sample {sample.get('__key__')!r} lacks "
                    f"{'a photo' if not keys else 'its .json'} (see the shard format in docs/artefacts.md)"
                )
            if rng is not None:
                key = keys[rng.randrange(len(keys))]
            else:
                key = keys[keyed_index(self.seed, sample["__key__"], len(keys))] if keyed else keys[0]
            cls = sample.get("cls")
            yield {
                "id": sample["__key__"],
                "json": sample["json"],
                "class_id": int(cls) if cls is not None else int(json.loads(sample["json"]).get("class_id", 0)),
                "image": sample[key],
                "image_index": int(key[:-4]),
            }


class batches:
    """Lists of ``batch_size`` samples; a last shorter list only with ``partial``."""

    def __init__(self, batch_size: int, *, partial: bool):
        self.batch_size, self.partial = int(batch_size), partial

    def __call__(self, src: Iterator[Any]) -> Iterator[list[Any]]:
        batch: list[Any] = []
        for item in src:
            batch.append(item)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch and self.partial:
            yield batch


class class_aware_batches:
    """AdaMine-style batches from a stream: ``background`` (default half) of each batch has
    class 0, the rest comes from labelled classes with at least ``min_per_class`` (2) samples
    each, so every labelled item has a same-class positive.

    Streaming approximation of AdaMine's class-balanced sampler: samples wait in a buffer of
    at most ``buffer_size``; a batch is emitted as soon as the buffer can meet the composition
    (classes taken oldest-waiting first, as many of each as fit, never leaving a group of one).
    When the buffer is full and still cannot (too few labelled pairs or too little background
    in the stream), the oldest samples complete the batch and it is marked ``balanced=False``;
    so are the batches that flush the buffer at the end of the epoch (a last batch shorter
    than ``batch_size`` is dropped unless ``partial``). Each sample is still used once.
    """

    def __init__(self, batch_size: int, *, background: float = 0.5, min_per_class: int = 2,
                 buffer_size: int | None = None, partial: bool = False, seed: int, epoch: SharedEpoch, rank: int):
        self.batch_size = int(batch_size)
        self.n_background = int(self.batch_size * background)
        self.min_per_class = max(2, int(min_per_class))
        self.buffer_size = max(int(buffer_size or 16 * self.batch_size), 2 * self.batch_size)
        self.partial, self.seed, self.epoch, self.rank = partial, seed, epoch, rank

    def _compose(self, bg: deque, groups: dict[int, deque]) -> list[tuple[int, int]] | None:
        """(class, count) picks filling the labelled slots exactly, or None."""
        if len(bg) < self.n_background:
            return None
        need, picks = self.batch_size - self.n_background, []
        if need == 0:
            return picks
        m = self.min_per_class
        for c in sorted((c for c, q in groups.items() if len(q) >= m), key=lambda c: groups[c][0][0]):
            k = min(len(groups[c]), need)
            if 0 < need - k < m:  # the rest could not form a group: leave room for one
                k = need - m
                if k < m:
                    continue
            picks.append((c, k))
            need -= k
            if need == 0:
                return picks
        return None

    def __call__(self, src: Iterator[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
        rng = stage_rng(self.seed, self.epoch.get(), self.rank, "class-aware")
        bg: deque = deque()
        groups: dict[int, deque] = {}
        state = {"seq": 0, "size": 0, "pairable": 0}  # pairable: samples in groups of >= min_per_class
        need, m = self.batch_size - self.n_background, self.min_per_class

        def emit(picks) -> list:
            if picks is not None:
                batch = [bg.popleft() for _ in range(self.n_background)]
                for c, k in picks:
                    batch.extend(groups[c].popleft() for _ in range(k))
            else:  # the oldest waiting samples, whatever their class
                batch = []
                while len(batch) < self.batch_size and state["size"] > len(batch):
                    oldest = min([q for q in (bg, *groups.values()) if q], key=lambda q: q[0][0])
                    batch.append(oldest.popleft())
            for c in [c for c, q in groups.items() if not q]:
                del groups[c]
            state["size"] -= len(batch)
            state["pairable"] = sum(len(q) for q in groups.values() if len(q) >= m)
            return self._finish(batch, picks is not None, rng)

        for item in src:
            c = item["class_id"]
            queue = bg if c == 0 else groups.setdefault(c, deque())
            queue.append((state["seq"], item))
            state["seq"] += 1
            state["size"] += 1
            if c != 0:
                state["pairable"] += m if len(queue) == m else (1 if len(queue) > m else 0)
            while state["size"] >= self.batch_size:
                ready = len(bg) >= self.n_background and state["pairable"] >= need
                picks = self._compose(bg, groups) if ready else None
                if picks is None and state["size"] < self.buffer_size:
                    break
                yield emit(picks)
        while state["size"] >= self.batch_size or (self.partial and state["size"] > 0):
            yield emit(self._compose(bg, groups) if state["size"] >= self.batch_size else None)

    @staticmethod
    def _finish(batch: list, balanced: bool, rng) -> list[dict[str, Any]]:
        items = [item for _, item in batch]
        rng.shuffle(items)
        for item in items:
            item["_balanced"] = balanced
        return items


def empty_batch(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised tensor; inside a DataLoader worker it is allocated in shared memory
    (as ``default_collate`` does), so handing it to the main process copies nothing."""
    from torch.utils.data import get_worker_info

    return torch.empty(shape, dtype=dtype) if get_worker_info() is None else shared_empty(shape, dtype)


def small_as_numpy(batch: dict[str, Any]) -> dict[str, Any]:
    """In a worker: every tensor but the images as a numpy view. A DataLoader worker hands
    each tensor to the main process as a shared-memory file descriptor, at about half a
    millisecond of worker CPU per tensor (docs/benchmarks.md); arrays of a few kilobytes are
    cheaper pickled by value. :func:`as_torch` turns them back, in the main process."""
    out = {k: (v.numpy() if isinstance(v, torch.Tensor) and k != "images" else v) for k, v in batch.items()}
    out["recipes"] = {k: v.numpy() for k, v in batch["recipes"].items()}
    return out


def as_torch(batch: dict[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`small_as_numpy` (zero-copy)."""
    if not isinstance(batch.get("class_ids"), np.ndarray):
        return batch
    out = {k: (torch.from_numpy(v) if isinstance(v, np.ndarray) else v) for k, v in batch.items()}
    out["recipes"] = {k: torch.from_numpy(v) for k, v in batch["recipes"].items()}
    return out


class decode_batch:
    """List of picked samples -> the training batch (decode, augment, tokenise, collate).

    Recipe token ids come from :func:`~recipekit.pipeline.vocab.tokenise_sample` on each
    sample's JSON, or, when ``store`` is given, from the LMDB store (same ids, read instead of
    computed). ``recipe_collate`` replaces ``collate_recipes`` (same input and output).
    ``buffers``: in DataLoader workers, write the images into recycled shared-memory slots
    (:class:`~recipekit.loaders.buffers.BatchBuffers`) instead of a new segment per batch."""

    def __init__(self, *, vocab: Any, decoder: ImageDecoder, mean, std, normalize: bool = True,
                 limits: tuple[int, int, int] = DEFAULT_LIMITS.astuple(), store: Any = None, recipe_collate: Any = None,
                 buffers: BatchBuffers | None = None, seed: int, epoch: SharedEpoch, rank: int):
        self.vocab, self.decoder, self.normalize, self.limits, self.store = vocab, decoder, normalize, limits, store
        if recipe_collate is None:
            from recipekit.embedders.text import (
                collate_recipes,  # before the workers fork
            )

            recipe_collate = collate_recipes
        self.recipe_collate = recipe_collate
        self.mean = torch.tensor(mean or IMAGENET_MEAN, dtype=torch.float32).view(3, 1, 1) * 255.0
        self.inv_std = 1.0 / (torch.tensor(std or IMAGENET_STD, dtype=torch.float32).view(3, 1, 1) * 255.0)
        self.seed, self.epoch, self.rank, self.buffers = seed, epoch, rank, buffers

    def tokens(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for it in items:
            rec = None
            if self.store is not None:
                try:
                    rec = self.store[it["id"]]
                except KeyError:  # a recipe the store does not have: tokenise its JSON
                    pass
            out.append(rec if rec is not None else tokenise_sample(json.loads(it["json"]), self.vocab, *self.limits))
        return out

    def __call__(self, src: Iterator[list[dict[str, Any]]]) -> Iterator[dict[str, Any]]:
        from torch.utils.data import get_worker_info

        collate, worker = self.recipe_collate, get_worker_info()
        buffers = self.buffers if worker is not None else None  # slots are shared memory between processes
        rng = stage_rng(self.seed, self.epoch.get(), self.rank, "augment") if self.decoder.train else None
        size = self.decoder.size
        round_ = buffers.current_round() if buffers else 0  # once, as this worker's epoch begins
        for items in src:
            shape, dtype = (len(items), 3, size, size), torch.float32 if self.normalize else torch.uint8
            images, slot = buffers.acquire(worker.id, shape, dtype, round_) if buffers else (empty_batch(shape, dtype), None)
            for k, it in enumerate(items):
                image = images[k]
                image.copy_(self.decoder(it["image"], rng))  # uint8 -> float32 in the copy
                if self.normalize:
                    image.sub_(self.mean).mul_(self.inv_std)
            batch = {
                "images": buffers.outgoing(images, slot) if buffers else images,
                "recipes": collate(self.tokens(items)),
                "class_ids": torch.tensor([it["class_id"] for it in items], dtype=torch.long),
                "image_index": torch.tensor([it["image_index"] for it in items], dtype=torch.long),
                "ids": [it["id"] for it in items],
            }
            if "_balanced" in items[0]:
                batch["balanced"] = all(it["_balanced"] for it in items)
            if slot is not None:
                batch[SLOT_KEY] = slot
            yield small_as_numpy(batch) if worker is not None else batch
